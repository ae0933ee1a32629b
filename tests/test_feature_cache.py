"""Feature cache: the head on cached tokens equals the full model, and the cache knows when it is stale."""

import logging
import os

import keras
import numpy as np
import pytest
from PIL import Image

from mmkeras.data.dataset import make_dataset
from mmkeras.data.feature_cache_folders import human_bytes
from mmkeras.data.manifest import read_manifest
from mmkeras.errors import UserError
from mmkeras.models import build_model
from mmkeras.models.backbone_split import split_at_frozen_backbones
from mmkeras.training.feature_cache import CachedEpochs, CachedFeatures, cache_features

BOTH = ("text_backbone", "vision_backbone")
LABELS = ["a", "b"]


@pytest.fixture
def manifest(tmp_path):
    """Nine rows with random images; row 3 has no image, row 5 no text."""
    rng = np.random.default_rng(0)
    lines = ["text,image,label"]
    for index in range(9):
        image = "" if index == 3 else f"{index}.png"
        if image:
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / image)
        text = "" if index == 5 else f"a {'red' if index % 2 else 'blue'} circle number {index}"
        lines.append(f"{text},{image},{LABELS[index % 2]}")
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    return read_manifest(tmp_path / "train.csv")


@pytest.fixture
def model_and_preprocessor(manifest):
    return build_model(num_classes=2, texts=[row.text for row in manifest.rows if row.text], seed=0)


def full_and_head_logits(model, preprocessor, manifest, frozen, cache_dir, dtype="float32"):
    split = split_at_frozen_backbones(model, frozen)
    cached = cache_features(split, manifest, LABELS, preprocessor, cache_dir=cache_dir, batch_size=4, dtype=dtype)
    (inputs, labels), = make_dataset(manifest, LABELS, preprocessor, batch_size=9, shuffle=False, seed=0)
    (head_inputs, cached_labels), = cached.dataset(batch_size=9)
    np.testing.assert_array_equal(cached_labels, labels)
    full = keras.ops.convert_to_numpy(model(inputs))
    return full, keras.ops.convert_to_numpy(split.head_model(head_inputs)), split


@pytest.mark.parametrize("frozen", [BOTH, ("text_backbone",), ("vision_backbone",)])
def test_head_on_cached_features_equals_the_full_model(model_and_preprocessor, manifest, frozen, tmp_path):
    model, preprocessor = model_and_preprocessor
    full, head, split = full_and_head_logits(model, preprocessor, manifest, frozen, tmp_path / "cache")
    np.testing.assert_allclose(head, full, atol=1e-5)  # float32 features: the full model's logits
    head_layers = {layer.name for layer in split.head_model.layers}
    assert head_layers.isdisjoint(frozen) and "fusion" in head_layers
    if frozen == BOTH:
        assert split.head_input_names == ["padding_mask", "modality_mask"]


def test_the_head_trains_the_full_models_own_weights_and_no_backbone(model_and_preprocessor):
    model, _ = model_and_preprocessor
    head = split_at_frozen_backbones(model, BOTH).head_model
    head_weights = {id(weight) for weight in head.trainable_weights}
    assert head_weights < {id(weight) for weight in model.trainable_weights}
    backbones = [*model.get_layer("text_backbone").weights, *model.get_layer("vision_backbone").weights]
    assert head_weights.isdisjoint(id(weight) for weight in backbones)
    assert id(model.get_layer("logits").kernel) in head_weights


def test_the_model_stays_saveable_after_the_split(model_and_preprocessor, tmp_path):
    model, preprocessor = model_and_preprocessor
    split = split_at_frozen_backbones(model, ("text_backbone",))
    inputs = preprocessor(["a red circle"], [None])
    expected = keras.ops.convert_to_numpy(model(inputs))
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(inputs)), expected)
    assert split.head_model.count_params() < model.count_params()


def test_float16_features_change_the_logits_by_float16_rounding_only(model_and_preprocessor, manifest, tmp_path):
    model, preprocessor = model_and_preprocessor
    full, head, _ = full_and_head_logits(model, preprocessor, manifest, BOTH, tmp_path / "cache", "float16")
    # Tokens rounded to float16 (relative error <= 2**-11) moved these logits (|logit| < 0.9) by 2.8e-4 at most.
    assert 0 < np.abs(head - full).max() < 5e-3
    np.testing.assert_array_equal(head.argmax(axis=1), full.argmax(axis=1))


def cache_folders(cache_dir):
    return sorted(path for path in cache_dir.iterdir() if path.is_dir())


