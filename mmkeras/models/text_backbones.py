"""Text backbones: a built-in random BERT, Hugging Face folders or keras-hub presets, with their tokenizer.

A text SPEC is one of:
- `tiny`: a random 2-layer BERT (hidden 64) whose WordPiece vocabulary is
  learned from the training texts,
- a Hugging Face checkpoint folder (`config.json` + `model.safetensors` +
  `tokenizer.json` and/or `vocab.txt`) of an encoder family keras-hub
  converts: BERT, DistilBERT, RoBERTa, XLM-RoBERTa, ALBERT,
- a keras-hub preset name (downloads from Kaggle, so needs a network),
- a local keras-hub preset folder (`save_to_preset` output) with a WordPiece
  vocabulary.

keras-hub loads the weights; texts are always tokenized by mmkeras'
`TextTokenizer` (Hugging Face `tokenizers`), never by keras-hub's tokenizer:
the device runtime uses the same `TextTokenizer`, and keras-hub's tokenizers
split some texts differently and need vocabulary files (`vocab.txt`,
`spiece.model`, ...) that many Hugging Face folders do not ship. A Hugging
Face folder's own `tokenizer.json` is used as it is; a keras-hub preset's
WordPiece vocabulary gets Hugging Face's BERT tokenizer.

Without a `sequence_length`, texts get the checkpoint's limit, at most
`DEFAULT_SEQUENCE_LENGTH` ids (`TINY_SEQUENCE_LENGTH` for `tiny`).

Example:
>>> text = load_text_backbone("tiny", sequence_length=16, texts=["a red circle", "a blue square"])
>>> text.tokenizer.sequence_length, text.pretrained
(16, False)
"""

import contextlib
import dataclasses
import json
from pathlib import Path

import keras
import keras_hub
from keras import ops

from mmkeras.errors import UserError
from mmkeras.models.preset_download import offline_preset_error
from mmkeras.preprocessing.text import TextTokenizer

BUILTIN_TEXT_BACKBONES = ("tiny",)
BACKBONE_NAME = "text_backbone"
TINY_VOCABULARY_SIZE = 1000
TINY_SEQUENCE_LENGTH = 32
# Pretrained encoders allow 512 positions; attention costs grow with the
# square of the length and the texts of a classifier are mostly short.
DEFAULT_SEQUENCE_LENGTH = 128
# Hugging Face `model_type`s of the text encoders keras-hub 0.32 converts.
HUGGING_FACE_TEXT_FAMILIES = ("albert", "bert", "distilbert", "roberta", "xlm-roberta")
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


def load_text_backbone(spec: str, *, sequence_length: int | None = None, texts=None) -> TextBackbone:
    """Build or load the text backbone named by `spec` and its tokenizer.

    Args:
        spec: `tiny`, a Hugging Face checkpoint folder, a keras-hub preset
            name or a local keras-hub preset folder.
        sequence_length: token ids per text, special tokens included; `None`
            takes the checkpoint's limit, at most `DEFAULT_SEQUENCE_LENGTH`
            (`TINY_SEQUENCE_LENGTH` for `tiny`).
        texts: training texts (`None` entries allowed); the `tiny` backbone
            learns its vocabulary from them. Ignored for presets.

    Returns:
        A `TextBackbone`.

    Raises:
        UserError: the spec is unknown, cannot be loaded (e.g. a named preset
            while offline), is a family mmkeras cannot load, or is too short
            for `sequence_length`.
    """
    if spec == "tiny":
        loaded = _tiny_bert(sequence_length or TINY_SEQUENCE_LENGTH, texts)
    elif _hugging_face_model_type(spec) is not None:
        loaded = _load_hugging_face_folder(spec, sequence_length)
    else:
        loaded = _load_preset(spec, sequence_length)
    freeze_pooler(loaded.backbone)
    return loaded


def _hugging_face_model_type(spec: str) -> str | None:
    """The `model_type` of a Hugging Face checkpoint folder's `config.json`; `None` for anything else."""
    config_path = Path(spec) / "config.json"
    if "://" in spec or not config_path.is_file():
        return None
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None  # keras-hub reports an unreadable preset in its own words
    return config.get("model_type") if isinstance(config, dict) else None


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


