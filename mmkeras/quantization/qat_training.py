"""`qat_finetune`: fine-tune a float run with quantization-aware training into a QAT run.

QAT is a `TrainingJob`, the skeleton `mmkeras train` runs too: the
run's tf.distribute strategy (or `QATSettings.strategy`), `EpochDatasets`,
and a `TrainingLoop` driven by `fit`, with the run's optimizer
(`make_optimizer`, whose densifying optimizers guard the Keras 3
sparse-gradient trap) at a lower learning rate. So it runs on one device,
on several GPUs (MirroredStrategy) or on several hosts
(MultiWorkerMirroredStrategy), where stock `model.fit` fails
(docs/design.md#distributed-training-loop).

What the QAT fine-tune takes from the float run's config: `seed` and
`deterministic` (reproducible), `class_weight` (the loss the model was trained
for), `gradient_accumulation` (the effective batch is `batch_size` times it,
as in the float run), the optimizer settings, `jit_compile`, `on_bad_row`,
the validation manifest when `val` is not given, the strategy when
`QATSettings.strategy` is `None` and `checkpoint_steps` when
`QATSettings.checkpoint_steps` is `None`; frozen backbones stay frozen
(`load_run`); LoRA runs train new adapters only (`adapt_as_the_float_run`);
modality dropout hides modalities as it did; a run trained on cached
features (`--cache-features`) trains its head on cached features again: the
fake-quantized outputs of the calibrated frozen backbones, computed once
(`quantized_head_data`). What it does not: the
`--modality-balance` heads (QAT trains the plain model), early stopping and best-weight
keeping (the validation figures are reported only, the last weights are
kept), `epochs` and `batch_size` (`QATSettings`). Only `prepare` differs from training: it loads
the float run, quantizes it and calibrates the ranges.

Resume checkpoints are written into `out` as `mmkeras train` writes them (each
epoch, and every `checkpoint_steps` updates); `resume=True` continues from the
newest one after a crash. The resumed process rebuilds and calibrates the QAT
model as the first one did (so `initial_loss` is the same), then takes the
weights, activation ranges, optimizer state and data position from the
checkpoint.

Steps: load the float run under the strategy's scope, `quantize_model` it,
set every activation range on a few training batches (`calibrate_ranges`),
fine-tune for `epochs` while the ranges follow a moving average (of the
global batch's min/max under every strategy: `fake_quant.ActivationQuantizer`;
on cached features only the head's: the frozen backbones no longer run, so
theirs stay as calibrated, and the int8 export uses those),
and write a QAT run folder (see `mmkeras.runs`, on the chief
only under multi-worker training) that `export` and `evaluate` accept.

Example:
>>> result = qat_finetune("runs/demo", "samples/train.csv", "runs/demo-qat",
...                       settings=QATSettings(epochs=2))  # doctest: +SKIP
>>> result.metrics["loss"] < result.metrics["initial_loss"]  # doctest: +SKIP
True
"""

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import tensorflow as tf

from mmkeras.config import RunConfig
from mmkeras.data.manifest import Manifest
from mmkeras.errors import UserError
from mmkeras.models.backbone_split import split_at_frozen_backbones
from mmkeras.models.builder import FROZEN_BACKBONES, pretrained_backbones
from mmkeras.models.text_backbones import freeze_pooler
from mmkeras.quantization.qat_settings import LEARNING_RATE_FACTOR, QATSettings
from mmkeras.quantization.qat_transform import calibrate_ranges, is_quantized, quantize_model
from mmkeras.quantization.run_loading import load_run
from mmkeras.runs import load_run_config
from mmkeras.training.feature_cache import cached_epochs
from mmkeras.training.job import JobResult, PreparedRun, TrainingJob
from mmkeras.training.optimizers import resolve_learning_rate
from mmkeras.training.run_setup import checked_manifests, epoch_datasets
from mmkeras.training.trainer import enable_lora
from mmkeras.training.training_loop import TrainingLoop

logger = logging.getLogger("mmkeras")


