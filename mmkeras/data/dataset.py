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

    Returns:
        A dataset of `({"token_ids", "padding_mask", "image", "modality_mask"},
        label int32 [B])` as in the model contract.

    Example:
    >>> manifest = read_manifest("samples/train.csv")                      # doctest: +SKIP
    >>> data = make_dataset(manifest, manifest.labels(), preprocessor,
    ...                     batch_size=32, shuffle=True, seed=0)            # doctest: +SKIP
    >>> model.fit(data, epochs=3)                                          # doctest: +SKIP
    """
    rows = manifest.rows
    token_ids, padding_mask, text_present = preprocessor.encode_texts([row.text for row in rows])
    columns = {
        "token_ids": token_ids,
        "padding_mask": padding_mask,
        "text_present": text_present,
        # File-system bytes, so any path the OS accepts survives the trip through tf.string.
        "image_path": np.asarray([b"" if row.image is None else os.fsencode(row.image) for row in rows], object),
    }
    if labels is not None:
        columns["label"] = manifest.encode_labels(labels)
    height, width = preprocessor.image_size
    cache = len(rows) * height * width * 3 <= CACHE_LIMIT_BYTES

    dataset = tf.data.Dataset.from_tensor_slices(columns)
    if shuffle and not cache:  # shuffle cheap paths, not decoded images
        dataset = dataset.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(
        partial(_decode_image, preprocessor=preprocessor), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    if cache:
        dataset = dataset.cache()
        if shuffle:
            dataset = dataset.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(_model_inputs, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _decode_image(columns: dict, preprocessor: MultimodalPreprocessor) -> dict:
    """Replace `image_path` by the decoded `image` (uint8) and `image_present`."""

    def load(path: bytes) -> tuple[np.ndarray, np.ndarray]:
        pixels, present = preprocessor.load_images([os.fsdecode(path) if path else None])
        # load_image yields whole numbers in 0..255 (8-bit RGB resized by Pillow): uint8 is exact.
        return pixels[0].astype(np.uint8), present[0]

    columns = dict(columns)
    image, image_present = tf.numpy_function(
        load, [columns.pop("image_path")], [tf.uint8, tf.float32], stateful=False, name="load_image"
    )
    image.set_shape([*preprocessor.image_size, 3])
    image_present.set_shape([])
    return {**columns, "image": image, "image_present": image_present}


def _model_inputs(batch: dict):
    """The contract's four inputs (and the labels) from a batch of columns."""
    inputs = {
        "token_ids": batch["token_ids"],
        "padding_mask": batch["padding_mask"],
        "image": tf.cast(batch["image"], tf.float32),
        "modality_mask": tf.stack([batch["text_present"], batch["image_present"]], axis=-1),
    }
    return (inputs, batch["label"]) if "label" in batch else inputs