def _load_hugging_face_folder(spec, sequence_length):
    model_type = _hugging_face_model_type(spec)
    if model_type not in HUGGING_FACE_TEXT_FAMILIES:
        raise UserError(
            f"text backbone {spec!r} is a Hugging Face {model_type!r} checkpoint; mmkeras loads Hugging Face "
            f"text encoders of type {', '.join(HUGGING_FACE_TEXT_FAMILIES)}"
        )
    backbone = _checked_backbone(spec)
    length = _sequence_length(spec, backbone, sequence_length)
    tokenizer = TextTokenizer.from_hugging_face_folder(spec, sequence_length=length)
    _check_vocabulary_fits(spec, backbone, tokenizer)
    return TextBackbone(backbone, tokenizer, pretrained=True)


def _load_preset(spec, sequence_length):
    if "://" not in spec and not Path(spec).exists() and spec not in keras_hub.models.Backbone.presets:
        raise UserError(
            f"unknown text backbone {spec!r}: not {' or '.join(BUILTIN_TEXT_BACKBONES)}, an existing folder, "
            "or a keras-hub preset name"
        )
    backbone = _checked_backbone(spec)
    length = _sequence_length(spec, backbone, sequence_length)
    with _preset_errors(spec):
        preset_tokenizer = keras_hub.tokenizers.Tokenizer.from_preset(spec)
    if not isinstance(preset_tokenizer, keras_hub.tokenizers.WordPieceTokenizer):
        raise UserError(
            f"text backbone {spec!r} uses a {type(preset_tokenizer).__name__}; mmkeras supports WordPiece "
            "(BERT-family) vocabularies only from keras-hub presets (Hugging Face folders bring their own "
            "tokenizer.json)"
        )
    tokenizer = TextTokenizer.from_vocabulary(
        preset_tokenizer.get_vocabulary(),
        lowercase=preset_tokenizer.lowercase,
        # Hugging Face BERT strips accents when it lowercases (None); keras-hub
        # does not by default. Follow the checkpoint's training-time tokenizer.
        strip_accents=True if preset_tokenizer.strip_accents else None,
        sequence_length=length,
    )
    _check_vocabulary_fits(spec, backbone, tokenizer)
    return TextBackbone(backbone, tokenizer, pretrained=True)


def _checked_backbone(spec):
    with _preset_errors(spec):
        backbone = keras_hub.models.Backbone.from_preset(spec, name=BACKBONE_NAME)
    _check_text_backbone(spec, backbone)
    return backbone


def _check_vocabulary_fits(spec, backbone, tokenizer):
    embedding_rows = getattr(backbone, "vocabulary_size", None)
    if embedding_rows is not None and tokenizer.vocabulary_size > embedding_rows:
        raise UserError(
            f"text backbone {spec!r} has {embedding_rows} token embeddings but its vocabulary "
            f"has {tokenizer.vocabulary_size} tokens"
        )


def _sequence_length(spec, backbone, requested):
    """`requested`, checked against the backbone's position limit; without one, the limit capped."""
    max_length = getattr(backbone, "max_sequence_length", None)
    if requested is None:
        return min(max_length or DEFAULT_SEQUENCE_LENGTH, DEFAULT_SEQUENCE_LENGTH)
    if max_length is not None and requested > max_length:
        raise UserError(f"sequence_length {requested} is longer than text backbone {spec!r} allows ({max_length})")
    return requested


@contextlib.contextmanager
def _preset_errors(spec):
    """Turn keras-hub's failures to load `spec` into a one-line `UserError`."""
    try:
        yield
    except (OSError, ValueError, KeyError, ImportError) as error:
        offline = offline_preset_error(spec, "text", error)
        if offline is not None:
            raise offline from error
        reason = (str(error).strip() or type(error).__name__).splitlines()[0]
        if spec in keras_hub.models.Backbone.presets:
            reason += " (named presets download from Kaggle: check the network or use a local preset folder)"
        raise UserError(f"cannot load text backbone {spec!r}: {reason}") from error


def _check_text_backbone(spec, backbone):
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
