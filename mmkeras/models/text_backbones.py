"""Text backbones: a built-in random BERT or keras-hub presets, with their tokenizer.

A text SPEC is one of:
- `tiny`: a random 2-layer BERT (hidden 64) whose WordPiece vocabulary is
  learned from the training texts,
- a keras-hub preset name (downloads from Kaggle, so needs a network),
- a local preset folder (`save_to_preset` output) or a Hugging Face-format
  folder (`config.json` + `model.safetensors` + `vocab.txt`), converted by
  keras-hub.

Texts are always tokenized by mmkeras' `TextTokenizer` (Hugging Face
`tokenizers`), built from the preset's vocabulary and lowercase setting, never
by keras-hub's tokenizer: the device runtime uses the same `TextTokenizer`,
and keras-hub's tokenizer splits some texts differently. Only WordPiece
(BERT-family) vocabularies are supported.

Example:
>>> text = load_text_backbone("tiny", sequence_length=16, texts=["a red circle", "a blue square"])
>>> text.tokenizer.sequence_length, text.pretrained
(16, False)
"""

import contextlib
import dataclasses
from pathlib import Path

import keras
import keras_hub
from keras import ops

from mmkeras.errors import UserError
from mmkeras.preprocessing.text import TextTokenizer

BUILTIN_TEXT_BACKBONES = ("tiny",)
BACKBONE_NAME = "text_backbone"
TINY_VOCABULARY_SIZE = 1000
# The inputs mmkeras can feed; BERT-family backbones with one segment get
# all-zero segment ids.
FED_INPUTS = ("token_ids", "padding_mask", "segment_ids")


@dataclasses.dataclass
class TextBackbone:
    """A text backbone and the tokenizer that feeds it.

    Args:
        backbone: the keras model (named `text_backbone`) taking `token_ids`
            and `padding_mask` (and possibly `segment_ids`); use
            `text_sequence` to call it.
        tokenizer: the `TextTokenizer` producing its token ids.
        pretrained: whether the weights were loaded from a preset.
    """

    backbone: keras.Model
    tokenizer: TextTokenizer
    pretrained: bool


def load_text_backbone(spec: str, *, sequence_length: int, texts=None) -> TextBackbone:
    """Build or load the text backbone named by `spec` and its tokenizer.

    Args:
        spec: `tiny`, a keras-hub preset name, a local preset folder or a
            Hugging Face-format folder.
        sequence_length: token ids per text, `[CLS]` and `[SEP]` included.
        texts: training texts (`None` entries allowed); the `tiny` backbone
            learns its vocabulary from them. Ignored for presets.

    Returns:
        A `TextBackbone`.

    Raises:
        UserError: the spec is unknown, cannot be loaded (e.g. a named preset
            while offline), is not a WordPiece text backbone, or is too short
            for `sequence_length`.
    """
    loaded = _tiny_bert(sequence_length, texts) if spec == "tiny" else _load_preset(spec, sequence_length)
    freeze_pooler(loaded.backbone)
    return loaded


def freeze_pooler(backbone: keras.Model):
    """Freeze a text backbone's pooler head (BERT's `pooled_dense`), if it has one.

    mmkeras fuses the token sequence; the pooler would get no gradient, so it
    is frozen rather than counted as trainable. A reloaded model needs this
    again: `.keras` files do not keep the flag of a layer inside a backbone.
    """
    pooler = getattr(backbone, "pooled_dense", None)
    if pooler is not None:
        pooler.trainable = False


def text_sequence(backbone, token_ids, padding_mask):
    """Call a text backbone and return its sequence output [B, L, D].

    Args:
        backbone: a backbone from `load_text_backbone`.
        token_ids: [B, L] int32 token ids (symbolic or eager).
        padding_mask: [B, L] int32 padding mask.

    Returns:
        [B, L, D] token features.
    """
    # Casting makes every feed a tensor (numpy and tensors may not be mixed).
    token_ids, padding_mask = ops.cast(token_ids, "int32"), ops.cast(padding_mask, "int32")
    feeds = {"token_ids": token_ids, "padding_mask": padding_mask, "segment_ids": ops.zeros_like(token_ids)}
    outputs = backbone({name: feeds[name] for name in backbone.input})
    return outputs["sequence_output"] if isinstance(outputs, dict) else outputs


