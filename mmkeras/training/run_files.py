"""Names of the files in a run folder, and atomic JSON writes (no TensorFlow needed).

Kept apart from `run_folder` so TF-free readers (reports) can use them.
"""

import json
import os
from pathlib import Path
from typing import Any

MODEL_FILE = "model.keras"
LABELS_FILE = "labels.json"
CONFIG_FILE = "config.yaml"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"


def write_json_atomically(path: Path, value: Any):
    """Write JSON beside `path`, then rename over it, so a crash never leaves half a file."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(partial, path)
