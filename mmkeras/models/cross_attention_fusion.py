"""`CrossAttentionFusion`: text and image tokens attend to each other."""

import keras
from keras import ops

from mmkeras.models.masked_pooling import masked_mean, token_weights


@keras.saving.register_keras_serializable(package="mmkeras")
class CrossAttentionFusion(keras.layers.Layer):
    """Bidirectional cross-attention between text and image tokens.

    Both token sequences are projected to `fusion_dim`; text tokens attend to
    image tokens and image tokens attend to text tokens (each with a residual
    connection and layer normalisation); each stream is mean-pooled over its
    real tokens and the two pooled vectors are concatenated.

    Masking is exact: padded text positions are never attended to nor pooled,
    and a missing modality (its `modality_mask` column is 0) contributes
    nothing at all. The output then does not depend on that modality's tokens.

    All fusion layers share one call signature:
    `layer(text_tokens, text_mask, image_tokens, modality_mask, training=None)`.

    Args:
        fusion_dim: width of the projected tokens; the output has
            `2 * fusion_dim` features.
        num_heads: attention heads (`fusion_dim` is split among them).
        dropout: dropout rate on the attention weights and attended values.
        **kwargs: standard `keras.layers.Layer` arguments (`name`, `dtype`).

    Call arguments:
        text_tokens: [B, Lt, Dt] text backbone sequence output.
        text_mask: [B, Lt] padding mask (1 = real token).
        image_tokens: [B, Li, Di] image backbone tokens.
        modality_mask: [B, 2] text present (column 0), image present (column 1).
        training: whether dropout is active.

    Returns:
        [B, 2 * fusion_dim] fused features.

    Example:
    >>> import numpy as np
    >>> fusion = CrossAttentionFusion(fusion_dim=16, num_heads=2, dropout=0.0)
    >>> fused = fusion(np.ones((2, 5, 8), "float32"), np.ones((2, 5), "int32"),
    ...                np.ones((2, 4, 12), "float32"), np.ones((2, 2), "float32"))
    >>> tuple(fused.shape)
    (2, 32)
    """

    def __init__(self, fusion_dim, num_heads, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        if fusion_dim % num_heads:
            raise ValueError(f"fusion_dim ({fusion_dim}) must be divisible by num_heads ({num_heads})")
        self.fusion_dim = fusion_dim
        self.num_heads = num_heads
        self.dropout = dropout
        policy = self.dtype_policy
        self.text_projection = keras.layers.Dense(fusion_dim, dtype=policy, name="text_projection")
        self.image_projection = keras.layers.Dense(fusion_dim, dtype=policy, name="image_projection")
        attention = dict(num_heads=num_heads, key_dim=fusion_dim // num_heads, dropout=dropout, dtype=policy)
        self.text_to_image = keras.layers.MultiHeadAttention(**attention, name="text_to_image_attention")
        self.image_to_text = keras.layers.MultiHeadAttention(**attention, name="image_to_text_attention")
        self.text_norm = keras.layers.LayerNormalization(dtype=policy, name="text_norm")
        self.image_norm = keras.layers.LayerNormalization(dtype=policy, name="image_norm")
        self.attended_dropout = keras.layers.Dropout(dropout, dtype=policy, name="attended_dropout")

    def build(self, text_tokens_shape, text_mask_shape, image_tokens_shape, modality_mask_shape):
        self.text_projection.build(text_tokens_shape)
        self.image_projection.build(image_tokens_shape)
        projected_text = (*text_tokens_shape[:-1], self.fusion_dim)
        projected_image = (*image_tokens_shape[:-1], self.fusion_dim)
        self.text_to_image.build(projected_text, projected_image)
        self.image_to_text.build(projected_image, projected_text)
        self.text_norm.build(projected_text)
        self.image_norm.build(projected_image)

    def call(self, text_tokens, text_mask, image_tokens, modality_mask, training=None):
        text_weights, image_weights = token_weights(text_mask, image_tokens, modality_mask, self.compute_dtype)
        text = self.text_projection(text_tokens)
        image = self.image_projection(image_tokens)
        text_stream = self._attend(self.text_to_image, self.text_norm, text, image, image_weights, training)
        image_stream = self._attend(self.image_to_text, self.image_norm, image, text, text_weights, training)
        return ops.concatenate([masked_mean(text_stream, text_weights), masked_mean(image_stream, image_weights)], -1)

    def _attend(self, attention, norm, queries, keys, key_weights, training):
        """`norm(queries + attention(queries -> keys))`, attending only to weighted keys."""
        attention_mask = ops.broadcast_to(
            # A comparison, not a cast to bool: in an int8 model the cast needs the weights dequantized (a float op).
            ops.greater(key_weights[:, None, :], 0.5),
            (ops.shape(queries)[0], ops.shape(queries)[1], ops.shape(keys)[1]),
        )
        attended = attention(queries, keys, attention_mask=attention_mask, training=training)
        # With every key masked, the softmax is uniform over the masked keys,
        # so the result would still depend on them: zero it explicitly.
        any_key = ops.max(key_weights, axis=1)[:, None, None]
        attended = self.attended_dropout(attended * any_key, training=training)
        return norm(queries + attended)

    def get_config(self):
        config = super().get_config()
        config.update({"fusion_dim": self.fusion_dim, "num_heads": self.num_heads, "dropout": self.dropout})
        return config
