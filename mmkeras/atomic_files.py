"""Atomic file writes: write beside the target, then rename over it, so a crash never leaves half a file.

TensorFlow-free: the bundle writer of the device runtime uses it too.
"""

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_atomically(path: str | Path, write: Callable[[Path], Any]):
    """Call `write(partial)` with a path beside `path`, then rename it into place.

    The partial file keeps `path`'s name as a suffix (`partial-model.keras`):
    Keras' save functions check the file extension.

    Example:
    >>> write_atomically("runs/demo/model.keras", model.save)  # doctest: +SKIP
    """
    path = Path(path)
    partial = path.with_name("partial-" + path.name)
    write(partial)
    os.replace(partial, path)


def write_json_atomically(path: str | Path, value: Any):
    """Write `value` as indented UTF-8 JSON to `path`, atomically."""
    text = json.dumps(value, indent=2, ensure_ascii=False) + "\n"
    write_atomically(path, lambda partial: partial.write_text(text, encoding="utf-8"))
