"""The bundle: the folder that goes to the device, and reading its `bundle.json` (every kind: `BUNDLE_KINDS`).

```
BUNDLE_DIR/
  model.tflite        LiteRT model, builtin ops only, static batch of 1
  bundle.json         inputs, output, labels, quantization, preprocessing
  preprocessor.json   the preprocessor's settings (`MultimodalPreprocessor.save`)
  tokenizer.json      the Hugging Face WordPiece tokenizer
```

`docs/bundle.md` explains every field for a developer who rebuilds the
preprocessing on Android or iOS. This module is TensorFlow-free: the device
runtime reads bundles with it; `mmkeras.export.bundle_writer` writes them.
"""

import functools
import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema.exceptions

from mmkeras.errors import UserError
from mmkeras.runs import BUNDLE_FILE, RESULTS_FOLDER, is_run_folder  # `evaluate BUNDLE` writes into results too
from mmkeras.runtime.outputs import BUNDLE_OUTPUTS, DEFAULT_OUTPUT_ACTIVATION
from mmkeras.staged_folder import UNFINISHED_MARKER

BUNDLE_FORMAT_VERSION = 1
MODEL_FILE = "model.tflite"
PREPROCESSOR_FILE = "preprocessor.json"
TOKENIZER_FILE = "tokenizer.json"
# A port's checks (`mmkeras.runtime.test_vectors`) and the site `export --web` builds inside the bundle.
TEST_VECTORS_FILE = "test_vectors.json"
TEST_VECTORS_FOLDER = "test_vectors"
WEB_SITE_FOLDER = "web"
# The two models of a dual-encoder bundle (an align run's export), instead of `MODEL_FILE`.
ENCODER_FILES = {"text_encoder": "text_encoder.tflite", "image_encoder": "image_encoder.tflite"}
# Every file of a bundle: `export` replaces a folder only when it holds nothing else.
BUNDLE_FILES = (
    BUNDLE_FILE,
    MODEL_FILE,
    PREPROCESSOR_FILE,
    TOKENIZER_FILE,
    TEST_VECTORS_FILE,
    TEST_VECTORS_FOLDER,
    WEB_SITE_FOLDER,
    RESULTS_FOLDER,
    *ENCODER_FILES.values(),
)
# The JSON Schema of bundle.json, shipped in this package (docs/bundle.md describes it).
SCHEMA_FILE = "bundle.schema.json"
# The model inputs of the shared contract, in the order bundle.json lists them.
INPUT_NAMES = ("token_ids", "padding_mask", "image", "modality_mask")
OUTPUT_NAME = "logits"
QUANTIZATION_MODES = ("none", "float16", "dynamic", "int8", "int16x8")
# The modes that calibrate activation ranges on representative rows (int8: int8 activations; int16x8: int16
# activations with int8 weights, TFLite's 16x8 mode).
CALIBRATED_MODES = ("int8", "int16x8")
# What a bundle holds (`bundle_kind`), in the words of the line that refuses a bundle a command cannot use.
BUNDLE_KINDS = {
    "classifier": "one label per example: a softmax over its labels",
    "multilabel": "any number of labels per example: a sigmoid per label",
    "dual_encoder": "an align run's text and image encoders, for mmkeras index, search and match",
}
CLASSIFIER_KINDS = ("classifier", "multilabel")
DUAL_ENCODER_KIND = "dual_encoder"
# A LiteRT model is a FlatBuffer whose file identifier, bytes 4..8, is "TFL3".
TFLITE_IDENTIFIER = b"TFL3"
# The smallest FlatBuffer with a root table and an identifier; FlatBuffers cannot exceed 2 GiB.
TFLITE_MIN_BYTES = 16
TFLITE_MAX_BYTES = 2**31


def read_bundle(
    directory: str | Path, *, kinds: tuple[str, ...] = CLASSIFIER_KINDS, unfinished_ok: bool = False
) -> dict[str, Any]:
    """Read and check a bundle folder's `bundle.json`, and that its files are there and sound.

    Every reader of bundles reads them here, saying which kinds it can use:
    a bundle of another kind is refused in one line naming its kind.

    Args:
        directory: the bundle folder.
        kinds: the `BUNDLE_KINDS` the caller can use (`bundle_kind`).
        unfinished_ok: accept the staging folder of an export in progress
            (only the exporter checking its own work does). Otherwise a
            folder holding `UNFINISHED_MARKER` is refused: a killed export
            leaves nothing that predicts.

    Checks, each a `UserError` naming the file: `bundle.json` exists, is
    UTF-8 JSON, has a format version this mmkeras reads and matches
    `bundle.schema.json` for its kind; every file it names is a regular file inside the
    bundle folder (no path leads out of it); `model.tflite` is a LiteRT
    FlatBuffer by its identifier and size.

    Example:
    >>> read_bundle("bundles/demo")["labels"]  # doctest: +SKIP
    ['big_red', 'small_red']
    """
    directory = Path(directory)
    if not unfinished_ok and (directory / UNFINISHED_MARKER).exists():
        raise UserError(
            "an unfinished export (killed while writing); the next export to its folder removes it", path=directory
        )
    path = directory / BUNDLE_FILE
    if not path.is_file() and is_run_folder(directory):  # `benchmark`, `web` or `Predictor` given the run trained
        raise UserError(f"this is a run folder, not a bundle: run `mmkeras export {directory} --out BUNDLE_DIR` "
                        "first, then use BUNDLE_DIR", path=directory)
    if not path.is_file():
        raise UserError(f"not a bundle folder: {BUNDLE_FILE} is missing", path=path)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read bundle: {getattr(error, 'strerror', None) or error}", path=path) from None
    except json.JSONDecodeError as error:
        raise UserError(f"invalid JSON: {error.msg}", path=path, row=error.lineno) from None
    except RecursionError:
        raise UserError("invalid JSON: nested too deeply", path=path) from None
    if not isinstance(values, dict):
        raise UserError("bundle.json must hold a JSON object", path=path)
    _check_format_version(values.get("format_version"), path)
    kind = bundle_kind(values, path)
    if kind not in kinds:
        raise UserError(
            f"a {kind} bundle ({BUNDLE_KINDS[kind]}); this needs a {' or '.join(kinds)} bundle", path=path
        )
    if kind == DUAL_ENCODER_KIND:
        _check_schema(values, path, {"$ref": "#/$defs/dual_encoder_bundle", "$defs": bundle_schema()["$defs"]},
                      required=bundle_schema()["$defs"]["dual_encoder_bundle"]["required"])
        models = list(values["encoders"].values())
        files = [*models, PREPROCESSOR_FILE, TOKENIZER_FILE]
    else:
        _check_schema(values, path, bundle_schema(), required=bundle_schema()["required"])
        _check_thresholds(values, path)
        models = [values["model_file"]]
        files = [values["model_file"], values["preprocessor_file"], values["tokenizer_file"]]
    for name in files:
        _check_bundle_file(directory, name)
    for name in models:
        check_tflite_file(directory / name)
    return values


