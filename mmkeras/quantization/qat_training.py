"""`qat_finetune`: fine-tune a float run with quantization-aware training into a QAT run.

The glue is deliberately small (one `model.fit` in a single process) so it can
later move into the run's training loop: it reuses the run's preprocessing,
`make_dataset`, and the run's optimizer (`make_optimizer`, whose densifying
optimizers guard the Keras 3 sparse-gradient trap) at a lower learning rate.

Steps: load the float run, `quantize_model` it, set every activation range on
a few training batches (`calibrate_ranges`), fine-tune for `epochs` while the
ranges follow a moving average, and write a QAT run folder (see
`mmkeras.training.run_folder`) that `export` and `evaluate` accept.

Example:
>>> metrics = qat_finetune("runs/demo", "samples/train.csv", "runs/demo-qat",
...                        settings=QATSettings(epochs=2))  # doctest: +SKIP
>>> metrics["loss"] < metrics["initial_loss"]  # doctest: +SKIP
True
"""

import dataclasses
import time
from pathlib import Path

import keras

from mmkeras.data.dataset import make_dataset
from mmkeras.data.manifest import read_manifest
from mmkeras.errors import UserError
from mmkeras.models.builder import has_pretrained_backbone
from mmkeras.models.text_backbones import freeze_pooler
from mmkeras.quantization.fake_quant import EMA_DECAY, NUM_BITS
from mmkeras.quantization.qat_transform import calibrate_ranges, is_quantized, quantize_model
from mmkeras.quantization.quantized_layer import QuantizerSettings
from mmkeras.training.optimizers import make_optimizer, resolve_learning_rate
from mmkeras.training.run_folder import load_run, save_run

# QAT starts from trained weights: a tenth of the run's peak learning rate.
LEARNING_RATE_FACTOR = 0.1


@dataclasses.dataclass
class QATSettings:
    """How `mmkeras qat` fine-tunes (the CLI flags and the Python API fill it).

    Args:
        epochs: QAT epochs.
        learning_rate: peak learning rate; `None` is a tenth of the run's.
        batch_size: `None` keeps the run's batch size.
        calibration_batches: training batches that set the activation ranges
            before the first step.
        num_bits: quantizer bit width (8 for int8 export).
        ema_decay: moving-average decay of the activation ranges.
        unknown_layers: `error` refuses a layer type the QAT transform does
            not know; `warn` names it in a warning and leaves it float.
    """

    epochs: int = 2
    learning_rate: float | None = None
    batch_size: int | None = None
    calibration_batches: int = 8
    num_bits: int = NUM_BITS
    ema_decay: float = EMA_DECAY
    unknown_layers: str = "error"

    def quantizer_settings(self) -> QuantizerSettings:
        return QuantizerSettings(num_bits=self.num_bits, ema_decay=self.ema_decay)


def qat_finetune(run_dir, data, out, *, val=None, settings: QATSettings | None = None) -> dict:
    """Fine-tune the run in `run_dir` with QAT on `data` and write a QAT run to `out`.

    Args:
        run_dir: a float run folder (or a QAT run, which is trained further).
        data: training manifest.
        out: the QAT run folder to write (not `run_dir`).
        val: optional validation manifest (reported, not used for early stopping).
        settings: `QATSettings`.

    Returns:
        The metrics (also in `out/metrics.json`): `initial_loss` (the QAT
        model's loss on `data` before fine-tuning), `loss`, `val_loss`,
        `val_accuracy`, `epochs_completed`, `epoch_seconds`, `bad_rows_skipped`.

    Raises:
        UserError: bad settings, manifests, labels the run does not know, or
            `out` equal to `run_dir`.
    """
    settings = settings or QATSettings()
    if settings.epochs < 1 or settings.calibration_batches < 1:
        raise UserError("QAT needs at least 1 epoch and 1 calibration batch")
    if Path(out).resolve() == Path(run_dir).resolve():
        raise UserError("the QAT run must go to a new folder, not the float run's", path=out)
    run = load_run(run_dir)
    config = run.config.replace(
        data=str(Path(data).resolve()),
        val=str(Path(val).resolve()) if val else None,
        out=str(Path(out).resolve()),
        epochs=settings.epochs,
        batch_size=settings.batch_size or run.config.batch_size,
    )
    keras.utils.set_random_seed(config.seed)
    train_data, val_data, skipped = _datasets(run, config)
    model = run.model
    freeze_pooler(model.get_layer("text_backbone"))
    if not is_quantized(model):
        model = quantize_model(model, settings.quantizer_settings(), on_unknown=settings.unknown_layers, copy=False)
    calibrate_ranges(model, (inputs for inputs, _ in train_data.take(settings.calibration_batches)))
    steps = sum(1 for _ in train_data) * settings.epochs
    model.compile(
        optimizer=make_optimizer(config.replace(learning_rate=_learning_rate(config, settings)), total_steps=steps,
                                 pretrained=has_pretrained_backbone(config)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    initial_loss = float(model.evaluate(train_data, verbose=0)[0])
    epoch_seconds = []
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: epoch_seconds.append(time.perf_counter()),
        on_epoch_end=lambda epoch, logs: epoch_seconds.append(time.perf_counter() - epoch_seconds.pop()),
    )
    history = model.fit(train_data, epochs=settings.epochs, callbacks=[timer], verbose=0).history
    history = {key: [float(value) for value in values] for key, values in history.items()}
    metrics = {
        "initial_loss": initial_loss,
        "loss": history["loss"][-1],
        "val_loss": None,
        "val_accuracy": None,
        "epochs_completed": len(history["loss"]),
        "epoch_seconds": epoch_seconds,
        "bad_rows_skipped": skipped,
    }
    if val_data is not None:
        val_loss, val_accuracy = model.evaluate(val_data, verbose=0)
        metrics.update(val_loss=float(val_loss), val_accuracy=float(val_accuracy))
    save_run(
        out,
        model=model,
        preprocessor=run.preprocessor,
        labels=run.labels,
        config=config,
        history=history,
        metrics=metrics,
        quantization={"settings": dataclasses.asdict(settings.quantizer_settings()), "float_run": str(run.path)},
        float_model_file=run.float_model_file,
    )
    return metrics


def _datasets(run, config):
    """Training and validation datasets in the run's label order, and the bad rows skipped."""
    image_size = run.preprocessor.image_size
    train_manifest, skipped = read_manifest(config.data).validate_images(image_size, config.on_bad_row)
    train_manifest.encode_labels(run.labels)  # a label the run does not know is a user error
    train_data = make_dataset(
        train_manifest, run.labels, run.preprocessor, batch_size=config.batch_size, shuffle=True, seed=config.seed
    )
    if not config.val:
        return train_data, None, skipped
    val_manifest, val_skipped = read_manifest(config.val).validate_images(image_size, config.on_bad_row)
    val_manifest.encode_labels(run.labels)
    val_data = make_dataset(
        val_manifest, run.labels, run.preprocessor, batch_size=config.batch_size, shuffle=False, seed=config.seed
    )
    return train_data, val_data, skipped + val_skipped


def _learning_rate(config, settings):
    if settings.learning_rate is not None:
        return settings.learning_rate
    return LEARNING_RATE_FACTOR * resolve_learning_rate(config, has_pretrained_backbone(config))