def qat_finetune(
    run_dir, data, out, *, val=None, settings: QATSettings | None = None, resume=False, columns=None,
    manifests: Sequence[Manifest] = (),
) -> JobResult:
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
        columns: `{role: column name}` of the manifests (`text`, `image`,
            `label`); `None` keeps the run's.
        manifests: `data`'s and `val`'s manifests, when the caller has read
            them already as the run reads them (the CLI does, before
            TensorFlow loads): not read, nor their skipped rows logged, again.

    Returns:
        A `JobResult` whose metrics (also in `out/metrics.json`) add
        `initial_loss` and `final_loss` (the QAT model's loss on `data`,
        without dropout or augmentation, before and after fine-tuning) to
        training's; with a validation manifest, each epoch's history has its
        `val_loss` and `val_accuracy` (reported, not used to pick weights).

    Raises:
        UserError: bad settings, manifests, labels the run does not know,
            `out` equal to `run_dir`, a lost multi-worker peer, or `resume`
            without a checkpoint made with the same arguments.
    """
    settings = settings or QATSettings()
    if Path(out).resolve() == Path(run_dir).resolve():
        raise UserError("the QAT run must go to a new folder, not the float run's", path=out)
    config = load_run_config(run_dir).replace(
        data=data,
        val=val,
        out=out,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        strategy=settings.strategy,
        checkpoint_steps=settings.checkpoint_steps,
        **{f"{role}_column": name for role, name in (columns or {}).items()},
    )
    return QATJob(run_dir, config, settings, resume=resume, manifests=manifests).run()


def adapt_as_the_float_run(model, config: RunConfig):
    """Under `--lora-rank`, new LoRA adapters on the pretrained backbones, whose own kernels stay frozen.

    A saved run holds each adapted kernel with its adapters folded in (Keras
    merges them on save) and no adapters; without new ones QAT would
    fine-tune every weight of those backbones, which the float run chose not
    to. The adapters start as LoRA's do (B zero: the model is unchanged), the
    fake quantizer sees the kernel with them folded in, as the int8 export
    ships it, and saving folds them again (docs/design.md#qat-of-every-kind-of-run).
    """
    if not config.lora_rank:
        return
    for name in pretrained_backbones(config):
        enable_lora(model.get_layer(name), config.lora_rank)


def quantized_head_data(config: RunConfig, settings: QATSettings, model, preprocessor, labels, train_manifest,
                        val_manifest):
    """`(head, train epochs, val batches)` of a calibrated QAT model whose frozen backbones' outputs are cached.

    As the float run trained with `--cache-features`: the head (the layers
    after the frozen backbones' tokens, `split_at_frozen_backbones`) trains
    on the tokens stored once by `cache_features`, here the fake-quantized
    ones, i.e. what the int8 bundle's head receives from its int8 backbones.
    The backbones then never run in training, so their activation ranges
    stay the calibrated ones (no moving average), which makes the cached
    tokens exactly the saved QAT model's and the export's; the head's ranges
    follow their moving average as before. Cached features hold no
    augmentation or backbone dropout, as in the float run. The cache's key
    adds the quantizer settings, and its weights hash holds the ranges, so
    float and quantized features never share a cache
    (docs/design.md#qat-of-every-kind-of-run).
    """
    split = split_at_frozen_backbones(model, FROZEN_BACKBONES[config.freeze])
    quantization = {
        "kind": "fake-quantized",
        **dataclasses.asdict(settings.quantizer_settings()),
        "calibration_batches": settings.calibration_batches,
    }
    logger.info("QAT trains the head on the frozen backbones' fake-quantized features, cached once")
    train_epochs, val_data = cached_epochs(
        split, config, labels, preprocessor, train_manifest, val_manifest, quantization=quantization
    )
    return split.head_model, train_epochs, val_data


class QATJob(TrainingJob):
    """`mmkeras qat`: the float run loaded, quantized and calibrated, then trained as `train` trains.

    Args:
        run_dir: the float run folder.
        config: the float run's config with QAT's data, epochs, batch size,
            strategy and checkpoint interval.
        settings: the QAT settings.
        resume: continue from the QAT run's last checkpoint.
        manifests: manifests already read (`TrainingJob`).
    """

    keeps_best_weights = False  # validation is reported, not used to pick weights
    name = "QAT"

    def __init__(
        self, run_dir, config: RunConfig, settings: QATSettings, *, resume: bool = False,
        manifests: Sequence[Manifest] = (),
    ):
        super().__init__(config, resume=resume, manifests=manifests)
        self.run_dir = Path(run_dir)
        self.settings = settings
        self.float_run = None  # the loaded float run, set by `prepare`

    def loop_config(self, strategy: tf.distribute.Strategy) -> RunConfig:
        """QAT's learning rate, and no XLA across replicas.

        With several replicas every activation quantizer gathers the replicas'
        batch min/max (an all-reduce) in the forward pass; XLA compiles that pass per replica, where
        this collective is not known to work (and on logical CPUs per-replica XLA
        cannot even reach the replicas' variables), so QAT then runs it as a graph.
        """
        learning_rate = self.settings.learning_rate
        if learning_rate is None:
            learning_rate = LEARNING_RATE_FACTOR * resolve_learning_rate(self.config)
        if strategy.num_replicas_in_sync > 1:
            return self.config.replace(learning_rate=learning_rate, jit_compile=False)
        return self.config.replace(learning_rate=learning_rate)

    def resume_settings(self, loop_config: RunConfig) -> dict:
        run_fields = RunConfig.__dataclass_fields__
        qat_only = {key: value for key, value in dataclasses.asdict(self.settings).items() if key not in run_fields}
        return {**loop_config.to_dict(), **qat_only}

    def resume_defaults(self) -> dict:
        return {**dataclasses.asdict(QATSettings()), **super().resume_defaults()}

    def prepare(self, strategy: tf.distribute.Strategy) -> PreparedRun:
        config, settings = self.config, self.settings
        logger.info("loading and quantizing %s", self.run_dir)
        with strategy.scope():  # the model's variables, quantizer ranges included, live on every replica
            run = load_run(self.run_dir)
            model = run.model
            freeze_pooler(model.get_layer("text_backbone"))
            if not is_quantized(model):
                model = quantize_model(
                    model, settings.quantizer_settings(), on_unknown=settings.unknown_layers, copy=False
                )
            adapt_as_the_float_run(model, config)
        if config.modality_balance != "none":
            logger.info("QAT trains the plain model: the %s balance heads were the float run's training aid only",
                        config.modality_balance)
        self.float_run = run
        preprocessor = run.preprocessor
        raw_train = self.read_manifest(config.data)
        # the pipeline encodes the task's label cells; the model keeps the run's labels
        labels, self.label_sets = self.task.run_labels(config, raw_train, run.labels)
        train_manifest, val_manifest, skipped = checked_manifests(
            config, raw_train, labels, preprocessor, read_manifest=self.read_manifest
        )
        self.check_rows(train_manifest, val_manifest)
        train_epochs, val_data = epoch_datasets(config, preprocessor, labels, train_manifest, val_manifest)
        logger.info("calibrating activation ranges on %d batches", settings.calibration_batches)
        # Identical in every process (same rows, same weights), so every replica gets the same ranges;
        # not augmented: the ranges are for the images the model will see.
        calibration = train_epochs.for_epoch(0, augmented=False).take(settings.calibration_batches)
        calibrate_ranges(model, (inputs for inputs, _ in calibration))
        trained_model = model
        if config.cache_features:
            trained_model, train_epochs, val_data = quantized_head_data(
                config, settings, model, preprocessor, labels, train_manifest, val_manifest
            )
        return PreparedRun(
            model=model,
            trained_model=trained_model,
            preprocessor=preprocessor,
            labels=labels,
            saved_labels=run.labels,
            train_manifest=train_manifest,
            train_epochs=train_epochs,
            val_data=val_data,
            skipped_rows=skipped,
            policy=model.dtype_policy.name,
        )

    def initial_metrics(self, prepared: PreparedRun, loop: TrainingLoop) -> dict:
        logger.info("measuring the QAT model's loss before fine-tuning")
        self.loop = loop  # final_metrics measures the same loss after it
        initial_loss, _ = loop.evaluate(prepared.train_epochs.for_epoch(0, augmented=False))
        return {"initial_loss": initial_loss}

    def final_metrics(self, prepared: PreparedRun, model) -> dict:
        """`final_loss`: the loss `initial_loss` measured (training rows, no dropout or augmentation), after
        fine-tuning; training's `loss` is the last epoch's mean with them, not comparable to `initial_loss`."""
        logger.info("measuring the QAT model's loss after fine-tuning, as before it")
        final_loss, _ = self.loop.evaluate(prepared.train_epochs.for_epoch(0, augmented=False))
        return {**super().final_metrics(prepared, model), "final_loss": final_loss}

    def run_folder_extras(self) -> dict:
        return {
            "quantization": {
                "settings": dataclasses.asdict(self.settings.quantizer_settings()),
                # so that loading the QAT run rebuilds it as it was made (a `warn` run keeps its float layers)
                "unknown_layers": self.settings.unknown_layers,
                "float_run": str(self.float_run.path),
            },
            "float_model_file": self.float_run.float_model_file,
        }
