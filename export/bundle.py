"""The bundle: the folder that goes to the device, and its `bundle.json`.

```
BUNDLE_DIR/
  model.tflite        LiteRT model, builtin ops only, static batch of 1
  bundle.json         inputs, output, labels, quantization, preprocessing (`write_bundle_json`)
  preprocessor.json   the preprocessor's settings (`MultimodalPreprocessor.save`)
  tokenizer.json      the Hugging Face WordPiece tokenizer
```

`docs/bundle.md` explains every field for a developer who rebuilds the
preprocessing on Android or iOS. This module is TensorFlow-free: the device
runtime reads bundles with it.
"""

import datetime
import json
from pathlib import Path
from typing import Any

from mmkeras import __version__
from mmkeras.atomic_files import write_json_atomically
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
# The keys every bundle.json has (see `write_bundle_json` and docs/bundle.md).
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


def tensor_entry(name: str, shape, dtype: str, quantization: tuple[float, int] | None = None) -> dict[str, Any]:
    """How bundle.json describes one model input or output.

    Args:
        name: the signature name (`token_ids`, ..., `logits`).
        shape: the static shape, batch of 1 first.
        dtype: numpy dtype name: `int32`, `float32`, `int8` or `uint8`.
        quantization: `(scale, zero_point)` when the tensor holds quantized
            integers (`real = (q - zero_point) * scale`); `None` otherwise.

    Example:
    >>> tensor_entry("image", (1, 32, 32, 3), "float32")
    {'name': 'image', 'shape': [1, 32, 32, 3], 'dtype': 'float32', 'quantization': None}
    """
    if quantization is not None:
        scale, zero_point = quantization
        quantization = {"scale": float(scale), "zero_point": int(zero_point)}
    return {"name": name, "shape": [int(side) for side in shape], "dtype": dtype, "quantization": quantization}


def write_bundle_json(
    directory: str | Path,
    *,
    inputs: list[dict[str, Any]],
    output: dict[str, Any],
    labels: list[str],
    quantization: str,
    preprocessing: dict[str, Any],
    source_run: str,
    conversion: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write `bundle.json` into a folder that already holds the other bundle files.

    Args:
        directory: the bundle folder.
        inputs: `tensor_entry` of each model input, in `INPUT_NAMES` order.
        output: `tensor_entry` of the logits ([1, num_classes], no softmax).
        labels: class names in logit order.
        quantization: `none`, `float16`, `dynamic` or `int8`.
        preprocessing: the preprocessor's settings (the content of
            `preprocessor.json`), repeated so that one file describes the bundle.
        source_run: the run folder the bundle was exported from.
        conversion: the export's conversion report (op types, compute-op
            precision, size, parity with the Keras model), stored under
            `conversion` when given.

    Returns:
        The written bundle.json content.

    Example:
    >>> write_bundle_json("bundles/demo", inputs=inputs, output=output, labels=["cat", "dog"],
    ...                   quantization="none", preprocessing={}, source_run="runs/demo")  # doctest: +SKIP
    """
    if quantization not in QUANTIZATION_MODES:
        raise ValueError(f"quantization must be one of {QUANTIZATION_MODES}, got {quantization!r}")
    bundle = {
        "format_version": BUNDLE_FORMAT_VERSION,
        "mmkeras_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model_file": MODEL_FILE,
        "inputs": inputs,
        "output": output,
        "labels": list(labels),
        "quantization": quantization,
        "preprocessing": preprocessing,
        "preprocessor_file": PREPROCESSOR_FILE,
        "tokenizer_file": TOKENIZER_FILE,
        "source_run": str(source_run),
    }
    if conversion is not None:
        bundle["conversion"] = conversion
    write_json_atomically(Path(directory) / BUNDLE_FILE, bundle)
    return bundle


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
