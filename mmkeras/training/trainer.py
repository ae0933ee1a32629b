"""`train`: from a RunConfig to a run folder.

Reads and checks the manifests, builds the model under the run's
tf.distribute strategy, trains it with mmkeras' own distributed loop
(`TrainingLoop` + `fit`: XLA where every layer supports it, exact resume
checkpoints, multi-worker), keeps the best weights by validation loss, and
writes the run folder (on the chief only, under multi-worker training).
"""

import logging
from collections.abc import Sequence

import keras
import tensorflow as tf

from mmkeras.config import RunConfig
from mmkeras.data.manifest import Manifest
from mmkeras.errors import UserError
from mmkeras.models.backbone_split import split_at_frozen_backbones
from mmkeras.models.builder import FROZEN_BACKBONES, build_model, pretrained_backbones
from mmkeras.training.aligned_start import aligned_config, copy_aligned_layers, load_aligned_start
from mmkeras.training.feature_cache import cached_epochs
from mmkeras.training.job import JobResult, PreparedRun, TrainingJob
from mmkeras.training.modality_balance import ModalityBalance
from mmkeras.training.precision import dtype_policy, float32_copy, resolve_policy
from mmkeras.training.run_setup import checked_manifests, epoch_datasets

logger = logging.getLogger("mmkeras")


def apply_freeze(model: keras.Model, freeze: str):
    """Freeze the backbones named by `--freeze` (`none`, `text`, `vision`, `both`)."""
    for name in FROZEN_BACKBONES[freeze]:
        model.get_layer(name).trainable = False


def train(config: RunConfig, *, resume: bool = False, manifests: Sequence[Manifest] = ()) -> JobResult:
    """Train a multimodal classifier as `config` says and write its run folder.

    Under `multi-worker`, start it on every worker with the same arguments
    and `TF_CONFIG`; only the chief writes `config.out`.

    Args:
        config: the run config; `data` and `out` are required.
        resume: continue the run in `config.out` from its last checkpoint
            (the same settings as the interrupted run).
        manifests: `config.data`'s and `config.val`'s manifests, when the
            caller has read them already as the run reads them (the CLI
            does, before TensorFlow loads): not read, nor their skipped
            rows logged, again.

    Example:
    >>> result = train(RunConfig(data="samples/train.csv", val="samples/val.csv",
    ...                          out="runs/demo", epochs=3))  # doctest: +SKIP
    >>> result.metrics["val_accuracy"]  # doctest: +SKIP
    0.93
    """
    if not config.data or not config.out:
        raise UserError("training needs a training manifest (--data) and a run folder (--out)")
    if config.init_from:
        config = aligned_config(config)
    return TrainJob(config, resume=resume, manifests=manifests).run()


class TrainJob(TrainingJob):
    """`mmkeras train`: a new model from `build_model`, frozen or LoRA backbones, cached features.

    Args:
        config: the run config.
        resume: continue from the run's last checkpoint.
    """

    def prepare(self, strategy: tf.distribute.Strategy) -> PreparedRun:
        config, task = self.config, self.task
        raw_train = self.read_manifest(config.data)
        # labels: the label cells the pipeline encodes; classes: the model's labels (the same but for label sets)
        labels, classes = task.training_labels(config, raw_train)
        self.label_sets = task.label_sets(labels, classes)
        if len(classes) < 2:
            raise UserError(f"a classifier needs at least 2 labels, found {classes}", path=config.data)
        head = task.head(classes, config)
        policy = resolve_policy(config.mixed_precision)
        logger.info("building the model (%s text, %s vision, %s fusion)",
                    config.text_backbone, config.vision_backbone, config.fusion)
        with strategy.scope(), dtype_policy(policy):
            aligned = load_aligned_start(config.init_from) if config.init_from else None
            model, preprocessor = build_model(
                config.text_backbone,
                config.vision_backbone,
                num_classes=len(classes),
                fusion=config.fusion,
                sequence_length=config.sequence_length,
                fusion_dim=config.fusion_dim,
                num_heads=config.num_heads,
                dropout=config.dropout,
                modality_dropout=config.modality_dropout,
                texts=[row.text for row in raw_train.rows if row.text],
                seed=config.seed,
                head=head,
                backbones=aligned and aligned.backbones,
                image_size=config.image_size,
            )
            if aligned:
                copy_aligned_layers(model, aligned.model)
        preprocessor.max_image_pixels = config.max_image_pixels  # the bundle's runtime keeps the limit
        train_manifest, val_manifest, skipped = checked_manifests(
            config, raw_train, labels, preprocessor, read_manifest=self.read_manifest
        )
        task.check_labels_kept(train_manifest, labels)
        self.check_rows(train_manifest, val_manifest)
        with strategy.scope():
            prepare_backbones(model, config)
        trained_model, train_epochs, val_data = _training_data(
            config, model, preprocessor, labels, train_manifest, val_manifest
        )
        balance = None
        if config.modality_balance != "none":
            with strategy.scope():
                balance = ModalityBalance(config.modality_balance, model, len(labels), seed=config.seed,
                                          aux_loss_weight=config.aux_loss_weight)
            trained_model = balance.training_model
        return PreparedRun(
            model=model,
            trained_model=trained_model,
            preprocessor=preprocessor,
            labels=labels,
            saved_labels=classes,
            train_manifest=train_manifest,
            train_epochs=train_epochs,
            val_data=val_data,
            skipped_rows=skipped,
            policy=policy,
            balance=balance,
        )

    def initial_metrics(self, prepared: PreparedRun, loop) -> dict:
        texts = [row.text for row in prepared.train_manifest.rows]
        truncated = prepared.preprocessor.tokenizer.count_truncated(texts)
        if truncated:
            logger.info(
                "%d of %d training texts are longer than sequence_length %d tokens and were cut",
                truncated, len(texts), prepared.preprocessor.sequence_length,
            )
        return {"texts_truncated": truncated}

    def final_model(self, prepared: PreparedRun) -> keras.Model:
        # A run folder holds the float32 model: mixed precision is how a run trains, not what it exports.
        return prepared.model if prepared.policy == "float32" else float32_copy(prepared.model)


def prepare_backbones(model: keras.Model, config: RunConfig):
    """Freeze the backbones `--freeze` names, and put LoRA on the pretrained ones with `--lora-rank`.

    A random backbone (`tiny`, ...) has no pretrained weights for LoRA to
    keep: adapters on frozen random weights would learn little, so it trains
    fully, next to the adapters of the pretrained one (unless `--freeze`
    names it).
    """
    apply_freeze(model, config.freeze)
    if not config.lora_rank:
        return
    pretrained = pretrained_backbones(config)
    if not pretrained:
        logger.warning("--lora-rank: no pretrained backbone to adapt; the random backbones train fully")
    for name in pretrained:
        enable_lora(model.get_layer(name), config.lora_rank)


def _training_data(config: RunConfig, model, preprocessor, labels, train_manifest, val_manifest):
    """`(trained model, train epochs, val dataset)`: the full model on the manifests, or with
    `--cache-features` the head (`split_at_frozen_backbones`) on the frozen backbones' cached tokens."""
    if not config.cache_features:
        return model, *epoch_datasets(config, preprocessor, labels, train_manifest, val_manifest)
    split = split_at_frozen_backbones(model, FROZEN_BACKBONES[config.freeze])
    return split.head_model, *cached_epochs(split, config, labels, preprocessor, train_manifest, val_manifest)


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
