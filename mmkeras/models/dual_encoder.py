"""`build_dual_encoder`: a text tower and an image tower projected into one embedding space (CLIP-style).

```
token_ids, padding_mask -> text_backbone -> masked mean -> text_projection -> L2 -> text_embedding
image (0..255) -> image_normalization -> vision_backbone -> mean -> image_projection -> L2 -> image_embedding
text_embedding -> logit_scale (the learnable temperature, [B, 1])
```

Trained by `mmkeras align` with `ContrastiveLoss`, it scores how well a text
fits an image by the cosine of their embeddings. Its layers are named as in
`build_model` (`text_backbone`, `vision_backbone`, `image_normalization`), so
a classifier can start from them (`train --init-from`), and the two towers
can be cut out of it (`encoders`) to embed texts and images separately.

Example:
>>> model, preprocessor = build_dual_encoder(texts=["a red circle"], seed=0)
>>> inputs = preprocessor(["a red circle"], [None])
>>> outputs = model({name: inputs[name] for name in ENCODER_INPUTS})
>>> tuple(outputs["text_embedding"].shape), tuple(outputs["logit_scale"].shape)
((1, 64), (1, 1))
"""

import keras

from mmkeras.models.builder import seeded_weights
from mmkeras.models.embedding_heads import embed_image_tokens, embed_text_tokens
from mmkeras.models.logit_scale import LogitScale
from mmkeras.models.text_backbones import load_text_backbone, text_sequence
from mmkeras.models.vision_backbones import load_vision_backbone, vision_tokens
from mmkeras.preprocessing.multimodal_preprocessor import MultimodalPreprocessor
from mmkeras.runs import DUAL_ENCODER_NAME

# The model inputs of a dual encoder: the contract's four without `modality_mask` (a pair has both).
ENCODER_INPUTS = ("token_ids", "padding_mask", "image")
TEXT_INPUTS = ("token_ids", "padding_mask")
TEXT_EMBEDDING, IMAGE_EMBEDDING, LOGIT_SCALE = "text_embedding", "image_embedding", "logit_scale"


def build_dual_encoder(
    text_backbone="tiny",
    vision_backbone="tiny",
    *,
    sequence_length=32,
    embedding_dim=64,
    texts=None,
    seed=None,
    image_size=None,
):
    """Build a dual encoder and the preprocessor that feeds it.

    Args:
        text_backbone: text SPEC, as for `build_model`.
        vision_backbone: vision SPEC, as for `build_model`.
        sequence_length: token ids per text, `[CLS]` and `[SEP]` included.
        embedding_dim: width of the shared embedding space.
        texts: training texts; the `tiny` text backbone learns its vocabulary
            from them.
        seed: makes the random weights reproducible (see `build_model`).
        image_size: side of the square images; `None` keeps the vision
            backbone's own size.

    Returns:
        `(model, preprocessor)`: a `keras.Model` from the `ENCODER_INPUTS` to
        a dict of `text_embedding` and `image_embedding` (L2-normalised,
        float32 [B, embedding_dim]) and `logit_scale` [B, 1], and its
        `MultimodalPreprocessor`.
    """
    with seeded_weights(seed):
        text = load_text_backbone(text_backbone, sequence_length=sequence_length, texts=texts)
        vision = load_vision_backbone(vision_backbone, image_size)
        sequence_length = text.tokenizer.sequence_length  # `None` asked for the checkpoint's own limit
        inputs = {
            "token_ids": keras.Input((sequence_length,), dtype="int32", name="token_ids"),
            "padding_mask": keras.Input((sequence_length,), dtype="int32", name="padding_mask"),
            "image": keras.Input((*vision.image_size, 3), dtype="float32", name="image"),
        }
        text_tokens = text_sequence(text.backbone, inputs["token_ids"], inputs["padding_mask"])
        pixels = keras.layers.Rescaling(vision.scale, vision.offset, name="image_normalization")(inputs["image"])
        image_tokens = vision_tokens(vision.backbone(pixels))
        text_embedding = embed_text_tokens(text_tokens, inputs["padding_mask"], embedding_dim)
        image_embedding = embed_image_tokens(image_tokens, embedding_dim)
        outputs = {
            TEXT_EMBEDDING: text_embedding,
            IMAGE_EMBEDDING: image_embedding,
            LOGIT_SCALE: LogitScale(dtype="float32", name=LOGIT_SCALE)(text_embedding),
        }
        model = keras.Model(inputs, outputs, name=DUAL_ENCODER_NAME)
    return model, MultimodalPreprocessor(text.tokenizer, vision.image_size, vision.resample, crop_pct=vision.crop_pct)


def encoders(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """`(text encoder, image encoder)`: the two towers of a dual encoder as models of their own inputs.

    They share the dual encoder's layers (and so its weights); the text
    encoder maps `token_ids` and `padding_mask` to `text_embedding`, the
    image encoder `image` (0..255) to `image_embedding`.

    Example:
    >>> text_encoder, image_encoder = encoders(model)  # doctest: +SKIP
    >>> text_encoder({"token_ids": ids, "padding_mask": mask})  # doctest: +SKIP
    """
    text_inputs = {name: model.input[name] for name in TEXT_INPUTS}
    text_encoder = keras.Model(text_inputs, model.output[TEXT_EMBEDDING], name="text_encoder")
    image_encoder = keras.Model(model.input["image"], model.output[IMAGE_EMBEDDING], name="image_encoder")
    return text_encoder, image_encoder


def is_dual_encoder(model: keras.Model) -> bool:
    return isinstance(model.output, dict) and TEXT_EMBEDDING in model.output
