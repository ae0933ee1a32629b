"""The pieces of a run that training (`train`) and QAT fine-tuning (`qat_finetune`) share.

Both check their manifests the same way (and `align` too, with its task), read an epoch's batches from
`EpochDatasets` (an order fixed by the seed and the epoch alone, the same in
every worker and after a restart) and train with a `TrainingLoop` built from
the run config: the run's optimizer and schedule, class weights, gradient
accumulation, loss scaling and XLA choice. One place for each keeps the two
training paths from drifting apart.

Example:
>>> train_manifest, val_manifest, skipped = checked_manifests(
...     config, job.read_manifest(config.data), labels,
...     preprocessor, read_manifest=job.read_manifest)                     # doctest: +SKIP
>>> train_epochs, val_data = epoch_datasets(
...     config, preprocessor, labels, train_manifest, val_manifest)                   # doctest: +SKIP
>>> loop = make_loop(config, model, strategy, "float32",
...                  train_manifest.encode_labels(labels), len(labels))               # doctest: +SKIP
"""

from collections.abc import Callable

import keras
import tensorflow as tf

from mmkeras.config import RunConfig
from mmkeras.data.data_service import DataServiceEpochs
from mmkeras.data.dataset import EpochDatasets, make_dataset
from mmkeras.data.manifest import BadRow, Manifest, decoded_as
from mmkeras.models.vision_backbones import BACKBONE_NAME as VISION_BACKBONE
from mmkeras.preprocessing import MultimodalPreprocessor
from mmkeras.training.class_weights import balanced_class_weights
from mmkeras.training.optimizers import make_optimizer
from mmkeras.training.precision import with_loss_scaling
from mmkeras.training.training_loop import TrainingLoop, updates_per_epoch


def seed_everything(config: RunConfig):
    """Seed Python, NumPy and TensorFlow with `config.seed`; deterministic ops with `config.deterministic`."""
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()


def checked_manifests(
    config: RunConfig, train_manifest: Manifest, labels: list[str] | None, preprocessor: MultimodalPreprocessor, *,
    read_manifest: Callable[[str], Manifest],
) -> tuple[Manifest, Manifest | None, list[BadRow]]:
    """The training manifest and `config.val`'s, images checked (`config.on_bad_row`), and the rows skipped.

    Train, QAT and align check their manifests here, each read as its job reads them.

    Args:
        config: the run config (`val`, `on_bad_row`, `max_image_pixels`).
        train_manifest: the training manifest as read.
        labels: the class names in logit order; a training row with another
            label is a user error naming its file and line, before any
            training; a validation row with one fails or is skipped as
            `config.on_bad_row` says. `None`: the rows' labels are not
            classes (align's groups of pairs), not checked.
        preprocessor: the run's: images are checked at its size, decoded as
            it decodes them (`decoded_as`: a JPEG at its reduced scale).
        read_manifest: reads `config.val` as the job reads its manifests
            (`TrainingJob.read_manifest`: by its task, align's as true pairs,
            unless the job was given it already read).
    """
    check = {"on_bad_row": config.on_bad_row, **decoded_as(preprocessor), "max_pixels": config.max_image_pixels}
    image_size = preprocessor.image_size
    train_manifest, _ = train_manifest.validate_images(image_size, **check)
    if labels is not None:
        train_manifest.encode_labels(labels)
    skipped = list(train_manifest.skipped)
    val_manifest = None
    if config.val:
        val_manifest = read_manifest(config.val)
        if labels is not None:
            val_manifest = val_manifest.with_known_labels(labels, config.on_bad_row)
        val_manifest, _ = val_manifest.validate_images(image_size, **check)
        skipped += val_manifest.skipped
        if labels is not None:
            val_manifest.encode_labels(labels)
    return train_manifest, val_manifest, skipped


def epoch_datasets(
    config: RunConfig,
    preprocessor: MultimodalPreprocessor,
    labels: list[str],
    train_manifest: Manifest,
    val_manifest: Manifest | None,
) -> tuple[EpochDatasets, tf.data.Dataset | None]:
    """`(training epochs, validation batches or None)` of the model's inputs, `config.batch_size` rows a batch.

    Only the training epochs are augmented (`config.augment`); with `config.data_service` they are built by
    that tf.data service's workers (the same batches), the validation batches still here.
    """
    settings = {"batch_size": config.batch_size, "seed": config.seed, "augment": config.augment}
    if config.data_service:
        train_epochs = DataServiceEpochs(
            train_manifest, labels, preprocessor, service=config.data_service, **settings
        )
    else:
        train_epochs = EpochDatasets(train_manifest, labels, preprocessor, **settings)
    if val_manifest is None:
        return train_epochs, None
    val_data = make_dataset(
        val_manifest, labels, preprocessor, batch_size=config.batch_size, shuffle=False, seed=config.seed
    )
    return train_epochs, val_data


def make_loop(
    config: RunConfig, model, strategy, policy: str, label_ids, num_classes: int, balance=None, *, loss=None
) -> TrainingLoop:
    """The loop that trains `model` with the run's optimizer, class weights, accumulation and XLA choice.

    Args:
        config: the run config (`optimizer`, `learning_rate`,
            `new_layers_lr_scale`, `epochs`, `batch_size`,
            `gradient_accumulation`, `class_weight`, `jit_compile`, `remat`).
        model: the model to train, built under `strategy.scope()`.
        strategy: the tf.distribute strategy.
        policy: the Keras dtype policy the model computes in (loss scaling
            under `mixed_float16`).
        label_ids: the training rows' labels (the schedule's length and the
            balanced class weights).
        num_classes: the number of classes.
        balance: the run's `ModalityBalance` (`model` is its training model), or `None`.
        loss: the loop's loss when not classification (`TrainingLoop`'s `loss`).
    """
    total_steps = updates_per_epoch(len(label_ids), config.batch_size, config.gradient_accumulation) * config.epochs
    with strategy.scope():
        optimizer = make_optimizer(config, model, total_steps=total_steps)
    if balance is not None:
        balance.scale_updates(optimizer)
    class_weights = balanced_class_weights(label_ids, num_classes) if config.class_weight == "balanced" else None
    return TrainingLoop(
        model,
        with_loss_scaling(optimizer, policy),
        strategy=strategy,
        class_weights=class_weights,
        gradient_accumulation=config.gradient_accumulation,
        loss=loss,
        jit_compile=config.jit_compile,
        balance=balance,
        remat=VISION_BACKBONE if config.remat else None,
    )
