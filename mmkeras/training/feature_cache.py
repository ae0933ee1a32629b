"""Cached backbone features: frozen backbones run once, not every epoch.

With `--freeze` and `--cache-features`, the tokens that the frozen backbones
hand to the fusion layer are computed once per dataset, stored on disk in the
feature cache folder (`default_cache_dir()`), and reused every epoch, by a
resumed run, and by later runs on the same data and backbones (trying other
heads or fusions then skips the backbones entirely). Training then runs
only the *head*: the layers after the cached tokens (fusion, dropout, logits,
and an unfrozen backbone if only one is frozen). The head model is built from
the same layer objects as the full model, so training it trains the full
model, which is what gets saved and exported.

The cache file's name is a fingerprint of everything the features depend on:
the manifest rows, each image file's size and modification time, the
preprocessing settings and vocabulary, and the feature model's weights.
Changing any of them computes the features anew; older cache files of the
same manifest are removed.

Cached features are the backbones' inference-mode outputs (no dropout inside
the frozen backbones), the usual choice for frozen feature extraction.
"""

import dataclasses
import glob
import hashlib
import json
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mmkeras import compat
from mmkeras.atomic_files import write_atomically
from mmkeras.data.dataset import epoch_seed
from mmkeras.data.dataset import make_dataset
from mmkeras.data.manifest import Manifest
from mmkeras.preprocessing.multimodal_preprocessor import MultimodalPreprocessor



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
    """The head's inputs for every row of a dataset, and the labels.

    Args:
        arrays: named arrays in head input order, one row per example
            (images as uint8).
        labels: int32 label per row.
    """

    def __init__(self, arrays: dict[str, np.ndarray], labels: np.ndarray):
        self.arrays = arrays
        self.labels = labels
        self._rows = None

    @property
    def num_examples(self) -> int:
        return len(self.labels)

    def dataset(self, *, batch_size: int, order_seed: int | None = None) -> tf.data.Dataset:
        """Batches of `(head inputs tuple, labels)`: in row order, or shuffled by `order_seed`."""
        if self._rows is None:  # one copy of the arrays in the graph, shared by every epoch
            self._rows = tf.data.Dataset.from_tensor_slices((tuple(self.arrays.values()), self.labels))
        dataset = self._rows
        if order_seed is not None:
            dataset = dataset.shuffle(self.num_examples, seed=order_seed, reshuffle_each_iteration=False)
        dataset = dataset.batch(batch_size).map(_float_images, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
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


def _float_images(inputs, labels):
    return tuple(tf.cast(array, tf.float32) if array.dtype == tf.uint8 else array for array in inputs), labels


def cache_features(
    split: HeadSplit,
    manifest: Manifest,
    labels: list[str],
    preprocessor: MultimodalPreprocessor,
    *,
    cache_dir: str | Path,
    batch_size: int,
) -> CachedFeatures:
    """Compute the head's inputs for `manifest` once, or load them from `cache_dir`.

    Args:
        split: from `split_at_frozen_backbones`.
        manifest: the rows (images already checked).
        labels: class names in index order.
        preprocessor: the model's preprocessor.
        cache_dir: folder of the cache files (created when missing), e.g.
            `default_cache_dir()`.
        batch_size: rows per feature-model call.

    Returns:
        The `CachedFeatures` of every row, in manifest order.
    """
    cache_dir = Path(cache_dir)
    # One file per manifest: its name, a digest of its path, and the fingerprint of its contents.
    name = f"{Path(manifest.path).stem}-{hashlib.sha256(str(Path(manifest.path).resolve()).encode()).hexdigest()[:8]}"
    path = cache_dir / f"{name}-{_fingerprint(split, manifest, labels, preprocessor)}.npz"
    if path.is_file():
        with np.load(path) as stored:
            arrays = {key: stored[key] for key in stored.files}
        label_array = arrays.pop("label")
        return CachedFeatures(arrays, label_array)
    features = _compute(split, manifest, labels, preprocessor, batch_size)
    cache_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda partial: np.savez(partial, **features.arrays, label=features.labels))
    for stale in cache_dir.glob(f"{glob.escape(name)}-*.npz"):
        if stale != path:
            stale.unlink()
    return features


def default_cache_dir() -> Path:
    """`$MMKERAS_CACHE_DIR`, else `mmkeras/features` in the user's cache folder (`$XDG_CACHE_HOME` or `~/.cache`)."""
    if os.environ.get("MMKERAS_CACHE_DIR"):
        return Path(os.environ["MMKERAS_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mmkeras" / "features"


def _compute(split, manifest, labels, preprocessor, batch_size) -> CachedFeatures:
    batches = {name: [] for name in (*split.feature_names, *split.head_input_names)}
    label_batches = []
    data = make_dataset(manifest, labels, preprocessor, batch_size=batch_size, shuffle=False, seed=0)
    for inputs, label in data:
        # A one-output model returns a tensor, not a list: flatten either to a list.
        features = keras.tree.flatten(split.feature_model(inputs, training=False))
        for name, tokens in zip(split.feature_names, features, strict=True):
            batches[name].append(keras.ops.convert_to_numpy(tokens))
        for name in split.head_input_names:
            array = inputs[name].numpy()
            # Pixels are whole numbers in 0..255: uint8 keeps them exactly in a quarter of the memory.
            batches[name].append(array.astype(np.uint8) if name == "image" else array)
        label_batches.append(label.numpy())
    return CachedFeatures({name: np.concatenate(parts) for name, parts in batches.items()}, np.concatenate(label_batches))


def _fingerprint(split, manifest, labels, preprocessor) -> str:
    digest = hashlib.sha256()
    rows = [[row.text, row.image, row.label, _file_stamp(row.image)] for row in manifest.rows]
    settings = {
        "rows": rows,
        "labels": labels,
        "preprocessor": preprocessor.get_config(),
        "vocabulary": preprocessor.tokenizer.vocabulary,
        "features": split.feature_names,
        "head_inputs": split.head_input_names,
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
