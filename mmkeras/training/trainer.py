"""`train`: from a RunConfig to a run folder.

Reads and checks the manifests, builds the model under the run's
tf.distribute strategy, trains it with mmkeras' own distributed loop
(`TrainingLoop` + `fit`: XLA where every layer supports it, exact resume
checkpoints, multi-worker), keeps the best weights by validation loss, and
writes the run folder (on the chief only, under multi-worker training).
"""

import dataclasses
import logging
import math
from pathlib import Path

import keras
import tensorflow as tf

from mmkeras.config import RunConfig
from mmkeras.data.manifest import read_manifest
from mmkeras.errors import UserError
from mmkeras.models.builder import FROZEN_BACKBONES, build_model
from mmkeras.training.checkpoints import Checkpoints, TrainingState, checkpoint_to_resume, restore
from mmkeras.training.feature_cache import CachedEpochs, cache_features, default_cache_dir, split_at_frozen_backbones
from mmkeras.training.fit import fit
from mmkeras.training.precision import dtype_policy, float32_copy, resolve_policy
from mmkeras.runs import save_run
from mmkeras.training.run_setup import checked_manifests, epoch_datasets, make_loop, seed_everything
from mmkeras.training.strategy import make_strategy, worker_session

logger = logging.getLogger("mmkeras")


@dataclasses.dataclass
class TrainResult:
    """What `train` returns.

    Args:
        run_dir: the run folder written.
        metrics: the final figures (the keys `mmkeras train --json` prints).
        history: per-epoch metrics.
        model: the trained Keras model (best validation weights).
        is_chief: whether this process wrote the run folder (false on the
            other workers of a multi-worker run).
    """

    run_dir: Path
    metrics: dict
    history: dict
    model: keras.Model
    is_chief: bool = True


def apply_freeze(model: keras.Model, freeze: str):
    """Freeze the backbones named by `--freeze` (`none`, `text`, `vision`, `both`)."""
    for name in FROZEN_BACKBONES[freeze]:
        model.get_layer(name).trainable = False


def train(config: RunConfig) -> TrainResult:
    """Train a multimodal classifier as `config` says and write its run folder.

    Args:
        config: the run config; `data` and `out` are required.

    Example:
    >>> result = train(RunConfig(data="samples/train.csv", val="samples/val.csv",
    ...                          out="runs/demo", epochs=3))  # doctest: +SKIP
    >>> result.metrics["val_accuracy"]  # doctest: +SKIP
    0.93
    """
    if not config.data or not config.out:
        raise UserError("training needs a training manifest (--data) and a run folder (--out)")
    # Absolute paths in the saved config: export and qat may run from another folder.
    paths = {key: getattr(config, key) for key in ("data", "val", "out")}
    config = config.replace(**{key: str(Path(path).resolve()) for key, path in paths.items() if path})
    # First: MultiWorkerMirroredStrategy must be set up before any other TensorFlow work.
    strategy = make_strategy(config.strategy)
    restart_hint = "restart every worker with the same flags and --resume to continue from the last checkpoint"
    with worker_session(strategy, restart_hint=restart_hint) as chief:
        return _train(config, strategy, chief)


