"""Masking helpers shared by the fusion layers.

A fusion layer sees four tensors: the text backbone's token sequence, its
padding mask, the vision backbone's token sequence, and the per-example
`modality_mask` (column 0 = text present, column 1 = image present). These
helpers turn the masks into per-token weights (1 = a real token of a present
modality, 0 = padding or a missing modality) and pool token sequences with
those weights, so a padded position or a missing modality contributes exactly
nothing to a fused vector.

Example:
>>> import numpy as np
>>> text_weights, image_weights = token_weights(
...     np.array([[1, 1, 0]]), np.zeros((1, 4, 8)), np.array([[1.0, 0.0]]), "float32")
>>> text_weights.numpy().tolist(), image_weights.numpy().tolist()
([[1.0, 1.0, 0.0]], [[0.0, 0.0, 0.0, 0.0]])
>>> masked_mean(np.ones((1, 3, 2), "float32"), text_weights).numpy().tolist()
[[1.0, 1.0]]
"""

from keras import ops


def token_weights(text_mask, image_tokens, modality_mask, dtype):
    """Per-token weights of the text and image sequences.

    Args:
        text_mask: [B, Lt] padding mask of the text tokens (1 = real token).
        image_tokens: [B, Li, Di] image tokens (only their shape is used:
            every image token of a present image is real).
        modality_mask: [B, 2] presence of text (column 0) and image (column 1).
        dtype: dtype of the returned weights (the caller's compute dtype).

    Returns:
        `(text_weights [B, Lt], image_weights [B, Li])`, 0/1 in `dtype`.
    """
    modality_mask = ops.cast(modality_mask, dtype)
    # A lookup in a [0, 1] table rather than a cast of the int32 mask to float (a float op in an integer-only
    # export, docs/design.md#integer-only-export-end-to-end) or a comparison (integer arithmetic on an input
    # that the int16x8 calibrator cannot take, docs/design.md#int16x8-export): a GATHER converts in every mode.
    real_token = ops.take(ops.convert_to_tensor([0.0, 1.0]), ops.cast(text_mask, "int32"), axis=0)
    text_weights = ops.cast(real_token, dtype) * modality_mask[:, 0:1]
    image_weights = ops.ones_like(image_tokens[:, :, 0], dtype=dtype) * modality_mask[:, 1:2]
    return text_weights, image_weights


def masked_mean(tokens, weights):
    """Mean of `tokens` [B, L, D] over the positions whose weight [B, L] is 1.

    A sequence without any weighted position pools to exactly zero (not NaN),
    which is how a missing modality contributes nothing.

    Args:
        tokens: [B, L, D] token features.
        weights: [B, L] 0/1 weights in the dtype of `tokens`.

    Returns:
        [B, D] pooled features.
    """
    # Multiply rather than select so the weights stay differentiable and a
    # zero weight removes the token's value from the mean's numerator exactly.
    # Means rather than sums (the same ratio): LiteRT's int16 SUM kernel returned wrong totals in an int16x8
    # export (a count of 8 came out 1), its int16 MEAN is right (docs/design.md#int16x8-export).
    total = ops.mean(tokens * weights[:, :, None], axis=1)
    count = ops.mean(weights, axis=1, keepdims=True)
    return total / ops.maximum(count, 1.0 / weights.shape[1])
