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

A QAT run (`mmkeras qat`) has two more files, and its `model.keras` is the
float model the fine-tune started from:

```
  quantization.json   the QAT marker: quantizer settings and the float run it came from
  qat.weights.h5      every weight of the QAT model, fake-quantizer ranges included
```

A fake-quantized keras-hub model does not survive a `.keras` round trip (the
blocks' configs rebuild float sub-layers), so `load_run` rebuilds it: it loads
the float `model.keras`, applies the same `quantize_model` transform and loads
`qat.weights.h5`, which restores the QAT model exactly.
"""

import dataclasses
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from mmkeras import compat
from mmkeras.atomic_files import write_atomically, write_json_atomically
from mmkeras.config import RunConfig
from mmkeras.errors import UserError
from mmkeras.preprocessing import MultimodalPreprocessor

if TYPE_CHECKING:  # this module is imported by TF-free readers (reports, the CLI's checks)
    import keras

MODEL_FILE = "model.keras"
LABELS_FILE = "labels.json"
CONFIG_FILE = "config.yaml"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
QUANTIZATION_FILE = "quantization.json"
QAT_WEIGHTS_FILE = "qat.weights.h5"
# Settings that run folders of older mmkeras versions saved and that are no longer settings.
RETIRED_SETTINGS = ("resume",)


@dataclasses.dataclass
class Run:
    """A loaded run folder.

    Args:
        path: the run folder.
        model: the Keras model (not compiled).
        preprocessor: the preprocessor the model was trained with.
        labels: class names in logit order.
        config: the run's resolved config.
        quantization: the content of `quantization.json` for a QAT run
            (then `model` is the QAT model), else `None`.
    """

    path: Path
    model: "keras.Model"
    preprocessor: MultimodalPreprocessor
    labels: list[str]
    config: RunConfig
    quantization: dict | None = None

    @property
    def float_model_file(self) -> Path:
        """The float `model.keras` (for a QAT run: the model its fine-tune started from)."""
        return self.path / MODEL_FILE


def save_run(
    run_dir,
    *,
    model,
    preprocessor,
    labels,
    config,
    history=None,
    metrics=None,
    quantization=None,
    float_model_file=None,
):
    """Write a run folder (see the module docstring). Existing files are replaced atomically.

    For a QAT run, give `quantization` (written to `quantization.json`; its
    `settings` are the `QuantizerSettings` fields) and the `float_model_file`
    the QAT model was made from; `model` is then the QAT model, saved as weights.

    Example:
    >>> save_run("runs/demo", model=model, preprocessor=preprocessor,
    ...          labels=["cat", "dog"], config=config)  # doctest: +SKIP
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if quantization is None:
        write_atomically(run_dir / MODEL_FILE, model.save)
    else:
        _save_qat_model(run_dir, model, quantization, float_model_file)
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
    import keras

    # Registers the custom layers and optimizers that model.keras refers to.
    import mmkeras.models  # noqa: F401
    import mmkeras.training.optimizers  # noqa: F401

    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    model = keras.models.load_model(run_dir / MODEL_FILE, compile=False)
    _refreeze(model)
    quantization = None
    if (run_dir / QUANTIZATION_FILE).is_file():
        quantization = json.loads((run_dir / QUANTIZATION_FILE).read_text(encoding="utf-8"))
        model = _rebuild_qat_model(run_dir, model, quantization)
    labels = json.loads((run_dir / LABELS_FILE).read_text(encoding="utf-8"))
    return Run(
        path=run_dir,
        model=model,
        preprocessor=MultimodalPreprocessor.load(run_dir),
        labels=labels,
        config=config,
        quantization=quantization,
    )


def load_run_config(run_dir) -> RunConfig:
    """The resolved config of a run folder, without loading its model (`UserError` if it is not a run folder).

    Cheap and free of TensorFlow work: `qat` reads the run's strategy from it
    before MultiWorkerMirroredStrategy may be set up.
    """
    run_dir = Path(run_dir)
    if not is_run_folder(run_dir):
        raise UserError(f"not a run folder (needs {MODEL_FILE} and {LABELS_FILE})", path=run_dir)
    return RunConfig.from_yaml(run_dir / CONFIG_FILE, ignored=RETIRED_SETTINGS)


def _refreeze(model: "keras.Model"):
    """Make the variables of the layers `model.keras` says are frozen (`--freeze`) non-trainable again.

    Loading sets a layer's `trainable` flag from its config before its variables exist, and they
    are created trainable: `model.trainable_variables` (what `TrainingLoop`, and so QAT, trains)
    would include a frozen backbone's. (Assigning `trainable = False` again to the loaded layer
    did not reach them, measured with Keras 3.15.)
    """
    for layer in compat.flatten_layers(model):
        if not layer.trainable:
            for variable in layer.variables:
                variable.trainable = False


def _save_qat_model(run_dir: Path, model: "keras.Model", quantization: dict, float_model_file):
    if float_model_file is None:
        raise ValueError("a QAT run needs the float model file it was made from")
    if Path(float_model_file).resolve() != (run_dir / MODEL_FILE).resolve():
        write_atomically(run_dir / MODEL_FILE, lambda partial: shutil.copyfile(float_model_file, partial))
    write_atomically(run_dir / QAT_WEIGHTS_FILE, model.save_weights)
    write_json_atomically(run_dir / QUANTIZATION_FILE, quantization)


def _rebuild_qat_model(run_dir: Path, float_model: "keras.Model", quantization: dict) -> "keras.Model":
    from mmkeras.quantization.qat_transform import quantize_model
    from mmkeras.quantization.qat_settings import QuantizerSettings

    if not (run_dir / QAT_WEIGHTS_FILE).is_file():
        raise UserError(f"QAT run without {QAT_WEIGHTS_FILE}", path=run_dir)
    try:
        settings = QuantizerSettings(**quantization["settings"])
    except (KeyError, TypeError) as error:
        raise UserError(f"unreadable {QUANTIZATION_FILE}: {error}", path=run_dir / QUANTIZATION_FILE) from None
    model = quantize_model(float_model, settings, copy=False)
    model.load_weights(run_dir / QAT_WEIGHTS_FILE)
    return model
