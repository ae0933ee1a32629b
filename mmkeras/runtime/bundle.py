"""The bundle: the folder that goes to the device, and reading its `bundle.json`.

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

import json
from pathlib import Path
from typing import Any

from mmkeras.errors import UserError

BUNDLE_FORMAT_VERSION = 1
BUNDLE_FILE = "bundle.json"
MODEL_FILE = "model.tflite"
PREPROCESSOR_FILE = "preprocessor.json"
TOKENIZER_FILE = "tokenizer.json"
# The model inputs of the shared contract, in the order bundle.json lists them.
INPUT_NAMES = ("token_ids", "padding_mask", "image", "modality_mask")
OUTPUT_NAME = "logits"
QUANTIZATION_MODES = ("none", "float16", "dynamic", "int8")
# The keys every bundle.json has (see docs/bundle.md).
REQUIRED_KEYS = (
    "format_version",
    "mmkeras_version",
    "created",
    "model_file",
    "inputs",
    "output",
    "labels",
    "quantization",
    "preprocessing",
    "preprocessor_file",
    "tokenizer_file",
    "source_run",
)


def read_bundle(directory: str | Path) -> dict[str, Any]:
    """Read and check a bundle folder's `bundle.json`.

    Raises `UserError` naming the file when `bundle.json` or a file it refers
    to is missing, when it is not valid JSON, or when its format is unknown or
    newer than this mmkeras reads.

    Example:
    >>> read_bundle("bundles/demo")["labels"]  # doctest: +SKIP
    ['big_red', 'small_red']
    """
    directory = Path(directory)
    path = directory / BUNDLE_FILE
    if not path.is_file():
        raise UserError(f"not a bundle folder: {BUNDLE_FILE} is missing", path=path)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read bundle: {error}", path=path) from None
    except json.JSONDecodeError as error:
        raise UserError(f"invalid JSON: {error.msg}", path=path, row=error.lineno) from None
    if not isinstance(values, dict):
        raise UserError("bundle.json must hold a JSON object", path=path)
    _check_format_version(values.get("format_version"), path)
    missing = [key for key in REQUIRED_KEYS if key not in values]
    if missing:
        raise UserError(f"malformed bundle.json: missing {', '.join(missing)}", path=path)
    for key in ("model_file", "preprocessor_file", "tokenizer_file"):
        if not (directory / values[key]).is_file():
            raise UserError(f"incomplete bundle: {values[key]} is missing", path=directory / values[key])
    return values


def _check_format_version(version, path: Path):
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UserError(f"unknown bundle format version {version!r}", path=path)
    if version > BUNDLE_FORMAT_VERSION:
        raise UserError(
            f"bundle format version {version} is newer than this mmkeras reads "
            f"(up to {BUNDLE_FORMAT_VERSION}); upgrade mmkeras",
            path=path,
        )