def _train(config: RunConfig, strategy: tf.distribute.Strategy, chief: bool) -> TrainResult:
    checkpoints = Checkpoints(config.out, writer=chief)
    resumed = checkpoint_to_resume(checkpoints, config.to_dict()) if config.resume else None
    seed_everything(config)
    raw_train = read_manifest(config.data)
    labels = raw_train.labels()
    if len(labels) < 2:
        raise UserError(f"a classifier needs at least 2 labels, found {labels}", path=config.data)
    policy = resolve_policy(config.mixed_precision)
    with strategy.scope(), dtype_policy(policy):
        model, preprocessor = build_model(
            config.text_backbone,
            config.vision_backbone,
            num_classes=len(labels),
            fusion=config.fusion,
            sequence_length=config.sequence_length,
            fusion_dim=config.fusion_dim,
            num_heads=config.num_heads,
            dropout=config.dropout,
            modality_dropout=config.modality_dropout,
            texts=[row.text for row in raw_train.rows if row.text],
            seed=config.seed,
        )
    train_manifest, val_manifest, skipped = checked_manifests(config, raw_train, labels, preprocessor.image_size)
    with strategy.scope():
        prepare_backbones(model, config)
    trained_model, train_epochs, val_data = _training_data(
        config, model, preprocessor, labels, train_manifest, val_manifest
    )
    loop = make_loop(config, trained_model, strategy, policy, train_manifest.encode_labels(labels), len(labels))
    best_weights = None
    if resumed is not None:
        best_weights = restore(resumed, trained_model.variables, loop.optimizer.variables)
    else:
        checkpoints.clear()
    logger.info(
        "training on %d rows (%d classes), %d trainable of %d parameters, %d replica(s)%s",
        len(train_manifest.rows),
        len(labels),
        count_params(model.trainable_weights),
        model.count_params(),
        strategy.num_replicas_in_sync,
        ", XLA" if loop.jit_compile else "",
    )
    state = TrainingState(config=config.to_dict()) if resumed is None else resumed.state
    state = fit(
        loop,
        train_epochs,
        val_data,
        epochs=config.epochs,
        batch_size=config.batch_size,
        patience=config.early_stopping_patience,
        checkpoints=checkpoints,
        checkpoint_steps=config.checkpoint_steps,
        state=state,
        best_weights=best_weights,
    )
    metrics = {
        "loss": state.history["loss"][-1],
        "val_loss": None,
        "val_accuracy": None,
        "epochs_completed": len(state.history["loss"]),
        "epoch_seconds": state.epoch_seconds,
        "trainable_params": count_params(model.trainable_weights),
        "total_params": int(model.count_params()),
        "bad_rows_skipped": skipped,
    }
    if val_data is not None:
        # The kept (best) weights' figures, not the last epoch's.
        metrics["val_loss"], metrics["val_accuracy"] = loop.evaluate(val_data)
    if policy != "float32":
        model = float32_copy(model)
    if chief:
        save_run(
            config.out,
            model=model,
            preprocessor=preprocessor,
            labels=labels,
            config=config,
            history=state.history,
            metrics=metrics,
        )
        checkpoints.clear()
        logger.info("run saved to %s", config.out)
    return TrainResult(run_dir=Path(config.out), metrics=metrics, history=state.history, model=model, is_chief=chief)


def prepare_backbones(model: keras.Model, config: RunConfig):
    """Freeze the backbones `--freeze` names, and put LoRA on them with `--lora-rank`."""
    apply_freeze(model, config.freeze)
    if config.lora_rank:
        for name in ("text_backbone", "vision_backbone"):
            enable_lora(model.get_layer(name), config.lora_rank)


def _training_data(config: RunConfig, model, preprocessor, labels, train_manifest, val_manifest):
    """`(trained model, train epochs, val dataset)`: the full model on the manifests, or with
    `--cache-features` the head (`split_at_frozen_backbones`) on the frozen backbones' cached tokens."""
    if not config.cache_features:
        return model, *epoch_datasets(config, preprocessor, labels, train_manifest, val_manifest)
    split = split_at_frozen_backbones(model, FROZEN_BACKBONES[config.freeze])
    logger.info("frozen backbones' features cached in %s", default_cache_dir())

    def cached(manifest):
        return cache_features(
            split, manifest, labels, preprocessor, cache_dir=default_cache_dir(), batch_size=config.batch_size
        )

    train_epochs = CachedEpochs(cached(train_manifest), batch_size=config.batch_size, seed=config.seed)
    val_data = None if val_manifest is None else cached(val_manifest).dataset(batch_size=config.batch_size)
    return split.head_model, train_epochs, val_data


def enable_lora(backbone: keras.Model, rank: int):
    """LoRA on a keras-hub backbone (its own `enable_lora`); others are a user error."""
    if not hasattr(backbone, "enable_lora"):
        raise UserError(f"--lora-rank needs keras-hub backbones; {backbone.name} has no LoRA support")
    backbone.enable_lora(rank)
    if not backbone.trainable_weights:
        logger.warning(
            "%s has no layers LoRA adapts (keras-hub adapts attention query/value layers): it stays frozen",
            backbone.name,
        )


def count_params(weights) -> int:
    return int(sum(math.prod(weight.shape) for weight in weights))
