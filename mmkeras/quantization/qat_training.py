"""`qat_finetune`: fine-tune a float run with quantization-aware training into a QAT run.

QAT trains through the same machinery as `mmkeras train` (`run_setup`): the
run's tf.distribute strategy (or `QATSettings.strategy`), `EpochDatasets`,
and a `TrainingLoop` driven by `fit`, with the run's optimizer
(`make_optimizer`, whose densifying optimizers guard the Keras 3
sparse-gradient trap) at a lower learning rate. So it runs on one device,
on several GPUs (MirroredStrategy) or on several hosts
(MultiWorkerMirroredStrategy), where stock `model.fit` fails (FINDINGS).

What the QAT fine-tune takes from the float run's config: `seed` and
`deterministic` (reproducible), `class_weight` (the loss the model was trained
for), `gradient_accumulation` (the effective batch is `batch_size` times it,
as in the float run), the optimizer settings, `jit_compile`, `on_bad_row`,
the validation manifest when `val` is not given, the strategy when
`QATSettings.strategy` is `None` and `checkpoint_steps` when
`QATSettings.checkpoint_steps` is `None`; frozen backbones stay frozen
(`load_run`). What it does not: early stopping and best-weight keeping (the
validation figures are reported only, the last weights are kept), `epochs` and
`batch_size` (`QATSettings`).

Resume checkpoints are written into `out` as `mmkeras train` writes them (each
epoch, and every `checkpoint_steps` updates); `resume=True` continues from the
newest one after a crash. The resumed process rebuilds and calibrates the QAT
model as the first one did (so `initial_loss` is the same), then takes the
weights, activation ranges, optimizer state and data position from the
checkpoint.

Steps: load the float run under the strategy's scope, `quantize_model` it,
set every activation range on a few training batches (`calibrate_ranges`),
fine-tune for `epochs` while the ranges follow a moving average (of the
global batch's min/max under every strategy: `fake_quant.ActivationQuantizer`),
and write a QAT run folder (see `mmkeras.runs`, on the chief
only under multi-worker training) that `export` and `evaluate` accept.

Example:
>>> metrics = qat_finetune("runs/demo", "samples/train.csv", "runs/demo-qat",
...                        settings=QATSettings(epochs=2))  # doctest: +SKIP
>>> metrics["loss"] < metrics["initial_loss"]  # doctest: +SKIP
True
"""

import dataclasses
import logging
from pathlib import Path

import tensorflow as tf

from mmkeras.config import RunConfig
from mmkeras.data.manifest import read_manifest
from mmkeras.errors import UserError
from mmkeras.models.text_backbones import freeze_pooler
from mmkeras.quantization.fake_quant import EMA_DECAY, NUM_BITS
from mmkeras.quantization.qat_transform import calibrate_ranges, is_quantized, quantize_model
from mmkeras.quantization.quantized_layer import QuantizerSettings
from mmkeras.training.checkpoints import Checkpoints, TrainingState, checkpoint_to_resume, restore
from mmkeras.training.fit import fit
from mmkeras.training.optimizers import resolve_learning_rate
from mmkeras.runs import load_run, load_run_config, save_run
from mmkeras.training.run_setup import checked_manifests, epoch_datasets, make_loop, seed_everything
from mmkeras.training.strategy import make_strategy, worker_session

logger = logging.getLogger("mmkeras")

# QAT starts from trained weights: a tenth of the run's peak learning rate.
LEARNING_RATE_FACTOR = 0.1


@dataclasses.dataclass
class QATSettings:
    """How `mmkeras qat` fine-tunes (the CLI flags and the Python API fill it).

    Args:
        epochs: QAT epochs.
        learning_rate: peak learning rate; `None` is a tenth of the run's.
        batch_size: the global batch size; `None` keeps the run's.
        calibration_batches: training batches that set the activation ranges
            before the first step.
        num_bits: quantizer bit width (8 for int8 export).
        ema_decay: moving-average decay of the activation ranges.
        unknown_layers: `error` refuses a layer type the QAT transform does
            not know; `warn` names it in a warning and leaves it float.
        strategy: the tf.distribute strategy, as `mmkeras train --strategy`
            (`auto`, `one`, `mirrored`, `multi-worker`, `tpu`); `None` keeps the
            run's.
        checkpoint_steps: also write a resume checkpoint every this many
            optimizer updates (0: each epoch only); `None` keeps the run's.
    """

    epochs: int = 2
    learning_rate: float | None = None
    batch_size: int | None = None
    calibration_batches: int = 8
    num_bits: int = NUM_BITS
    ema_decay: float = EMA_DECAY
    unknown_layers: str = "error"
    strategy: str | None = None
    checkpoint_steps: int | None = None

    def quantizer_settings(self) -> QuantizerSettings:
        return QuantizerSettings(num_bits=self.num_bits, ema_decay=self.ema_decay)