def bundle_kind(values: dict[str, Any], path: Path | None = None) -> str:
    """Which of `BUNDLE_KINDS` a bundle.json describes: its `kind`, else its output activation's.

    Example:
    >>> bundle_kind({"output_activation": "sigmoid"}), bundle_kind({"kind": "dual_encoder"})
    ('multilabel', 'dual_encoder')
    """
    kind = values.get("kind")
    if kind is None:
        output = BUNDLE_OUTPUTS.get(output_activation(values))  # an unknown one: the schema check names it
        return output.bundle_kind if output is not None else "classifier"
    if kind != DUAL_ENCODER_KIND:
        raise UserError(f"unknown bundle kind {kind!r} (this mmkeras reads {', '.join(BUNDLE_KINDS)})", path=path)
    return kind


def output_activation(bundle: dict[str, Any]) -> str:
    """`softmax` or `sigmoid`: how a bundle's logits become scores (`softmax` for a bundle without the key;
    `mmkeras.runtime.outputs.output_of` gives its decoding).

    Example:
    >>> output_activation({"labels": ["cat", "dog"]})
    'softmax'
    """
    return bundle.get("output_activation", DEFAULT_OUTPUT_ACTIVATION)


@functools.cache
def bundle_schema() -> dict[str, Any]:
    """The JSON Schema of `bundle.json` (format version 1)."""
    return json.loads(resources.files("mmkeras.runtime").joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))


def _check_schema(values: dict, path: Path, schema: dict, *, required: list[str]):
    missing = [key for key in required if key not in values]
    if missing:  # all of them at once: the validator would name one at a time
        raise UserError(f"malformed bundle.json: missing {', '.join(missing)}", path=path)
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(values))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "the top level"
        # A pattern's regex says little to a user: the schema's description of the value says more.
        description = error.schema.get("description") if isinstance(error.schema, dict) else None
        reason = f"{error.instance!r} is not allowed ({description})" if description else error.message
        raise UserError(f"malformed bundle.json at {where}: {reason}", path=path)


def _check_thresholds(values: dict, path: Path):
    """The schema asks a sigmoid bundle for thresholds; one per label is beyond what a schema can say."""
    thresholds = values.get("thresholds")
    if thresholds is not None and len(thresholds) != len(values["labels"]):
        raise UserError(
            f"malformed bundle.json at thresholds: {len(thresholds)} thresholds for {len(values['labels'])} labels",
            path=path,
        )


def _check_bundle_file(directory: Path, name: str):
    """A file bundle.json names must be a regular file inside the bundle folder (a link out of it is refused)."""
    path = directory / name
    if not path.is_file():
        raise UserError(f"incomplete bundle: {name} is missing", path=path)
    if not path.resolve().is_relative_to(directory.resolve()):
        raise UserError(f"{name} leads outside the bundle folder; a bundle's files must be inside it", path=path)


def check_tflite_file(path: Path):
    """`UserError` unless `path` looks like a LiteRT model: a size a FlatBuffer can have, and the TFL3 identifier.

    The interpreter is not given files that fail this (it reads the identifier only later, and not always).
    """
    size = path.stat().st_size
    if not TFLITE_MIN_BYTES <= size < TFLITE_MAX_BYTES:
        raise UserError(f"not a LiteRT model: {size} bytes (a truncated or empty file?)", path=path)
    with path.open("rb") as handle:
        identifier = handle.read(8)[4:8]
    if identifier != TFLITE_IDENTIFIER:
        raise UserError(
            f"not a LiteRT model: the file identifier is {identifier!r}, not {TFLITE_IDENTIFIER!r}", path=path
        )


def _check_format_version(version, path: Path):
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UserError(f"unknown bundle format version {version!r}", path=path)
    if version > BUNDLE_FORMAT_VERSION:
        raise UserError(
            f"bundle format version {version} is newer than this mmkeras reads "
            f"(up to {BUNDLE_FORMAT_VERSION}); upgrade mmkeras",
            path=path,
        )
