"""Cached backbone features: frozen backbones run once, not every epoch.

With `--freeze` and `--cache-features`, the tokens that the frozen backbones
hand to the fusion layer are computed once per dataset, stored on disk in the
feature cache folder (`--cache-dir`, default `default_cache_dir()`), and
reused every epoch, by a resumed run, and by later runs on the same data and
backbones (trying other heads or fusions then skips the backbones entirely).
Training then runs only the *head*: the layers after the cached tokens
(fusion, dropout, logits, and an unfrozen backbone if only one is frozen).
The head model is built from the same layer objects as the full model, so
training it trains the full model, which is what gets saved and exported.

Each cache is a folder named by a fingerprint of everything its features
depend on: the rows (text, image path, label, each image file's size and
modification time), the preprocessing settings (image size, filter, crop,
normalization, decoding: `MultimodalPreprocessor.get_config`) and
vocabulary, the feature model's weights, and the stored dtype. The manifest's
own path is not part of it: the same rows listed in another file reuse the
cache. Changing anything computes a new cache beside the others; a run never
deletes a cache (`mmkeras cache clear` does, `feature_cache_folders.py`).

What is stored is exactly what the head reads: the frozen backbones' output
tokens (the fusion layer's `text_tokens` / `image_tokens` arguments, not
pooled outputs or other backbone outputs), the model inputs the head still
takes (masks; token ids or uint8 pixels of an unfrozen backbone) and the
labels. Tokens are stored as float16 by default (half of float32; the effect
on accuracy is measured in docs/design.md#feature-cache-float16), written in
shards while they are computed and read back batch by batch
(`feature_shards.py`), so neither computing nor training holds the whole
cache in memory. A resumed run reads the same stored features as the run it
resumes, so resume stays exact in either dtype.

Cached features are the backbones' inference-mode outputs (no dropout inside
the frozen backbones), the usual choice for frozen feature extraction.

`mmkeras qat` of a run trained on cached features caches its own: the
fake-quantized outputs of the calibrated QAT backbones, under a key that adds
the quantizer settings (`quantization`) and whose weights include the
activation ranges, so they never mix with the float run's
(docs/design.md#qat-of-every-kind-of-run).
"""

import contextlib
import dataclasses
import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mmkeras.config import RunConfig
from mmkeras.data.dataset import epoch_seed, make_dataset
from mmkeras.data.feature_cache_folders import default_cache_dir, human_bytes, mark_used
from mmkeras.data.feature_shards import META_FILE, ShardReader, ShardWriter
from mmkeras.data.manifest import Manifest
from mmkeras.errors import UserError
from mmkeras.folder_lock import folder_lock, lock_file_of
from mmkeras.models.backbone_split import HeadSplit
from mmkeras.models.inference_function import inference_function
from mmkeras.preprocessing.multimodal_preprocessor import MultimodalPreprocessor
from mmkeras.progress import step_progress

FEATURE_DTYPES = ("float16", "float32")
FLOAT16_MAX = float(np.finfo(np.float16).max)
# How often a run waits for another process that is writing the same cache to finish.
WAIT_SECONDS = 2.0

logger = logging.getLogger("mmkeras")



