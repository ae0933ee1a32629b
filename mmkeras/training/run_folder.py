"""The run folder: everything a trained run needs to be evaluated, fine-tuned or exported.

```
RUN_DIR/
  model.keras         the model (best validation checkpoint when a validation set was given)
  labels.json         class names in logit order
  preprocessor.json   text and image preprocessing settings (shared with the device bundle)
  tokenizer.json      the Hugging Face tokenizer (the same file the device uses)
  config.yaml         the resolved RunConfig
  history.json        per-epoch metrics
  metrics.json        the final figures `mmkeras train --json` prints
```
"""

import dataclasses
import json
import os
from pathlib import Path

import keras

from mmkeras.config import RunConfig
from mmkeras.errors import UserError
from mmkeras.preprocessing import MultimodalPreprocessor
from mmkeras.training.run_files import (
    CONFIG_FILE,
    HISTORY_FILE,
    LABELS_FILE,
    METRICS_FILE,
    MODEL_FILE,
    write_json_atomically,
)


@dataclasses.dataclass
class Run:
    """A loaded run folder.

    Args:
        path: the run folder.
        model: the Keras model (not compiled).
        preprocessor: the preprocessor the model was trained with.
        labels: class names in logit order.
        config: the run's resolved config.
    """

    path: Path
    model: keras.Model
    preprocessor: MultimodalPreprocessor
    labels: list[str]
    config: RunConfig


def save_model_atomically(model: keras.Model, path: Path):
    """Save a `.keras` file aside and rename it into place."""
    partial = path.with_name("partial-" + path.name)
    model.save(partial)
    os.replace(partial, path)


def save_run(run_dir, *, model, preprocessor, labels, config, history=None, metrics=None):
    """Write a run folder (see the module docstring). Existing files are replaced atomically.

    Example:
    >>> save_run("runs/demo", model=model, preprocessor=preprocessor,
    ...          labels=["cat", "dog"], config=config)  # doctest: +SKIP
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_model_atomically(model, run_dir / MODEL_FILE)
    preprocessor.save(run_dir)
    write_json_atomically(run_dir / LABELS_FILE, list(labels))
    config.save_yaml(run_dir / CONFIG_FILE)
    if history is not None:
        write_json_atomically(run_dir / HISTORY_FILE, history)
    if metrics is not None:
        write_json_atomically(run_dir / METRICS_FILE, metrics)


def is_run_folder(path) -> bool:
    return (Path(path) / MODEL_FILE).is_file() and (Path(path) / LABELS_FILE).is_file()


def load_run(run_dir) -> Run:
    """Load a run folder written by `save_run` (`UserError` if it is not one).

    Example:
    >>> run = load_run("runs/demo")  # doctest: +SKIP
    >>> run.labels  # doctest: +SKIP
    ['big_red', 'small_red']
    """
    # Registers the custom layers and optimizers that model.keras refers to.
    import mmkeras.models  # noqa: F401
    import mmkeras.training.optimizers  # noqa: F401

    run_dir = Path(run_dir)
    if not is_run_folder(run_dir):
        raise UserError(f"not a run folder (needs {MODEL_FILE} and {LABELS_FILE})", path=run_dir)
    model = keras.models.load_model(run_dir / MODEL_FILE, compile=False)
    labels = json.loads((run_dir / LABELS_FILE).read_text(encoding="utf-8"))
    return Run(
        path=run_dir,
        model=model,
        preprocessor=MultimodalPreprocessor.load(run_dir),
        labels=labels,
        config=RunConfig.from_yaml(run_dir / CONFIG_FILE),
    )
