"""`GatedFusion`: a per-example weighted sum of the present modalities."""

import keras
from keras import ops

from mmkeras.models.concat_fusion import ConcatFusion


@keras.saving.register_keras_serializable(package="mmkeras")
class GatedFusion(keras.layers.Layer):
    """Gated fusion: learn, per example, how much to trust each modality.

    Each token sequence is mean-pooled over its real tokens and projected to
    `fusion_dim` (a missing modality's projection is zeroed), as in
    `ConcatFusion`. A gate reads
    both projections and gives one weight per modality, a softmax over the
    present modalities only; the output is the weighted sum. With one
    modality missing its weight is exactly 0 and the other's is 1; with both
    missing the output is zero.

    All fusion layers share one call signature:
    `layer(text_tokens, text_mask, image_tokens, modality_mask, training=None)`
    (see `CrossAttentionFusion` for the shapes).

    Args:
        fusion_dim: width of the projections and of the output.
        **kwargs: standard `keras.layers.Layer` arguments (`name`, `dtype`).

    Returns:
        [B, fusion_dim] fused features.

    Example:
    >>> import numpy as np
    >>> fusion = GatedFusion(fusion_dim=16)
    >>> fused = fusion(np.ones((2, 5, 8), "float32"), np.ones((2, 5), "int32"),
    ...                np.ones((2, 4, 12), "float32"), np.ones((2, 2), "float32"))
    >>> tuple(fused.shape)
    (2, 16)
    """

    def __init__(self, fusion_dim, **kwargs):
        super().__init__(**kwargs)
        self.fusion_dim = fusion_dim
        policy = self.dtype_policy
        self.projections = ConcatFusion(fusion_dim, dropout=0.0, dtype=policy, name="projections")
        self.gate = keras.layers.Dense(2, dtype=policy, name="gate")

    def build(self, text_tokens_shape, text_mask_shape, image_tokens_shape, modality_mask_shape):
        self.projections.build(text_tokens_shape, text_mask_shape, image_tokens_shape, modality_mask_shape)
        self.gate.build((text_tokens_shape[0], 2 * self.fusion_dim))

    def call(self, text_tokens, text_mask, image_tokens, modality_mask, training=None):
        projections = self.projections(text_tokens, text_mask, image_tokens, modality_mask, training=training)
        text, image = projections[:, : self.fusion_dim], projections[:, self.fusion_dim :]
        presence = ops.cast(modality_mask, self.compute_dtype)
        gate_logits = self.gate(projections)
        # Softmax over the present modalities only; multiplying by presence
        # afterwards makes an all-missing row give zero weights, not 1/2 each.
        gate_weights = ops.softmax(gate_logits + (1.0 - presence) * -1e4, axis=-1) * presence
        return gate_weights[:, 0:1] * text + gate_weights[:, 1:2] * image

    def get_config(self):
        config = super().get_config()
        config.update({"fusion_dim": self.fusion_dim})
        return config