class CachedFeatures:
    """The head's inputs for every row of a dataset, and the labels, read from a cache folder.

    Args:
        folder: a complete cache folder written by `cache_features`.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._reader = ShardReader(self.folder)
        meta = self._reader.meta
        self.input_names = [*meta["features"], *meta["head_inputs"]]

    @property
    def num_examples(self) -> int:
        return self._reader.rows

    @property
    def bytes(self) -> int:
        return self._reader.meta["bytes"]

    def dataset(self, *, batch_size: int, order_seed: int | None = None) -> tf.data.Dataset:
        """Batches of `(head inputs tuple, labels)`: in row order, or shuffled by `order_seed`.

        Each batch is read from the shards when the pipeline asks for it
        (`ShardReader`): memory holds the prefetched batches, not the cache.
        """
        rows = self.num_examples
        order = np.arange(rows) if order_seed is None else np.random.default_rng(order_seed).permutation(rows)
        names = [*self.input_names, "label"]
        arrays = self._reader.arrays

        def read(batch):
            picked = self._reader.read(order[batch * batch_size : (batch + 1) * batch_size])
            return tuple(picked[name] for name in names)

        def read_batch(batch):
            columns = tf.numpy_function(
                read, [batch], [tf.as_dtype(arrays[name].dtype) for name in names], stateful=False, name="read_features"
            )
            for name, column in zip(names, columns, strict=True):
                column.set_shape([None, *arrays[name].row_shape])
            *inputs, labels = columns
            return tuple(_as_float32(column) for column in inputs), labels

        dataset = tf.data.Dataset.range(-(-rows // batch_size))
        dataset = dataset.map(read_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return dataset.prefetch(tf.data.AUTOTUNE)


@dataclasses.dataclass
class CachedEpochs:
    """`EpochDatasets` for cached features: `for_epoch(e)` is shuffled by `(seed, e)` alone.

    Args:
        features: the cached training features.
        batch_size: rows per (global) batch.
        seed: the run's seed.
    """

    features: CachedFeatures
    batch_size: int
    seed: int

    @property
    def num_examples(self) -> int:
        return self.features.num_examples

    def for_epoch(self, epoch: int, *, augmented: bool = True) -> tf.data.Dataset:
        """Epoch `epoch`'s batches; `augmented` is accepted as `EpochDatasets` takes it and changes nothing:
        cached features are never augmented (`--cache-features` needs `--augment none`)."""
        return self.features.dataset(batch_size=self.batch_size, order_seed=epoch_seed(self.seed, epoch))


def cached_epochs(
    split: HeadSplit,
    config: RunConfig,
    labels: list[str],
    preprocessor: MultimodalPreprocessor,
    train_manifest: Manifest,
    val_manifest: Manifest | None,
    *,
    quantization: dict | None = None,
) -> tuple[CachedEpochs, tf.data.Dataset | None]:
    """`(training epochs, validation batches or None)` of the head's cached inputs, as `cache_features` stores
    them in `config.cache_dir` (`config.batch_size` rows a batch, `config.cache_dtype`, `quantization`).

    Example:
    >>> train_epochs, val_data = cached_epochs(split, config, labels, preprocessor, train, val)  # doctest: +SKIP
    """

    def cached(manifest):
        return cache_features(
            split, manifest, labels, preprocessor, cache_dir=config.cache_dir, batch_size=config.batch_size,
            dtype=config.cache_dtype, quantization=quantization,
        )

    train_epochs = CachedEpochs(cached(train_manifest), batch_size=config.batch_size, seed=config.seed)
    val_data = None if val_manifest is None else cached(val_manifest).dataset(batch_size=config.batch_size)
    return train_epochs, val_data


def _as_float32(column):
    """Stored float16 tokens and uint8 pixels as the float32 the head takes."""
    return tf.cast(column, tf.float32) if column.dtype in (tf.uint8, tf.float16) else column


def cache_features(
    split: HeadSplit,
    manifest: Manifest,
    labels: list[str],
    preprocessor: MultimodalPreprocessor,
    *,
    cache_dir: str | Path | None = None,
    batch_size: int,
    dtype: str = "float16",
    quantization: dict | None = None,
) -> CachedFeatures:
    """Compute the head's inputs for `manifest` once, or reuse them from `cache_dir`.

    Args:
        split: from `split_at_frozen_backbones`.
        manifest: the rows (images already checked).
        labels: class names in index order.
        preprocessor: the model's preprocessor.
        cache_dir: the cache folder (created when missing); `None` is
            `default_cache_dir()`.
        batch_size: rows per feature-model call.
        dtype: `float16` (half the size; see the module docstring) or
            `float32` (the backbones' outputs exactly).
        quantization: for the fake-quantized backbones of a QAT model, what
            the features are quantized with (`mmkeras qat` passes its
            quantizer settings); part of the cache's key and of its
            `meta.json`, so float and quantized features never share a
            cache. `None`: float features.

    Returns:
        The `CachedFeatures` of every row, in manifest order.

    Raises:
        UserError: float16 cannot hold the features (use float32), or the
            cache folder cannot be written.

    Example:
    >>> cached = cache_features(split, manifest, labels, preprocessor, batch_size=32)  # doctest: +SKIP
    >>> head_inputs, y = next(iter(cached.dataset(batch_size=32)))                     # doctest: +SKIP
    """
    if dtype not in FEATURE_DTYPES:
        raise ValueError(f"dtype must be one of {FEATURE_DTYPES}, got {dtype!r}")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = cache_dir / _fingerprint(split, manifest, labels, preprocessor, dtype, quantization)
    if _is_complete(folder):
        mark_used(folder)
        features = CachedFeatures(folder)
        logger.info("reusing the cached features of %d rows in %s (%s)", features.num_examples, folder,
                    human_bytes(features.bytes))
        return features
    with _writing(folder):
        if not _is_complete(folder):  # another process may have written it while this one waited
            shutil.rmtree(folder, ignore_errors=True)  # the shards of a killed writer, if any
            started = time.monotonic()
            meta = _compute(split, manifest, labels, preprocessor, batch_size, dtype, folder, quantization)
            logger.info("features of %d rows cached in %s (%s, %s, %.0fs)", meta["rows"], folder,
                        human_bytes(meta["bytes"]), dtype, time.monotonic() - started)
    return CachedFeatures(folder)


def _is_complete(folder: Path) -> bool:
    return (folder / META_FILE).is_file()


@contextlib.contextmanager
def _writing(folder: Path):
    """Hold `folder`'s write lock; while another process holds it (computing the same features), wait."""
    announced = False
    with contextlib.ExitStack() as stack:
        while True:
            try:
                stack.enter_context(folder_lock(folder))
                break
            except UserError:
                if not lock_file_of(folder).exists():
                    raise  # no other writer: the folder cannot be written
                if not announced:
                    logger.info("another process is computing these features (%s): waiting for it", folder)
                    announced = True
                time.sleep(WAIT_SECONDS)
        yield


def _compute(split, manifest, labels, preprocessor, batch_size, dtype, folder, quantization) -> dict:
    """Run the feature model over `manifest` and write its shards and meta into `folder`."""
    writer = ShardWriter(folder)
    # Decoded images are used once here: no in-memory image cache.
    data = make_dataset(manifest, labels, preprocessor, batch_size=batch_size, shuffle=False, seed=0, cache=False)
    done = 0
    compute_features = inference_function(split.feature_model)
    with step_progress("computing the frozen backbones' features", len(manifest.rows)) as progress:
        for inputs, label in data:
            # A compiled predict step, not an eager call: on EfficientNet-Lite0 at 224, batch 32, eager calls
            # peaked at 4.9 GB RSS against 1.4 GB (and took twice as long). A one-output model returns an
            # array, not a list: flatten either to a list.
            features = keras.tree.flatten(compute_features(inputs))
            arrays = {
                name: _stored(np.asarray(tokens), dtype)
                for name, tokens in zip(split.feature_names, features, strict=True)
            }
            for name in split.head_input_names:
                array = inputs[name].numpy()
                # Pixels are whole numbers in 0..255: uint8 keeps them exactly in a quarter of the memory.
                arrays[name] = array.astype(np.uint8) if name == "image" else array
            arrays["label"] = label.numpy()
            writer.append(arrays)
            done += len(arrays["label"])
            progress.update(done)
    details = {"manifest": str(manifest.path), "features": split.feature_names,
               "head_inputs": split.head_input_names, "dtype": dtype}
    if quantization is not None:
        details["quantization"] = quantization
    return writer.close(details)


def _stored(tokens: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "float16" and np.abs(tokens).max(initial=0.0) > FLOAT16_MAX:
        raise UserError(
            f"the frozen backbone's features reach {np.abs(tokens).max():.3g}, beyond float16's {FLOAT16_MAX:.0f}: "
            "cache them as float32 (--cache-dtype float32)"
        )
    return tokens.astype(dtype)


def _fingerprint(split, manifest, labels, preprocessor, dtype, quantization) -> str:
    digest = hashlib.sha256()
    rows = [[row.text, row.image, row.label, _file_stamp(row.image)] for row in manifest.rows]
    settings = {
        "rows": rows,
        "labels": labels,
        "preprocessor": preprocessor.get_config(),
        "vocabulary": preprocessor.tokenizer.vocabulary,
        "features": split.feature_names,
        "head_inputs": split.head_input_names,
        "dtype": dtype,
    }
    if quantization is not None:  # absent for float features, whose keys stay as they were
        settings["quantization"] = quantization
    digest.update(json.dumps(settings, ensure_ascii=False, default=str).encode())
    # The weights include a QAT model's activation ranges (its quantizers' variables).
    for weight in split.feature_model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()[:16]


def _file_stamp(path):
    if path is None:
        return None
    stat = Path(path).stat()
    return [stat.st_size, stat.st_mtime_ns]