def _tiny_bert(sequence_length, texts):
    tokenizer = TextTokenizer.train_from_texts(
        texts or [], vocabulary_size=TINY_VOCABULARY_SIZE, sequence_length=sequence_length
    )
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=tokenizer.vocabulary_size,
        num_layers=2,
        num_heads=2,
        hidden_dim=64,
        intermediate_dim=128,
        max_sequence_length=sequence_length,
        name=BACKBONE_NAME,
    )
    return TextBackbone(backbone, tokenizer, pretrained=False)


def _load_preset(spec, sequence_length):
    if "://" not in spec and not Path(spec).exists() and spec not in keras_hub.models.Backbone.presets:
        raise UserError(
            f"unknown text backbone {spec!r}: not {' or '.join(BUILTIN_TEXT_BACKBONES)}, an existing folder, "
            "or a keras-hub preset name"
        )
    with _preset_errors(spec):
        backbone = keras_hub.models.Backbone.from_preset(spec, name=BACKBONE_NAME)
    _check_text_backbone(spec, backbone, sequence_length)
    with _preset_errors(spec):
        preset_tokenizer = keras_hub.tokenizers.Tokenizer.from_preset(spec)
    if not isinstance(preset_tokenizer, keras_hub.tokenizers.WordPieceTokenizer):
        raise UserError(
            f"text backbone {spec!r} uses a {type(preset_tokenizer).__name__}; "
            "mmkeras supports WordPiece (BERT-family) vocabularies only"
        )
    tokenizer = TextTokenizer.from_vocabulary(
        preset_tokenizer.get_vocabulary(),
        lowercase=preset_tokenizer.lowercase,
        # Hugging Face BERT strips accents when it lowercases (None); keras-hub
        # does not by default. Follow the checkpoint's training-time tokenizer.
        strip_accents=True if preset_tokenizer.strip_accents else None,
        sequence_length=sequence_length,
    )
    embedding_rows = getattr(backbone, "vocabulary_size", None)
    if embedding_rows is not None and tokenizer.vocabulary_size > embedding_rows:
        raise UserError(
            f"text backbone {spec!r} has {embedding_rows} token embeddings but its vocabulary "
            f"has {tokenizer.vocabulary_size} tokens"
        )
    return TextBackbone(backbone, tokenizer, pretrained=True)


@contextlib.contextmanager
def _preset_errors(spec):
    """Turn keras-hub's failures to load `spec` into a one-line `UserError`."""
    try:
        yield
    except (OSError, ValueError, KeyError, ImportError) as error:
        reason = (str(error).strip() or type(error).__name__).splitlines()[0]
        if spec in keras_hub.models.Backbone.presets:
            reason += " (named presets download from Kaggle: check the network or use a local preset folder)"
        raise UserError(f"cannot load text backbone {spec!r}: {reason}") from error


def _check_text_backbone(spec, backbone, sequence_length):
    inputs = backbone.input
    if not isinstance(inputs, dict):
        raise UserError(f"{spec!r} ({type(backbone).__name__}) is not a text backbone")
    if not {"token_ids", "padding_mask"} <= set(inputs) <= set(FED_INPUTS):
        raise UserError(
            f"text backbone {spec!r} ({type(backbone).__name__}) takes {', '.join(sorted(inputs))}; "
            "mmkeras feeds token_ids and padding_mask (and zero segment_ids)"
        )
    outputs = backbone.output
    sequence = outputs.get("sequence_output") if isinstance(outputs, dict) else outputs
    if sequence is None or len(sequence.shape) != 3:
        raise UserError(f"text backbone {spec!r} ({type(backbone).__name__}) gives no token sequence output")
    max_length = getattr(backbone, "max_sequence_length", None)
    if max_length is not None and sequence_length > max_length:
        raise UserError(
            f"sequence_length {sequence_length} is longer than text backbone {spec!r} allows ({max_length})"
        )
