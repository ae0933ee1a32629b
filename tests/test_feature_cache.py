"""Feature cache: the head on cached tokens equals the full model, and the cache knows when it is stale."""

import os

import keras
import numpy as np
import pytest
from PIL import Image

from mmkeras.data.dataset import make_dataset
from mmkeras.data.manifest import read_manifest
from mmkeras.models import build_model
from mmkeras.training.feature_cache import CachedEpochs
from mmkeras.training.feature_cache import cache_features
from mmkeras.training.feature_cache import split_at_frozen_backbones

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


def full_and_head_logits(model, preprocessor, manifest, frozen, cache_dir):
    split = split_at_frozen_backbones(model, frozen)
    cached = cache_features(
        split, manifest, LABELS, preprocessor, cache_dir=cache_dir, batch_size=4
    )
    (inputs, labels), = make_dataset(manifest, LABELS, preprocessor, batch_size=9, shuffle=False, seed=0)
    (head_inputs, cached_labels), = cached.dataset(batch_size=9)
    np.testing.assert_array_equal(cached_labels, labels)
    full = keras.ops.convert_to_numpy(model(inputs))
    return full, keras.ops.convert_to_numpy(split.head_model(head_inputs)), split


@pytest.mark.parametrize("frozen", [BOTH, ("text_backbone",), ("vision_backbone",)])
def test_head_on_cached_features_equals_the_full_model(model_and_preprocessor, manifest, frozen, tmp_path):
    model, preprocessor = model_and_preprocessor
    full, head, split = full_and_head_logits(model, preprocessor, manifest, frozen, tmp_path / "cache")
    np.testing.assert_allclose(head, full, atol=1e-5)
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


def test_the_cache_is_reused_and_invalidated_by_data_and_backbone_changes(model_and_preprocessor, manifest, tmp_path):
    model, preprocessor = model_and_preprocessor
    split = split_at_frozen_backbones(model, BOTH)
    cache_dir = tmp_path / "cache"

    def cache():
        cache_features(split, manifest, LABELS, preprocessor, cache_dir=cache_dir, batch_size=4)
        (path,) = cache_dir.glob("train-*-*.npz")
        return path

    first = cache()
    stamp = first.stat().st_mtime_ns
    assert cache() == first and first.stat().st_mtime_ns == stamp  # reused, not rewritten
    image = manifest.rows[0].image
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    os.utime(image, ns=(stamp + 10**9, stamp + 10**9))
    second = cache()
    assert second != first and not first.exists()  # stale file removed
    text_backbone = model.get_layer("text_backbone")
    text_backbone.weights[0].assign(text_backbone.weights[0] + 0.5)
    assert cache() != second


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
