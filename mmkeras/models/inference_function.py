"""`inference_function`: a Keras model's inference call, compiled once for batches of any size.

Keras' `predict_on_batch` compiles its step for the first batch's shapes and
again, more generally, for the first batch of another size (an evaluation's
last chunk, a feature cache's last batch): a second trace of the whole
forward pass, 2.6 s of EfficientNet-Lite0's at 224 on a 2-core AMD EPYC.
This traces once, for the model's own input specs (batch dimension `None`),
before the first batch (docs/design.md#one-trace-for-every-batch-size).

Example:
>>> predict = inference_function(model)          # doctest: +SKIP
>>> logits = predict({"token_ids": ..., "image": ...})  # doctest: +SKIP
"""

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf


def inference_function(model: keras.Model) -> Callable:
    """`model(inputs, training=False)` with numpy outputs, compiled once for any batch size.

    Each call of this function compiles anew (a fresh `tf.function`), so a
    trace made in another state of the model (e.g. before QAT's quantizers
    observe) is never reused.

    Args:
        model: a functional Keras model; its `input` structure (a dict of
            named inputs, a list, or one input) is the structure to pass.

    Returns:
        A function of the model's inputs (numpy arrays or tensors, cast to
        the inputs' dtypes as Keras does; extra dict keys are ignored).
    """
    specs = keras.tree.map_structure(lambda tensor: tf.TensorSpec(tensor.shape, tensor.dtype), model.input)
    compiled = tf.function(lambda inputs: model(inputs, training=False))
    compiled.get_concrete_function(specs)

    def cast(inputs):
        if isinstance(specs, dict):
            inputs = {name: inputs[name] for name in specs}
        return keras.tree.map_structure(lambda value, spec: tf.cast(value, spec.dtype), inputs, specs)

    return lambda inputs: keras.tree.map_structure(np.asarray, compiled(cast(inputs)))
