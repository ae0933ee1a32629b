"""`ModalityDropout`: hide one modality of random training examples."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="mmkeras")
class ModalityDropout(keras.layers.Layer):
    """Randomly marks the text or the image of a training example as missing.

    With probability `rate`, an example that has both modalities loses one of
    them (text or image, equally likely): its column of the modality mask
    becomes 0. The fusion layers mask a missing modality exactly, so the model
    sees what it will see on a device where that modality is absent, and
    learns not to lean on one modality alone. An example never loses both,
    and one that already misses a modality is left as it is. At inference the
    mask passes through unchanged, so an exported model contains no trace of
    this layer.

    Args:
        rate: probability in [0, 1] of hiding one modality of an example.
        seed: seed of the layer's random draws.
        **kwargs: standard `keras.layers.Layer` arguments (`name`, `dtype`).

    Call arguments:
        modality_mask: [B, 2] float, text present (column 0), image present
            (column 1).
        training: whether to drop (only in training).

    Returns:
        [B, 2] the modality mask with the hidden modalities set to 0.

    Example:
    >>> import numpy as np
    >>> layer = ModalityDropout(rate=1.0, seed=0)
    >>> mask = np.ones((4, 2), "float32")
    >>> np.asarray(layer(mask, training=True)).sum(axis=1).tolist()
    [1.0, 1.0, 1.0, 1.0]
    >>> np.asarray(layer(mask)).tolist() == mask.tolist()
    True
    """

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be in [0, 1], got {rate}")
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    def call(self, modality_mask, training=None):
        if not training or self.rate == 0.0:
            return modality_mask
        draws = keras.random.uniform(ops.shape(modality_mask), seed=self.seed_generator, dtype=modality_mask.dtype)
        both_present = modality_mask[:, :1] * modality_mask[:, 1:]
        hide_one = ops.cast(draws[:, :1] < self.rate, modality_mask.dtype) * both_present
        hide_text = ops.cast(draws[:, 1:] < 0.5, modality_mask.dtype)
        hidden = hide_one * ops.concatenate([hide_text, 1.0 - hide_text], axis=-1)
        return modality_mask * (1.0 - hidden)

    def compute_output_shape(self, modality_mask_shape):
        return modality_mask_shape

    def get_config(self):
        config = super().get_config()
        config.update({"rate": self.rate, "seed": self.seed})
        return config