def qat_finetune(run_dir, data, out, *, val=None, settings: QATSettings | None = None, resume=False) -> dict | None:
    """Fine-tune the run in `run_dir` with QAT on `data` and write a QAT run to `out`.

    Under `multi-worker`, start it on every worker with the same arguments
    and `TF_CONFIG`; only the chief writes `out`.

    Args:
        run_dir: a float run folder (or a QAT run, which is trained further).
        data: training manifest.
        out: the QAT run folder to write (not `run_dir`).
        val: optional validation manifest (reported, not used for early
            stopping); `None` keeps the run's, if it has one.
        settings: `QATSettings`.
        resume: continue the QAT run in `out` from its newest checkpoint
            (the same arguments as the interrupted run).

    Returns:
        The metrics (also in `out/metrics.json`): `initial_loss` (the QAT
        model's loss on `data` before fine-tuning), `loss`, `val_loss`,
        `val_accuracy`, `epochs_completed`, `epoch_seconds`, `bad_rows_skipped`;
        `None` on a multi-worker process that is not the chief.

    Raises:
        UserError: bad settings, manifests, labels the run does not know,
            `out` equal to `run_dir`, a lost multi-worker peer, or `resume`
            without a checkpoint made with the same arguments.
    """
    settings = settings or QATSettings()
    if settings.epochs < 1 or settings.calibration_batches < 1:
        raise UserError("QAT needs at least 1 epoch and 1 calibration batch")
    if Path(out).resolve() == Path(run_dir).resolve():
        raise UserError("the QAT run must go to a new folder, not the float run's", path=out)
    float_config = load_run_config(run_dir)
    config = float_config.replace(
        data=str(Path(data).resolve()),
        val=str(Path(val).resolve()) if val else None,
        out=str(Path(out).resolve()),
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        strategy=settings.strategy,
        checkpoint_steps=settings.checkpoint_steps,
        resume=resume,
    )
    # First: MultiWorkerMirroredStrategy must be set up before any other TensorFlow work.
    strategy = make_strategy(config.strategy)
    restart_hint = "restart every worker with the same flags and --resume to continue from the last checkpoint"
    with worker_session(strategy, restart_hint=restart_hint) as chief:
        return _finetune(run_dir, config, settings, strategy, chief)


def _finetune(run_dir, config: RunConfig, settings: QATSettings, strategy: tf.distribute.Strategy, chief: bool):
    loop_config = _loop_config(config, settings, strategy)
    # What a resumed process must share with the interrupted one (checked against the checkpoint).
    run_fields = RunConfig.__dataclass_fields__
    qat_only = {key: value for key, value in dataclasses.asdict(settings).items() if key not in run_fields}
    state_config = {**loop_config.to_dict(), **qat_only}
    checkpoints = Checkpoints(config.out, writer=chief)
    resumed = checkpoint_to_resume(checkpoints, state_config) if config.resume else None
    seed_everything(config)
    with strategy.scope():  # the model's variables, quantizer ranges included, live on every replica
        run = load_run(run_dir)
        model = run.model
        freeze_pooler(model.get_layer("text_backbone"))
        if not is_quantized(model):
            model = quantize_model(model, settings.quantizer_settings(), on_unknown=settings.unknown_layers, copy=False)
    labels, preprocessor = run.labels, run.preprocessor
    train_manifest, val_manifest, skipped = checked_manifests(
        config, read_manifest(config.data), labels, preprocessor.image_size
    )
    train_epochs, val_data = epoch_datasets(config, preprocessor, labels, train_manifest, val_manifest)
    # Eager and identical in every process (same rows, same weights), so every replica gets the same ranges.
    calibrate_ranges(model, (inputs for inputs, _ in train_epochs.for_epoch(0).take(settings.calibration_batches)))
    loop = make_loop(
        loop_config,
        model,
        strategy,
        model.dtype_policy.name,
        train_manifest.encode_labels(labels),
        len(labels),
    )
    initial_loss, _ = loop.evaluate(train_epochs.for_epoch(0))
    if resumed is None:
        checkpoints.clear()
    else:
        restore(resumed, model.variables, loop.optimizer.variables)
    logger.info(
        "QAT on %d rows, %d replica(s)%s: loss %.4f before fine-tuning",
        len(train_manifest.rows),
        strategy.num_replicas_in_sync,
        ", XLA" if loop.jit_compile else "",
        initial_loss,
    )
    # Validation is reported, not used to pick weights: fit gets none.
    state = fit(
        loop,
        train_epochs,
        epochs=config.epochs,
        batch_size=config.batch_size,
        checkpoints=checkpoints,
        checkpoint_steps=config.checkpoint_steps,
        state=TrainingState(config=state_config) if resumed is None else resumed.state,
    )
    metrics = {
        "initial_loss": initial_loss,
        "loss": state.history["loss"][-1],
        "val_loss": None,
        "val_accuracy": None,
        "epochs_completed": len(state.history["loss"]),
        "epoch_seconds": state.epoch_seconds,
        "bad_rows_skipped": skipped,
    }
    if val_data is not None:
        metrics["val_loss"], metrics["val_accuracy"] = loop.evaluate(val_data)
    if not chief:
        return None
    save_run(
        config.out,
        model=model,
        preprocessor=preprocessor,
        labels=labels,
        config=config,
        history=state.history,
        metrics=metrics,
        quantization={"settings": dataclasses.asdict(settings.quantizer_settings()), "float_run": str(run.path)},
        float_model_file=run.float_model_file,
    )
    checkpoints.clear()
    logger.info("QAT run saved to %s", config.out)
    return metrics


def _loop_config(config: RunConfig, settings: QATSettings, strategy: tf.distribute.Strategy) -> RunConfig:
    """The run config the QAT loop trains with: QAT's learning rate, and no XLA across replicas.

    With several replicas every activation quantizer gathers the replicas'
    batch min/max (an all-reduce) in the forward pass; XLA compiles that pass per replica, where
    this collective is not known to work (and on logical CPUs per-replica XLA
    cannot even reach the replicas' variables), so QAT then runs it as a graph.
    """
    learning_rate = settings.learning_rate
    if learning_rate is None:
        learning_rate = LEARNING_RATE_FACTOR * resolve_learning_rate(config)
    if strategy.num_replicas_in_sync > 1:
        return config.replace(learning_rate=learning_rate, jit_compile=False)
    return config.replace(learning_rate=learning_rate)
