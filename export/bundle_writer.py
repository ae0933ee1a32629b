"""Writing a bundle's `bundle.json`, and where a bundle may be written (read by `mmkeras.runtime.bundle`).

The folder itself is written by `mmkeras.staged_folder` (whole or not at all).

Example:
>>> write_bundle_json("bundles/demo", inputs=inputs, output=output, labels=["cat", "dog"],
...                   quantization="none", preprocessing={}, source_run="runs/demo")  # doctest: +SKIP
"""

import datetime
from pathlib import Path
from typing import Any

from mmkeras import __version__
from mmkeras.atomic_files import write_json_atomically
from mmkeras.errors import UserError
from mmkeras.runtime.bundle import (
    BUNDLE_FILE,
    BUNDLE_FILES,
    BUNDLE_FORMAT_VERSION,
    MODEL_FILE,
    PREPROCESSOR_FILE,
    QUANTIZATION_MODES,
    TOKENIZER_FILE,
)
from mmkeras.tasks.registry import get_task


def bundle_header() -> dict[str, Any]:
    """The keys every bundle.json of every kind starts with: format version, mmkeras version, creation time (UTC).

    Example:
    >>> sorted(bundle_header())
    ['created', 'format_version', 'mmkeras_version']
    """
    return {
        "format_version": BUNDLE_FORMAT_VERSION,
        "mmkeras_version": __version__,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


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
    task: str = "classify",
    thresholds: list[float] | None = None,
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
        task: the run's task; its output sets `output_activation` (`Task.output`).
        thresholds: for `multilabel`, per label (in `labels` order) the
            sigmoid score at and above which the label is predicted.
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
    activation = get_task(task).output.activation
    if (thresholds is None) != (activation == "softmax"):
        raise ValueError(f"thresholds go with a sigmoid output ({task!r} gives {activation})")
    bundle = {
        **bundle_header(),
        "model_file": MODEL_FILE,
        "inputs": inputs,
        "output": output,
        "labels": list(labels),
        "quantization": quantization,
        "task": task,
        "output_activation": activation,
        **({"thresholds": [float(value) for value in thresholds]} if thresholds is not None else {}),
        "preprocessing": preprocessing,
        "preprocessor_file": PREPROCESSOR_FILE,
        "tokenizer_file": TOKENIZER_FILE,
        "source_run": str(source_run),
    }
    if conversion is not None:
        bundle["conversion"] = conversion
    write_json_atomically(Path(directory) / BUNDLE_FILE, bundle)
    return bundle


def check_replaceable(out_dir: str | Path):
    """Only a bundle or an empty folder may be replaced: never delete unrelated files.

    A bundle here is a folder holding `bundle.json` and nothing but bundle
    files; a file the user added to it is refused by name.

    Example:
    >>> check_replaceable(Path("bundles/new"))  # doctest: +SKIP
    """
    out_dir = Path(out_dir)
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise UserError("the output path exists and is not a folder", path=out_dir)
    entries = sorted(entry.name for entry in out_dir.iterdir())
    if entries and BUNDLE_FILE not in entries:
        raise UserError(f"the output folder is not empty and holds no {BUNDLE_FILE}; not replacing it", path=out_dir)
    foreign = [name for name in entries if name not in BUNDLE_FILES]
    if foreign:
        raise UserError(
            f"the bundle folder also holds {', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}, which "
            "replacing it would delete; move them out or export to another folder",
            path=out_dir,
        )
