"""`build_model`: a text backbone and a vision backbone joined by a fusion layer.

The model is a functional Keras model on the four inputs every mmkeras
component shares (`token_ids`, `padding_mask`, `image`, `modality_mask`):

```
token_ids, padding_mask -> text_backbone -> text tokens ----------\
image (0..255) -> image_normalization -> vision_backbone -> tokens -> fusion -> head_dropout -> head -> logits
modality_mask -> [modality_dropout] -------------------------------/
```

The head is the task's (`mmkeras.tasks`, its `head`): `classifier_logits`
(a dense layer, the default), or `match_logits` for `--task match`.

Image normalisation (the preset ImageConverter's `scale` and `offset`) is a
layer inside the model, so the device feeds plain 0..255 RGB pixels.

Example:
>>> model, preprocessor = build_model(num_classes=3, texts=["a red circle"], seed=0)
>>> inputs = preprocessor(["a red circle"], [None])
>>> tuple(model(inputs).shape)
(1, 3)
"""

import contextlib
import dataclasses
import random

import keras

from mmkeras.config import FUSIONS
from mmkeras.errors import UserError
from mmkeras.models.concat_fusion import ConcatFusion
from mmkeras.models.cross_attention_fusion import CrossAttentionFusion
from mmkeras.models.embedding_heads import embed_image_tokens, embed_text_tokens
from mmkeras.models.gated_fusion import GatedFusion
from mmkeras.models.logit_scale import LogitScale
from mmkeras.models.modality_dropout import ModalityDropout
from mmkeras.models.text_backbones import BACKBONE_NAME as TEXT_BACKBONE
from mmkeras.models.text_backbones import BUILTIN_TEXT_BACKBONES, load_text_backbone, text_sequence
from mmkeras.models.vision_backbones import BACKBONE_NAME as VISION_BACKBONE
from mmkeras.models.vision_backbones import BUILTIN_VISION_BACKBONES, load_vision_backbone, vision_tokens
from mmkeras.preprocessing.multimodal_preprocessor import MultimodalPreprocessor

# The backbone layers each `--freeze` choice keeps frozen.
FROZEN_BACKBONES = {
    "none": (),
    "text": (TEXT_BACKBONE,),
    "vision": (VISION_BACKBONE,),
    "both": (TEXT_BACKBONE, VISION_BACKBONE),
}


