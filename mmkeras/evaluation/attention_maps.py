"""`cross_attention_maps`: where a cross-attention run's text tokens look in the image.

Reads the `CrossAttentionFusion` layer's own attention: the text-to-image
attention weights, averaged over heads and over the real text tokens, give
one weight per image token, laid out on the backbone's patch grid; the
image-to-text weights, averaged over heads and image tokens, give one weight
per text token. Needs the Keras model (a run folder), so TensorFlow.

Example:
>>> maps = cross_attention_maps(load_run("runs/demo"), ["a calm card"], ["photo.png"])  # doctest: +SKIP
>>> maps["image"].shape, maps["tokens"][0][:3]  # doctest: +SKIP
((1, 2, 2), [('[CLS]', 0.21), ('a', 0.1), ('calm', 0.52)])
"""

import math

import keras
import numpy as np
from keras import ops

from mmkeras.models.cross_attention_fusion import CrossAttentionFusion

FUSION_LAYER = "fusion"


def has_cross_attention(model: keras.Model) -> bool:
    """Whether the model's fusion is a `CrossAttentionFusion` (the only one with attention to show)."""
    return isinstance(model.get_layer(FUSION_LAYER), CrossAttentionFusion)


def cross_attention_maps(run, texts: list, images: list) -> dict:
    """Text-to-image attention on the patch grid, and the attention each text token receives.

    Args:
        run: a loaded run (`mmkeras.quantization.run_loading.load_run`) with cross-attention fusion.
        texts: texts (`None` for missing).
        images: images (paths or bytes; `None` for missing).

    Returns:
        `{"image": float [B, rows, columns] (each map sums to 1, zeros for a
        missing text or image), "tokens": [[(token, weight), ...] per row]}`.
    """
    fusion = run.model.get_layer(FUSION_LAYER)
    inputs = run.preprocessor(texts, images)
    # The fusion layer's inputs (text tokens, text mask, image tokens, modality mask), from the model itself.
    text_tokens, text_mask, image_tokens, modality_mask = keras.Model(run.model.inputs, fusion.input)(inputs)
    text = fusion.text_projection(text_tokens)
    image = fusion.image_projection(image_tokens)
    text_present = ops.cast(text_mask, "float32") * modality_mask[:, :1]
    image_present = ops.ones(ops.shape(image)[:2]) * modality_mask[:, 1:]
    _, text_to_image = fusion.text_to_image(text, image, return_attention_scores=True)
    _, image_to_text = fusion.image_to_text(
        image, text, attention_mask=ops.cast(text_present[:, None, :], "bool"), return_attention_scores=True
    )
    # [B, heads, queries, keys] -> mean over heads and over the real queries -> [B, keys]
    image_weights = weighted_query_mean(np.asarray(text_to_image), np.asarray(text_present))
    image_weights = image_weights * np.asarray(modality_mask)[:, 1:]
    token_weights = weighted_query_mean(np.asarray(image_to_text), np.asarray(image_present))
    vocabulary = run.preprocessor.tokenizer.vocabulary
    tokens = [
        [(vocabulary[int(token)], float(weight)) for token, weight, real in zip(ids, weights, mask) if real]
        for ids, weights, mask in zip(inputs["token_ids"], token_weights, np.asarray(text_present))
    ]
    return {"image": patch_grid(image_weights), "tokens": tokens}


def weighted_query_mean(scores: np.ndarray, query_weights: np.ndarray) -> np.ndarray:
    """[B, heads, Q, K] attention -> [B, K]: averaged over heads and the queries whose weight is 1."""
    per_query = scores.mean(axis=1)
    total = np.maximum(query_weights.sum(axis=1, keepdims=True), 1e-9)
    return (per_query * query_weights[:, :, None]).sum(axis=1) / total


def patch_grid(weights: np.ndarray) -> np.ndarray:
    """[B, N] image-token weights -> [B, rows, columns] (square grids; a leading class token is dropped)."""
    count = weights.shape[1]
    side = math.isqrt(count)
    if side * side != count and math.isqrt(count - 1) ** 2 == count - 1:
        weights, side = weights[:, 1:], math.isqrt(count - 1)
    elif side * side != count:
        raise ValueError(f"{count} image tokens do not form a square grid")
    return weights.reshape(len(weights), side, side)
