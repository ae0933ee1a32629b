"""`load_run`: a run folder (`mmkeras.runs`) back into its Keras model, preprocessor, labels and config.

It sits in the quantization layer (`mmkeras.layers`) because a QAT run
cannot be loaded from `model.keras` alone: a fake-quantized keras-hub model
does not survive a `.keras` round trip (the blocks' configs rebuild float
sub-layers), so `load_run` loads the float `model.keras`, applies the same
`quantize_model` transform and loads `qat.weights.h5`, which restores the QAT
model exactly. Evaluation, training from an align run, QAT and export load
runs with it.

Example:
>>> run = load_run("runs/demo")  # doctest: +SKIP
>>> run.labels  # doctest: +SKIP
['big_red', 'small_red']
"""

import dataclasses
import zipfile
from pathlib import Path

import keras

# Registers the custom layers model.keras refers to (it is loaded without its optimizer: compile=False).
import mmkeras.models  # noqa: F401
from mmkeras import compat
from mmkeras.config import RunConfig
from mmkeras.errors import UserError
from mmkeras.models.dual_encoder import is_dual_encoder
from mmkeras.preprocessing import MultimodalPreprocessor
from mmkeras.quantization.qat_settings import QuantizerSettings
from mmkeras.quantization.qat_transform import quantize_model
from mmkeras.runs import (
    LABELS_FILE,
    MODEL_FILE,
    QAT_WEIGHTS_FILE,
    QUANTIZATION_FILE,
    SETTINGS_OF_OLDER_QAT_RUNS,
    check_model_archive,
    load_run_config,
    read_json,
    read_labels,
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
        quantization: the content of `quantization.json` for a QAT run
            (then `model` is the QAT model), else `None`.
    """

    path: Path
    model: keras.Model
    preprocessor: MultimodalPreprocessor
    labels: list[str]
    config: RunConfig
    quantization: dict | None = None

    @property
    def float_model_file(self) -> Path:
        """The float `model.keras` (for a QAT run: the model its fine-tune started from)."""
        return self.path / MODEL_FILE


def load_run(run_dir) -> Run:
    """Load a run folder written by `save_run` (`UserError` if it is not one).

    Example:
    >>> run = load_run("runs/demo")  # doctest: +SKIP
    >>> run.labels  # doctest: +SKIP
    ['big_red', 'small_red']
    """
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    labels = read_labels(run_dir)
    model = _load_model_file(run_dir / MODEL_FILE)
    if not labels and not is_dual_encoder(model):
        raise UserError("labels.json names no class", path=run_dir / LABELS_FILE)
    _refreeze(model)
    quantization = None
    if (run_dir / QUANTIZATION_FILE).is_file():
        quantization = read_json(run_dir / QUANTIZATION_FILE)
        model = _rebuild_qat_model(run_dir, model, quantization)
    return Run(
        path=run_dir,
        model=model,
        preprocessor=MultimodalPreprocessor.load(run_dir),
        labels=labels,
        config=config,
        quantization=quantization,
    )


def _load_model_file(path: Path) -> keras.Model:
    """`model.keras`, loaded in Keras' safe mode; a file Keras refuses is reported as the user's file.

    Safe mode (the default) refuses code in the file (a `Lambda`, an unknown
    function): that is a `UserError` naming the file, as is a damaged archive.
    """
    check_model_archive(path)
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except (ValueError, TypeError, KeyError, OSError, zipfile.BadZipFile) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise UserError(f"cannot load the model ({type(error).__name__}): {reason}", path=path) from None


def _refreeze(model: keras.Model):
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


def _rebuild_qat_model(run_dir: Path, float_model: keras.Model, quantization: dict) -> keras.Model:
    if not (run_dir / QAT_WEIGHTS_FILE).is_file():
        raise UserError(f"QAT run without {QAT_WEIGHTS_FILE}", path=run_dir)
    try:
        settings = QuantizerSettings(**{**SETTINGS_OF_OLDER_QAT_RUNS, **quantization["settings"]})
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(f"unreadable {QUANTIZATION_FILE}: {error}", path=run_dir / QUANTIZATION_FILE) from None
    model = quantize_model(float_model, settings, on_unknown=quantization.get("unknown_layers", "error"), copy=False)
    model.load_weights(run_dir / QAT_WEIGHTS_FILE)
    return model
