"""`TrainingJob`: the one skeleton that `mmkeras train` and `mmkeras qat` run.

A job sets up the tf.distribute strategy, checks `--resume` against the
interrupted run's checkpoint (its settings, and once the data is read, its
rows: `mmkeras.data.rows_fingerprint`), seeds, lets its subclass build the model and
the data (`prepare`: the only step train and QAT do differently), trains with
`TrainingLoop` + `fit` (exact resume checkpoints, early stopping where the
job keeps the best weights), and writes the run folder on the chief. Both
return a `JobResult`.

Example:
>>> result = TrainJob(config).run()             # doctest: +SKIP
>>> result.metrics["val_accuracy"]              # doctest: +SKIP
0.93
"""

import contextlib
import dataclasses
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import keras
import tensorflow as tf

from mmkeras.config import RunConfig
from mmkeras.data.manifest import BadRow, Manifest, find_manifest
from mmkeras.data.rows_fingerprint import rows_record
from mmkeras.evaluation.report import refresh_report
from mmkeras.folder_lock import folder_lock
from mmkeras.peak_memory import peak_memory_bytes
from mmkeras.preprocessing import MultimodalPreprocessor
from mmkeras.runs import check_run_output, save_run
from mmkeras.tasks.registry import get_task
from mmkeras.tasks.task import Task
from mmkeras.training.checkpoints import (
    Checkpoint,
    Checkpoints,
    TrainingState,
    check_same_rows,
    checkpoint_to_resume,
    restore,
)
from mmkeras.training.epoch_log import EpochLog
from mmkeras.training.fit import fit
from mmkeras.training.run_setup import make_loop, seed_everything
from mmkeras.training.strategy import make_strategy, worker_session
from mmkeras.training.training_loop import TrainingLoop

logger = logging.getLogger("mmkeras")

RESTART_HINT = "restart every worker with the same flags and --resume to continue from the last checkpoint"


@dataclasses.dataclass
class JobResult:
    """What `train` and `qat_finetune` return.

    Args:
        run_dir: the run folder written.
        metrics: the final figures (the keys `--json` prints).
        history: per-epoch metrics.
        model: the trained Keras model (best validation weights where the
            job keeps them).
        is_chief: whether this process wrote the run folder (false on the
            other workers of a multi-worker run).
    """

    run_dir: Path
    metrics: dict
    history: dict
    model: keras.Model
    is_chief: bool = True


@dataclasses.dataclass
class PreparedRun:
    """What a job's `prepare` builds: the model, its data and what the run folder needs.

    Args:
        model: the model the run folder will hold.
        trained_model: what the loop trains: `model`, or the part of it after
            frozen backbones whose outputs are cached.
        preprocessor: the preprocessor of `model`.
        labels: class names in logit order.
        train_manifest: the checked training rows.
        train_epochs: `for_epoch(epoch)` batches (`EpochDatasets` or cached features).
        val_data: validation batches, or `None`.
        skipped_rows: rows dropped by `--on-bad-row skip` (training and validation).
        policy: the Keras dtype policy the model computes in.
        balance: the `ModalityBalance` under `--modality-balance` (then
            `trained_model` is its training model), else `None`.
        saved_labels: the class names the run folder records, when not
            `labels` (an align run trains on row groups, not classes).
    """

    model: keras.Model
    trained_model: keras.Model
    preprocessor: MultimodalPreprocessor
    labels: list[str]
    train_manifest: Manifest
    train_epochs: object
    val_data: tf.data.Dataset | None
    skipped_rows: list[BadRow]
    policy: str = "float32"
    balance: object = None
    saved_labels: list[str] | None = None