def build_model(
    text_backbone="tiny",
    vision_backbone="tiny",
    *,
    num_classes,
    fusion="cross-attention",
    sequence_length=None,
    fusion_dim=64,
    num_heads=4,
    dropout=0.1,
    modality_dropout=0.0,
    texts=None,
    seed=None,
    head=None,
    backbones=None,
    image_size=None,
):
    """Build a multimodal classifier and the preprocessor that feeds it.

    Args:
        text_backbone: text SPEC: `tiny`, a keras-hub preset name, a local
            preset folder or a Hugging Face-format folder.
        vision_backbone: vision SPEC: `tiny`, `tiny-vit`, `tiny-mobilenet`, a
            keras-hub preset name, a local preset folder or a Hugging
            Face-format folder.
        num_classes: number of labels (width of the logits).
        fusion: `cross-attention`, `concat` or `gated`.
        sequence_length: token ids per text, special tokens included; `None`
            takes the text backbone's limit, at most 128 (32 for `tiny`).
        fusion_dim: width of the fusion layer.
        num_heads: attention heads of the cross-attention fusion.
        dropout: dropout rate in the fusion and before the logits.
        modality_dropout: probability of hiding the text or the image of a
            training example (`ModalityDropout`); 0 adds no layer.
        texts: training texts; the `tiny` text backbone learns its vocabulary
            from them.
        seed: makes the random weights (and dropout seeds) reproducible
            without touching the caller's global random state; `None` draws
            from that global state.
        head: `HeadInputs` -> float32 logits [B, num_classes]: the task's
            head (`Task.head`); `None` is `classifier_logits`.
        backbones: `(TextBackbone, VisionBackbone)` to build on instead of
            loading the SPECs (an align run's, for `train --init-from`).
        image_size: side of the square images; `None` keeps the vision
            backbone's own size.

    Returns:
        `(model, preprocessor)`: a `keras.Model` mapping the four inputs to
        float32 logits [B, num_classes], and its `MultimodalPreprocessor`.

    Raises:
        UserError: a bad setting or backbone SPEC.
    """
    _check_settings(num_classes, fusion, fusion_dim, num_heads, dropout, modality_dropout)
    with seeded_weights(seed):
        if backbones is None:
            text = load_text_backbone(text_backbone, sequence_length=sequence_length, texts=texts)
            vision = load_vision_backbone(vision_backbone, image_size)
        else:
            text, vision = backbones
        sequence_length = text.tokenizer.sequence_length
        inputs = {
            "token_ids": keras.Input((sequence_length,), dtype="int32", name="token_ids"),
            "padding_mask": keras.Input((sequence_length,), dtype="int32", name="padding_mask"),
            "image": keras.Input((*vision.image_size, 3), dtype="float32", name="image"),
            "modality_mask": keras.Input((2,), dtype="float32", name="modality_mask"),
        }
        text_tokens = text_sequence(text.backbone, inputs["token_ids"], inputs["padding_mask"])
        pixels = keras.layers.Rescaling(vision.scale, vision.offset, name="image_normalization")(inputs["image"])
        image_tokens = vision_tokens(vision.backbone(pixels))
        modality_mask = inputs["modality_mask"]
        if modality_dropout:
            modality_mask = ModalityDropout(modality_dropout, name="modality_dropout")(modality_mask)
        fusion_layer = _fusion_layer(fusion, fusion_dim, num_heads, dropout)
        fused = fusion_layer(text_tokens, inputs["padding_mask"], image_tokens, modality_mask)
        fused = keras.layers.Dropout(dropout, name="head_dropout")(fused)
        head_inputs = HeadInputs(fused, text_tokens, inputs["padding_mask"], image_tokens)
        if head is None:
            logits = classifier_logits(head_inputs, num_classes=num_classes)
        else:
            logits = head(head_inputs)
        model = keras.Model(inputs, logits, name="mmkeras_classifier")
    return model, MultimodalPreprocessor(text.tokenizer, vision.image_size, vision.resample, crop_pct=vision.crop_pct)


@dataclasses.dataclass
class HeadInputs:
    """What a head builds on (symbolic tensors of `build_model`'s graph).

    Args:
        fused: the fused features after `head_dropout`.
        text_tokens: the text backbone's tokens.
        padding_mask: which of them are real.
        image_tokens: the vision backbone's tokens.
    """

    fused: object
    text_tokens: object
    padding_mask: object
    image_tokens: object


def classifier_logits(inputs: HeadInputs, *, num_classes: int):
    """The classifier head: a dense layer on the fused features, float32 logits [B, num_classes]."""
    # float32 logits even under mixed precision: the loss needs them.
    return keras.layers.Dense(num_classes, dtype="float32", name="logits")(inputs.fused)


def match_logits(inputs: HeadInputs, *, embedding_dim: int, match_index: int):
    """The `--task match` head: the classifier's 2 logits plus the modalities' scaled similarity's.

    The logits also see the scaled cosine similarity of the text's and the
    image's embeddings in a shared space (the heads of `build_dual_encoder`,
    named alike so an aligned run's projections and temperature carry over).

    Args:
        inputs: what the head builds on.
        embedding_dim: width of the shared space.
        match_index: which of the 2 logits is the `match` class.
    """
    logits = classifier_logits(inputs, num_classes=2)
    similarity = _similarity_logits(
        inputs.text_tokens, inputs.padding_mask, inputs.image_tokens, embedding_dim, match_index
    )
    return keras.layers.Add(dtype="float32", name="match_logits")([logits, similarity])


def pretrained_backbones(config) -> tuple[str, ...]:
    """Layer names of a run's backbones loaded with pretrained weights.

    A backbone is pretrained unless its SPEC is a built-in random architecture
    and the run does not start from an align run (`init_from`).

    Args:
        config: a `RunConfig` (`text_backbone`, `vision_backbone`, `init_from`).

    Example:
    >>> pretrained_backbones(RunConfig(text_backbone="bert_tiny_en_uncased"))  # doctest: +SKIP
    ('text_backbone',)
    """
    specs = {
        TEXT_BACKBONE: bool(config.init_from) or config.text_backbone not in BUILTIN_TEXT_BACKBONES,
        VISION_BACKBONE: bool(config.init_from) or config.vision_backbone not in BUILTIN_VISION_BACKBONES,
    }
    return tuple(name for name, pretrained in specs.items() if pretrained)


