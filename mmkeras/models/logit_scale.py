"""`LogitScale`: the learnable temperature of a contrastive objective."""

import math

import keras
from keras import ops

# CLIP's choices: start at a temperature of 0.07, never scale by more than 100.
INITIAL_TEMPERATURE = 0.07
MAX_SCALE = 100.0


@keras.saving.register_keras_serializable(package="mmkeras")
class LogitScale(keras.layers.Layer):
    """The factor cosine similarities are multiplied by, learned as a log (CLIP's temperature).

    Learning the log keeps the scale positive; it is clipped at `MAX_SCALE`
    because a scale that grows without bound makes training unstable.

    Args:
        initial_temperature: the temperature (1 / scale) to start from.
        **kwargs: standard `keras.layers.Layer` arguments (`name`, `dtype`).

    Returns:
        [B, 1]: the scale, once per row of the input (a graph output a loss
        and an exported model can read).

    Example:
    >>> import numpy as np
    >>> scale = LogitScale(initial_temperature=0.5)
    >>> scale(np.zeros((2, 8), "float32")).numpy().round(4).tolist()
    [[2.0], [2.0]]
    """

    def __init__(self, initial_temperature=INITIAL_TEMPERATURE, **kwargs):
        super().__init__(**kwargs)
        self.initial_temperature = initial_temperature

    def build(self, input_shape):
        self.log_scale = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(-math.log(self.initial_temperature)),
            name="log_scale",
        )

    def call(self, inputs):
        scale = ops.exp(ops.minimum(self.log_scale, math.log(MAX_SCALE)))
        return ops.ones_like(inputs[:, :1]) * ops.cast(scale, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)

    def get_config(self):
        config = super().get_config()
        config.update({"initial_temperature": self.initial_temperature})
        return config
