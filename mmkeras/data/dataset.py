"""`make_dataset`: a manifest to a `tf.data.Dataset` of model inputs.

Texts are tokenized up front (they are small); images are decoded inside the
pipeline, in parallel and in order, by the preprocessor's own `load_images`,
so a batch is exactly what `MultimodalPreprocessor.__call__` returns for the
same rows. Decoded images are cached in memory as uint8 when they fit, so
later epochs only shuffle, batch and cast.
"""

import os
from functools import partial

import numpy as np
import tensorflow as tf

from mmkeras.config import AUGMENTATIONS
from mmkeras.data.augmentation import augment_photo, row_seed
from mmkeras.data.manifest import Manifest
from mmkeras.preprocessing.multimodal_preprocessor import MultimodalPreprocessor

# Cache the decoded images in memory when they take at most this much as uint8.
CACHE_LIMIT_BYTES = 1 << 30


def make_dataset(
    manifest: Manifest,
    labels: list[str] | None,
    preprocessor: MultimodalPreprocessor,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    drop_remainder: bool = False,
    cache: bool = True,
) -> tf.data.Dataset:
    """Batches of `(inputs, label)` (or `inputs` alone) for `fit`, `evaluate` or `predict`.

    Args:
        manifest: the rows, images already checked (`Manifest.validate_images`).
        labels: the class names in index order; `None` yields inputs only.
        preprocessor: the model's `MultimodalPreprocessor`.
        batch_size: rows per batch.
        shuffle: reshuffle the rows every epoch (seeded: the same seed gives
            the same sequence of orders).
        seed: the shuffle seed.
        drop_remainder: drop a last, smaller batch.
        cache: keep the decoded images in memory when they fit
            (`CACHE_LIMIT_BYTES`); `False` for a single pass.

    Returns:
        A dataset of `({"token_ids", "padding_mask", "image", "modality_mask"},
        label int32 [B])` as in the model contract.

    Example:
    >>> manifest = read_manifest("samples/train.csv")                      # doctest: +SKIP
    >>> data = make_dataset(manifest, manifest.labels(), preprocessor,
    ...                     batch_size=32, shuffle=True, seed=0)            # doctest: +SKIP
    >>> model.fit(data, epochs=3)                                          # doctest: +SKIP
    """
    columns = row_columns(manifest, labels, preprocessor)
    decode = partial(_decode_image, preprocessor=preprocessor)
    cache = cache and _fits_in_cache(manifest, preprocessor)
    dataset = tf.data.Dataset.from_tensor_slices(columns)
    if shuffle and not cache:  # shuffle cheap paths, not decoded images
        dataset = dataset.shuffle(len(manifest.rows), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache:
        dataset = dataset.cache()
        if shuffle:
            dataset = dataset.shuffle(len(manifest.rows), seed=seed, reshuffle_each_iteration=True)
    return _batches(dataset, batch_size, drop_remainder)


class EpochDatasets:
    """One dataset per epoch, in an order fixed by `(seed, epoch)` alone.

    `make_dataset` reshuffles on every pass, so epoch `e`'s order depends on
    how many passes came before; a resumed run (or a worker that joins late)
    could not reproduce it. Here `for_epoch(e)` is the same in every process
    and after a restart, and `for_epoch(e).skip(k)` continues an epoch
    exactly. Decoded images are cached once and shared by all epochs; with
    `augment="photo"` each epoch's images are then augmented (`augment_photo`)
    with seeds from `(seed, epoch, row)`, so augmentation stays exact too.

    Args:
        manifest: the rows, images already checked.
        labels: the class names in index order.
        preprocessor: the model's `MultimodalPreprocessor`.
        batch_size: rows per (global) batch; the last batch may be smaller.
        seed: the run's seed.
        augment: `none`, or `photo` (random resized crop, flip, colour jitter
            of the images that are present).

    Example:
    >>> epochs = EpochDatasets(manifest, labels, preprocessor, batch_size=32, seed=0)  # doctest: +SKIP
    >>> for inputs, label in epochs.for_epoch(3).skip(2): ...                          # doctest: +SKIP
    """

    def __init__(
        self,
        manifest: Manifest,
        labels: list[str],
        preprocessor: MultimodalPreprocessor,
        *,
        batch_size: int,
        seed: int,
        augment: str = "none",
    ):
        if augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}, got {augment!r}")
        self.num_examples = len(manifest.rows)
        self.batch_size = batch_size
        self.seed = seed
        self.augment = augment
        self._image_size = preprocessor.image_size
        self._decode = partial(_decode_image, preprocessor=preprocessor)
        self._rows = tf.data.Dataset.from_tensor_slices(row_columns(manifest, labels, preprocessor))
        self._decoded = None
        if _fits_in_cache(manifest, preprocessor):
            self._decoded = self._rows.map(self._decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            self._decoded = self._decoded.cache()

    def for_epoch(self, epoch: int, *, augmented: bool = True) -> tf.data.Dataset:
        """Batches of `(inputs, label)` for epoch `epoch` (0-based), shuffled by `(seed, epoch)`.

        Args:
            epoch: the epoch, from 0.
            augmented: apply the run's augmentation; `False` gives the images
                as the model sees them at inference (e.g. to calibrate).
        """
        seed = epoch_seed(self.seed, epoch)
        if self._decoded is not None:
            dataset = self._decoded.shuffle(self.num_examples, seed=seed, reshuffle_each_iteration=False)
        else:  # shuffle cheap paths, then decode
            dataset = self._rows.shuffle(self.num_examples, seed=seed, reshuffle_each_iteration=False)
            dataset = dataset.map(self._decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if augmented and self.augment == "photo":
            augment = partial(augment_present_image, epoch_seed=seed, image_size=self._image_size)
            dataset = dataset.map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return _batches(dataset, self.batch_size, drop_remainder=False)


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle seed of epoch `epoch` of a run seeded `seed`: the same in every process and after a restart."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] >> 1)


def row_columns(manifest: Manifest, labels: list[str] | None, preprocessor: MultimodalPreprocessor) -> dict:
    """Tokenized texts, image paths and encoded labels, one entry per row."""
    rows = manifest.rows
    token_ids, padding_mask, text_present = preprocessor.encode_texts([row.text for row in rows])
    columns = {
        "row": np.arange(len(rows), dtype=np.int64),
        "token_ids": token_ids,
        "padding_mask": padding_mask,
        "text_present": text_present,
        # File-system bytes, so any path the OS accepts survives the trip through tf.string.
        "image_path": np.asarray(
            [b"" if row.image is None else os.fsencode(row.image) for row in rows],
            object,
        ),
    }
    if labels is not None:
        columns["label"] = manifest.encode_labels(labels)
    return columns


def _fits_in_cache(manifest: Manifest, preprocessor: MultimodalPreprocessor) -> bool:
    height, width = preprocessor.image_size
    return len(manifest.rows) * height * width * 3 <= CACHE_LIMIT_BYTES


def _batches(dataset: tf.data.Dataset, batch_size: int, drop_remainder: bool) -> tf.data.Dataset:
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(model_inputs, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _decode_image(columns: dict, preprocessor: MultimodalPreprocessor) -> dict:
    """Replace `image_path` by the decoded `image` (uint8) and `image_present`."""

    def load(path: bytes) -> tuple[np.ndarray, np.ndarray]:
        pixels, present = preprocessor.load_images([os.fsdecode(path) if path else None])
        # load_image yields whole numbers in 0..255 (8-bit RGB resized by Pillow): uint8 is exact.
        return pixels[0].astype(np.uint8), present[0]

    columns = dict(columns)
    image, image_present = tf.numpy_function(
        load,
        [columns.pop("image_path")],
        [tf.uint8, tf.float32],
        stateful=False,
        name="load_image",
    )
    image.set_shape([*preprocessor.image_size, 3])
    image_present.set_shape([])
    return {**columns, "image": image, "image_present": image_present}


def augment_present_image(columns: dict, epoch_seed: int, image_size: tuple[int, int]) -> dict:
    """`augment_photo` on the row's image, seeded by (epoch seed, row); a missing image stays all zeros."""
    image = columns["image"]
    augmented = augment_photo(image, row_seed(epoch_seed, columns["row"]), image_size)
    present = columns["image_present"] > 0
    return {**columns, "image": tf.where(present, augmented, tf.cast(image, tf.float32))}


def model_inputs(batch: dict):
    """The contract's four inputs (and the labels) from a batch of columns."""
    inputs = {
        "token_ids": batch["token_ids"],
        "padding_mask": batch["padding_mask"],
        "image": tf.cast(batch["image"], tf.float32),
        "modality_mask": tf.stack([batch["text_present"], batch["image_present"]], axis=-1),
    }
    return (inputs, batch["label"]) if "label" in batch else inputs
