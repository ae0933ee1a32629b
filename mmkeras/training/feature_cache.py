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

from mmkeras import compat
from mmkeras.data.dataset import epoch_seed
from mmkeras.data.dataset import make_dataset
from mmkeras.data.manifest import Manifest
from mmkeras.errors import UserError
from mmkeras.folder_lock import folder_lock, lock_file_of
from mmkeras.preprocessing.multimodal_preprocessor import MultimodalPreprocessor
from mmkeras.progress import step_progress
from mmkeras.training.feature_cache_folders import default_cache_dir, human_bytes, mark_used
from mmkeras.training.feature_shards import META_FILE, ShardReader, ShardWriter

FEATURE_DTYPES = ("float16", "float32")
FLOAT16_MAX = float(np.finfo(np.float16).max)
# How often a run waits for another process that is writing the same cache to finish.
WAIT_SECONDS = 2.0

logger = logging.getLogger("mmkeras")



@dataclasses.dataclass(frozen=True)
class CacheableBackbone:
    """Where a backbone's tokens enter the fusion, and what they replace.

    Args:
        feature_name: the name of its cached tokens.
        fusion_argument: the tokens' position among the fusion layer's call
            arguments `(text_tokens, text_mask, image_tokens, modality_mask)`.
        model_input: the model input only this backbone consumes.
    """

    feature_name: str
    fusion_argument: int
    model_input: str


CACHEABLE_BACKBONES = {
    "text_backbone": CacheableBackbone("text_tokens", 0, "token_ids"),
    "vision_backbone": CacheableBackbone("image_tokens", 2, "image"),
}


@dataclasses.dataclass
class HeadSplit:
    """A model split where the frozen backbones' tokens enter the fusion.

    Args:
        feature_model: model inputs -> the cached tokens, in `feature_names` order.
        head_model: `[*cached tokens, *head_input_names inputs]` -> logits,
            sharing its layers (and so its weights) with the full model.
        feature_names: names of the cached tokens (`text_tokens`, `image_tokens`).
        head_input_names: the model inputs the head still takes.
    """

    feature_model: keras.Model
    head_model: keras.Model
    feature_names: list[str]
    head_input_names: list[str]


def split_at_frozen_backbones(model: keras.Model, frozen: tuple[str, ...]) -> HeadSplit:
    """Split a `build_model` model into a feature model and a head model.

    Args:
        model: a model from `build_model` (a layer named `fusion`).
        frozen: backbone layer names whose tokens are cached
            (`text_backbone`, `vision_backbone`).

    Returns:
        A `HeadSplit`.

    Example:
    >>> split = split_at_frozen_backbones(model, ("text_backbone", "vision_backbone"))  # doctest: +SKIP
    >>> split.head_input_names  # doctest: +SKIP
    ['padding_mask', 'modality_mask']
    """
    if not frozen:
        raise ValueError("nothing to cache: name at least one frozen backbone")
    backbones = [CACHEABLE_BACKBONES[name] for name in frozen]
    fusion_arguments = compat.graph_call_arguments(model.get_layer("fusion"))
    tokens = [fusion_arguments[backbone.fusion_argument] for backbone in backbones]
    skipped_inputs = {backbone.model_input for backbone in backbones}
    head_input_names = [name for name in model.input if name not in skipped_inputs]
    head_inputs = [*tokens, *(model.input[name] for name in head_input_names)]
    return HeadSplit(
        feature_model=keras.Model(model.input, tokens, name="cached_features"),
        head_model=_submodel(model, head_inputs),
        feature_names=[backbone.feature_name for backbone in backbones],
        head_input_names=head_input_names,
    )


def _submodel(model: keras.Model, inputs: list) -> keras.Model:
    """`keras.Model(inputs, model.output)` that leaves `model` saveable.

    Building a model from intermediate tensors re-links the model's own
    `keras.Input` tensors to new graph nodes (Keras 3.15), after which
    `model.get_config()` fails ("could not find node key"): put their
    history back.
    """
    with compat.keras_histories_kept(model.inputs):
        return keras.Model(inputs, model.output, name="head")


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

    def for_epoch(self, epoch: int) -> tf.data.Dataset:
        return self.features.dataset(batch_size=self.batch_size, order_seed=epoch_seed(self.seed, epoch))


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
    folder = cache_dir / _fingerprint(split, manifest, labels, preprocessor, dtype)
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
            meta = _compute(split, manifest, labels, preprocessor, batch_size, dtype, folder)
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


def _compute(split, manifest, labels, preprocessor, batch_size, dtype, folder) -> dict:
    """Run the feature model over `manifest` and write its shards and meta into `folder`."""
    writer = ShardWriter(folder)
    # Decoded images are used once here: no in-memory image cache.
    data = make_dataset(manifest, labels, preprocessor, batch_size=batch_size, shuffle=False, seed=0, cache=False)
    done = 0
    with step_progress("computing the frozen backbones' features", len(manifest.rows)) as progress:
        for inputs, label in data:
            # A compiled predict step, not an eager call: on EfficientNet-Lite0 at 224, batch 32, eager calls
            # peaked at 4.9 GB RSS against 1.4 GB (and took twice as long). A one-output model returns an
            # array, not a list: flatten either to a list.
            features = keras.tree.flatten(split.feature_model.predict_on_batch(inputs))
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
    return writer.close(details)


def _stored(tokens: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "float16" and np.abs(tokens).max(initial=0.0) > FLOAT16_MAX:
        raise UserError(
            f"the frozen backbone's features reach {np.abs(tokens).max():.3g}, beyond float16's {FLOAT16_MAX:.0f}: "
            "cache them as float32 (--cache-dtype float32)"
        )
    return tokens.astype(dtype)


def _fingerprint(split, manifest, labels, preprocessor, dtype) -> str:
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
    digest.update(json.dumps(settings, ensure_ascii=False, default=str).encode())
    for weight in split.feature_model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()[:16]


def _file_stamp(path):
    if path is None:
        return None
    stat = Path(path).stat()
    return [stat.st_size, stat.st_mtime_ns]
