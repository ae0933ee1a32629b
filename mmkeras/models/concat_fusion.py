"""`ConcatFusion`: pool each modality, project it, concatenate."""

import keras
from keras import ops

from mmkeras.models.masked_pooling import masked_mean, token_weights


@keras.saving.register_keras_serializable(package="mmkeras")
class ConcatFusion(keras.layers.Layer):
    """Late fusion by concatenating the pooled, projected modalities.

    Each token sequence is mean-pooled over its real tokens and projected to
    `fusion_dim`; a missing modality's projection is zeroed (the projection
    bias would otherwise leak a constant), and the two vectors are
    concatenated. The cheapest fusion: no attention between the modalities.

    All fusion layers share one call signature:
    `layer(text_tokens, text_mask, image_tokens, modality_mask, training=None)`
    (see `CrossAttentionFusion` for the shapes).

    Args:
        fusion_dim: width of each projected modality; the output has
            `2 * fusion_dim` features.
        dropout: dropout rate on the projected features.
        **kwargs: standard `keras.layers.Layer` arguments (`name`, `dtype`).

    Returns:
        [B, 2 * fusion_dim] fused features.

    Example:
    >>> import numpy as np
    >>> fusion = ConcatFusion(fusion_dim=16, dropout=0.0)
    >>> fused = fusion(np.ones((2, 5, 8), "float32"), np.ones((2, 5), "int32"),
    ...                np.ones((2, 4, 12), "float32"), np.ones((2, 2), "float32"))
    >>> tuple(fused.shape)
    (2, 32)
    """

    def __init__(self, fusion_dim, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.fusion_dim = fusion_dim
        self.dropout = dropout
        policy = self.dtype_policy
        self.text_projection = keras.layers.Dense(fusion_dim, dtype=policy, name="text_projection")
        self.image_projection = keras.layers.Dense(fusion_dim, dtype=policy, name="image_projection")
        self.projected_dropout = keras.layers.Dropout(dropout, dtype=policy, name="projected_dropout")

    def build(self, text_tokens_shape, text_mask_shape, image_tokens_shape, modality_mask_shape):
        self.text_projection.build((text_tokens_shape[0], text_tokens_shape[-1]))
        self.image_projection.build((image_tokens_shape[0], image_tokens_shape[-1]))

    def call(self, text_tokens, text_mask, image_tokens, modality_mask, training=None):
        text_weights, image_weights = token_weights(text_mask, image_tokens, modality_mask, self.compute_dtype)
        presence = ops.cast(modality_mask, self.compute_dtype)
        text = self.text_projection(masked_mean(text_tokens, text_weights)) * presence[:, 0:1]
        image = self.image_projection(masked_mean(image_tokens, image_weights)) * presence[:, 1:2]
        return self.projected_dropout(ops.concatenate([text, image], axis=-1), training=training)

    def get_config(self):
        config = super().get_config()
        config.update({"fusion_dim": self.fusion_dim, "dropout": self.dropout})
        return config