def _similarity_logits(text_tokens, padding_mask, image_tokens, embedding_dim, match_index):
    """Logits [B, 2] from the scaled cosine similarity of the two modalities' embeddings.

    They start as the aligned model's own answer: half the scaled similarity
    for `match`, minus half for `mismatch` (a learned bias sets the
    threshold). A head that had to discover the similarity from a random
    weight learned too slowly, and its noise unlearned the alignment
    (measured on samples/matching: test accuracy 0.49, docs/design.md#alignment-before-matching).
    """
    text_embedding = embed_text_tokens(text_tokens, padding_mask, embedding_dim)
    image_embedding = embed_image_tokens(image_tokens, embedding_dim)
    similarity = keras.layers.Dot(axes=-1, dtype="float32", name="similarity")([text_embedding, image_embedding])
    scale = LogitScale(dtype="float32", name="logit_scale")(similarity)
    scaled = keras.layers.Multiply(dtype="float32", name="scaled_similarity")([similarity, scale])
    direction = [[0.5, -0.5] if match_index == 0 else [-0.5, 0.5]]
    return keras.layers.Dense(
        2, kernel_initializer=keras.initializers.Constant(direction), dtype="float32", name="similarity_logits"
    )(scaled)


def fine_tuned_pretrained_backbones(config, aligned_layers: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Layer names of a run's pretrained backbones whose own weights train.

    Their weights do not train when `--freeze` names them or under
    `--lora-rank` (then only the adapters, which start from zero, train).
    A classifier from an align run also fine-tunes the heads its task
    started from that run (`aligned_layers`).

    Args:
        config: a `RunConfig` (`text_backbone`, `vision_backbone`, `freeze`,
            `lora_rank`).
        aligned_layers: the head layers the run's task starts from an align
            run (`Task.aligned_layers`), fine-tuned at the backbones' rate.

    Example:
    >>> fine_tuned_pretrained_backbones(RunConfig(text_backbone="bert_tiny_en_uncased"))  # doctest: +SKIP
    ('text_backbone',)
    """
    if config.lora_rank:
        return ()
    frozen = FROZEN_BACKBONES[config.freeze]
    backbones = tuple(name for name in pretrained_backbones(config) if name not in frozen)
    return backbones + tuple(aligned_layers)


def _check_settings(num_classes, fusion, fusion_dim, num_heads, dropout, modality_dropout):
    if fusion not in FUSIONS:
        raise UserError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
    if num_classes < 2:
        raise UserError(f"a classifier needs at least 2 classes, got {num_classes}")
    if fusion_dim < 1 or num_heads < 1:
        raise UserError(f"fusion_dim and num_heads must be at least 1, got {fusion_dim} and {num_heads}")
    if fusion == "cross-attention" and fusion_dim % num_heads:
        raise UserError(f"fusion_dim ({fusion_dim}) must be divisible by num_heads ({num_heads})")
    if not 0.0 <= dropout < 1.0:
        raise UserError(f"dropout must be in [0, 1), got {dropout}")
    if not 0.0 <= modality_dropout <= 1.0:
        raise UserError(f"modality_dropout must be in [0, 1], got {modality_dropout}")


def _fusion_layer(fusion, fusion_dim, num_heads, dropout):
    if fusion == "cross-attention":
        return CrossAttentionFusion(fusion_dim, num_heads, dropout, name="fusion")
    if fusion == "concat":
        return ConcatFusion(fusion_dim, dropout, name="fusion")
    return GatedFusion(fusion_dim, name="fusion")


@contextlib.contextmanager
def seeded_weights(seed):
    """Seed the source of Keras' default initializer and dropout seeds, then restore it.

    Keras 3 draws the seed of every unseeded initializer and dropout layer
    from Python's `random` module when the layer is created.
    """
    if seed is None:
        yield
        return
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)