def test_caches_are_keyed_by_content_and_never_evict_each_other(model_and_preprocessor, manifest, tmp_path):
    model, preprocessor = model_and_preprocessor
    split = split_at_frozen_backbones(model, BOTH)
    cache_dir = tmp_path / "cache"

    def cache(rows=manifest):
        return cache_features(split, rows, LABELS, preprocessor, cache_dir=cache_dir, batch_size=4).folder

    first = cache()
    stamp = (first / "meta.json").stat().st_mtime_ns
    shards = sorted(first.glob("*.npy"))
    assert cache() == first and [path.stat().st_mtime_ns for path in shards] == [
        path.stat().st_mtime_ns for path in sorted(first.glob("*.npy"))
    ]  # reused, not rewritten
    (tmp_path / "copy.csv").write_text(manifest.path.read_text())
    assert cache(read_manifest(tmp_path / "copy.csv")) == first  # the same rows in another file: the same cache
    image = manifest.rows[0].image
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    os.utime(image, ns=(stamp + 10**9, stamp + 10**9))
    second = cache()
    assert second != first and (first / "meta.json").is_file()  # a new cache beside the old one
    text_backbone = model.get_layer("text_backbone")
    text_backbone.weights[0].assign(text_backbone.weights[0] + 0.5)  # another backbone
    third = cache()
    assert len({first, second, third}) == 3 and cache_folders(cache_dir) == sorted([first, second, third])


def test_the_cached_line_comes_after_the_work_and_states_the_size(model_and_preprocessor, manifest, tmp_path, caplog):
    model, preprocessor = model_and_preprocessor
    split = split_at_frozen_backbones(model, BOTH)
    with caplog.at_level(logging.INFO, logger="mmkeras"):
        cached = cache_features(split, manifest, LABELS, preprocessor, cache_dir=tmp_path, batch_size=4)
    messages = [record.getMessage() for record in caplog.records]
    assert "computing the frozen backbones' features: 9/9" in messages[-2]
    assert messages[-1].startswith("features of 9 rows cached in") and human_bytes(cached.bytes) in messages[-1]


def test_a_killed_writers_partial_cache_is_recomputed(model_and_preprocessor, manifest, tmp_path):
    model, preprocessor = model_and_preprocessor
    split = split_at_frozen_backbones(model, BOTH)
    folder = cache_features(split, manifest, LABELS, preprocessor, cache_dir=tmp_path, batch_size=4).folder
    expected = [batch[0][0].numpy() for batch in CachedFeatures(folder).dataset(batch_size=9)]
    (folder / "meta.json").unlink()  # as if the writer was killed before its last step
    (folder / "text_tokens-00000.npy").write_bytes(b"truncated")
    cached = cache_features(split, manifest, LABELS, preprocessor, cache_dir=tmp_path, batch_size=4)
    np.testing.assert_array_equal([batch[0][0].numpy() for batch in cached.dataset(batch_size=9)], expected)


def test_features_beyond_float16_are_a_user_error_naming_float32(model_and_preprocessor, manifest, tmp_path):
    model, preprocessor = model_and_preprocessor
    for weight in model.get_layer("vision_backbone").weights:
        weight.assign(weight * 100)  # image tokens far beyond float16's 65504
    split = split_at_frozen_backbones(model, ("vision_backbone",))
    with pytest.raises(UserError, match="float32"):
        cache_features(split, manifest, LABELS, preprocessor, cache_dir=tmp_path, batch_size=4)
    cache_features(split, manifest, LABELS, preprocessor, cache_dir=tmp_path, batch_size=4, dtype="float32")


def test_cached_epochs_are_shuffled_by_seed_and_epoch_alone(model_and_preprocessor, manifest, tmp_path):
    model, preprocessor = model_and_preprocessor
    cached = cache_features(
        split_at_frozen_backbones(model, BOTH), manifest, LABELS, preprocessor, cache_dir=tmp_path, batch_size=4
    )

    def order(epochs, epoch):
        return np.concatenate([inputs[0][:, 0, 0] for inputs, _ in epochs.for_epoch(epoch)]).tolist()

    epochs = CachedEpochs(cached, batch_size=4, seed=0)
    assert epochs.num_examples == 9
    first, second = order(epochs, 0), order(epochs, 1)
    assert first != second and sorted(first) == sorted(second)  # reshuffled each epoch, same rows
    assert order(CachedEpochs(cached, batch_size=4, seed=0), 1) == second  # a restart sees the same order


def test_nothing_frozen_is_refused(model_and_preprocessor):
    with pytest.raises(ValueError, match="frozen"):
        split_at_frozen_backbones(model_and_preprocessor[0], ())