class TrainingJob:
    """The steps every training job takes; subclasses say how the model is built and saved.

    Args:
        config: the run config (`data` and `out` are required; paths are
            made absolute, because export and qat may run from another folder).
        resume: continue the run in `config.out` from its newest checkpoint,
            made with the same settings.
        manifests: manifests of the run already read as its task reads them
            (the CLI's check before TensorFlow loads), used instead of
            reading their files again (`read_manifest`): each bad row is
            then logged once.

    Subclasses implement `prepare`, and may override `loop_config`,
    `resume_settings`, `training_loss`, `initial_metrics`, `final_metrics`,
    `final_model` and `run_folder_extras`. What differs by task (`config.task`,
    or the job's own `task_name`) the job asks its `task` (`mmkeras.tasks`).
    """

    # Whether validation picks the weights kept (early stopping, best epoch) or only reports.
    keeps_best_weights = True
    name = "training"
    # The task of a job that is not `config.task`'s (align); `None`: `config.task`.
    task_name = None
    # A task whose label cells are label sets (`Task.label_sets`): [label cells, labels] 0/1, which labels each
    # distinct label cell (the class the data pipeline encodes) holds; `prepare` sets it. `None`: one label per row.
    label_sets = None

    def __init__(self, config: RunConfig, *, resume: bool = False, manifests: Sequence[Manifest] = ()):
        paths = {key: getattr(config, key) for key in ("data", "val", "out", "init_from")}
        self.config = config.replace(**{key: str(Path(path).resolve()) for key, path in paths.items() if path})
        self.resume = resume
        self.manifests = list(manifests)
        # The checkpoint `--resume` continues from (`_run` sets it before `prepare`), and the fingerprints of the
        # rows this start trains on (`check_rows` sets them), which a new run's checkpoints keep.
        self.resumed: Checkpoint | None = None
        self.rows: dict = {}

    def read_manifest(self, path) -> Manifest:
        """The manifest at `path`: one given to the job already read (`manifests`), else read by the job's task."""
        return find_manifest(self.manifests, path) or self.task.read_manifest(path, self.config)

    def check_rows(self, train_manifest: Manifest, val_manifest: Manifest | None):
        """Keep the checked rows' fingerprints, and refuse a `--resume` whose rows changed since the run began.

        `prepare` calls it as soon as its manifests are checked: before the
        costly part (the feature cache, QAT's calibration), so a refused
        resume costs only the reading. Computed once a start (0.6-1.0 s for
        100,000 rows), of the checked rows: a row skipped under
        `--on-bad-row skip` counts as changed.

        Args:
            train_manifest: the checked training rows.
            val_manifest: the checked validation rows, or `None`.
        """
        manifests = {"data": train_manifest, "val": val_manifest}
        self.rows = {key: rows_record(manifest) for key, manifest in manifests.items() if manifest is not None}
        if self.resumed is not None:
            check_same_rows(self.resumed, self.rows, {"data": self.config.data, "val": self.config.val})

    @property
    def task(self) -> Task:
        """The job's `Task`: its labels, head, loss and validation figures."""
        return get_task(self.task_name or self.config.task)

    # -- what subclasses define ---------------------------------------------------------------

    def prepare(self, strategy: tf.distribute.Strategy) -> PreparedRun:
        """Build (or load) the model under `strategy`, and read and check the data.

        Calls `check_rows` as soon as the manifests are checked, before
        anything costly is done with them.
        """
        raise NotImplementedError

    def run_folder_extras(self) -> dict:
        """More `save_run` arguments for this job's run folder (a QAT run's quantization record)."""
        return {}

    def loop_config(self, strategy: tf.distribute.Strategy) -> RunConfig:
        """The config the training loop runs with (optimizer, schedule, XLA)."""
        return self.config

    def resume_settings(self, loop_config: RunConfig) -> dict:
        """What a resumed process must share with the interrupted one (checked against the checkpoint)."""
        return loop_config.to_dict()

    def resume_defaults(self) -> dict:
        """Each of `resume_settings`' defaults, for the settings a checkpoint of an older mmkeras lacks."""
        return RunConfig().to_dict()

    def training_loss(self):
        """The loss the loop minimises (see `TrainingLoop`'s `loss`): the task's (`Task.loss`); `None`:
        classification cross-entropy."""
        return self.task.loss(self.label_sets)

    def final_metrics(self, prepared: PreparedRun, model: keras.Model) -> dict:
        """Figures of the final model added to the run's metrics (an align run's retrieval recall).

        The task's validation figures (`Task.validation_figures`; a multilabel job's tuned thresholds),
        scored with the trained model, which the validation batches feed (the head, on cached features).
        """
        labels = prepared.labels if prepared.saved_labels is None else prepared.saved_labels
        return self.task.validation_figures(prepared.trained_model, prepared.val_data, self.label_sets, labels)

    def initial_metrics(self, prepared: PreparedRun, loop: TrainingLoop) -> dict:
        """Figures measured before the first update (reported with the final ones)."""
        return {}

    def final_model(self, prepared: PreparedRun) -> keras.Model:
        """The model to save and return once trained."""
        return prepared.model

    # -- the skeleton -------------------------------------------------------------------------

    def run(self) -> JobResult:
        """Run the job on this process (under multi-worker, every worker runs it with the same arguments)."""
        # First: MultiWorkerMirroredStrategy must be set up before any other TensorFlow work.
        strategy = make_strategy(self.config.strategy)
        with worker_session(strategy, restart_hint=RESTART_HINT) as chief:
            # Only the chief writes --out, so only the chief holds its lock (workers share the path).
            with folder_lock(self.config.out) if chief else contextlib.nullcontext():
                if chief and check_run_output(self.config.out):
                    logger.info("the run in %s will be replaced when this one is saved", self.config.out)
                return self._run(strategy, chief)

    def _run(self, strategy: tf.distribute.Strategy, chief: bool) -> JobResult:
        config = self.config
        loop_config = self.loop_config(strategy)
        settings = self.resume_settings(loop_config)
        checkpoints = Checkpoints(config.out, writer=chief)
        resumed = self.resumed = (
            checkpoint_to_resume(checkpoints, settings, self.resume_defaults()) if self.resume else None
        )
        seed_everything(config)
        prepared = self.prepare(strategy)  # calls `check_rows`
        labels = prepared.labels
        label_ids = prepared.train_manifest.encode_labels(labels)
        loop = make_loop(
            loop_config,
            prepared.trained_model,
            strategy,
            prepared.policy,
            label_ids,
            len(labels),
            prepared.balance,
            loss=self.training_loss(),
        )
        metrics = self.initial_metrics(prepared, loop)
        best_weights = None
        if resumed is None:
            checkpoints.clear()
        else:
            best_weights = restore(resumed, prepared.trained_model.variables, loop.optimizer.variables)
        model = prepared.model
        logger.info(
            "%s on %d rows (%d classes), %d trainable of %d parameters, %d replica(s)%s",
            self.name,
            len(prepared.train_manifest.rows),
            len(labels),
            count_params(model.trainable_weights),
            model.count_params(),
            strategy.num_replicas_in_sync,
            ", XLA" if loop.jit_compile else "",
        )
        state = fit(
            loop,
            prepared.train_epochs,
            prepared.val_data,
            epochs=config.epochs,
            batch_size=config.batch_size,
            patience=config.early_stopping_patience if self.keeps_best_weights else 0,
            checkpoints=checkpoints,
            checkpoint_steps=config.checkpoint_steps,
            state=TrainingState(config=settings, rows=self.rows) if resumed is None else resumed.state,
            best_weights=best_weights,
            keep_best=self.keeps_best_weights,
            on_epoch_end=EpochLog(config.out) if chief else None,
            figure_name=self.task.figure_name,
        )
        metrics.update(
            loss=state.history["loss"][-1],
            val_loss=None,
            val_accuracy=None,
            epochs_completed=len(state.history["loss"]),
            epoch_seconds=state.epoch_seconds,
            trainable_params=count_params(model.trainable_weights),
            total_params=int(model.count_params()),
            bad_rows_skipped=len(prepared.skipped_rows),
            kept_epoch=state.best_epoch,
            stopped_early=state.stopped_early,
        )
        if prepared.val_data is not None:
            logger.info("evaluating the final weights on the validation rows")
            # With best-weight keeping: the kept (best) weights' figures, not the last epoch's.
            metrics["val_loss"], metrics["val_accuracy"] = loop.evaluate(prepared.val_data)
        model = self.final_model(prepared)
        metrics.update(self.final_metrics(prepared, model))
        metrics["peak_memory_bytes"] = peak_memory_bytes()
        if chief:
            save_run(
                config.out,
                model=model,
                preprocessor=prepared.preprocessor,
                labels=labels if prepared.saved_labels is None else prepared.saved_labels,
                config=config,
                history=state.history,
                metrics=metrics,
                skipped_rows=prepared.skipped_rows,
                **self.run_folder_extras(),
            )
            checkpoints.clear()
            logger.info("run saved to %s", config.out)
            refresh_report(config.out)
        return JobResult(run_dir=Path(config.out), metrics=metrics, history=state.history, model=model, is_chief=chief)


def count_params(weights) -> int:
    return int(sum(math.prod(weight.shape) for weight in weights))
