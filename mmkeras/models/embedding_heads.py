"""The heads that turn backbone tokens into L2-normalised embeddings of the shared text-image space.

The dual encoder of `mmkeras align` and the `match` classifier of
`build_model` build them the same way, with the same layer names, so a
classifier takes the aligned projections over (`train --init-from`).

Example:
>>> tokens = keras.Input((5, 8))
>>> tuple(embed_image_tokens(tokens, 16).shape)
(None, 16)
"""

import keras

# The layers a classifier takes over from an aligned dual encoder (`train --init-from`), besides the backbones.
ALIGNED_LAYERS = ("text_projection", "image_projection", "logit_scale")


def embed_text_tokens(text_tokens, padding_mask, embedding_dim):
    """The text tower's head on symbolic backbone tokens: mean over real tokens, projection, L2 norm."""
    pooled = keras.layers.GlobalAveragePooling1D(name="text_pooling")(text_tokens, mask=padding_mask)
    return _project(pooled, embedding_dim, "text")


def embed_image_tokens(image_tokens, embedding_dim):
    """The image tower's head on symbolic backbone tokens: mean over tokens, projection, L2 norm."""
    pooled = keras.layers.GlobalAveragePooling1D(name="image_pooling")(image_tokens)
    return _project(pooled, embedding_dim, "image")


def _project(pooled, embedding_dim, modality):
    # float32 from here on: cosine similarities times a scale up to 100 need the precision under mixed precision.
    projected = keras.layers.Dense(embedding_dim, use_bias=False, dtype="float32", name=f"{modality}_projection")(
        pooled
    )
    return keras.layers.UnitNormalization(dtype="float32", name=f"{modality}_embedding")(projected)
