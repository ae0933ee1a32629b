"""make_dataset: the tf.data pipeline yields exactly what the preprocessor computes, seeded and cached."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import mmkeras.data.dataset as dataset_module
from mmkeras.data.dataset import EpochDatasets, make_dataset
from tests.helpers.dataset_rows import IMAGE_SIZE, SEQUENCE_LENGTH, labels_of


@pytest.fixture(params=["cached", "streamed"])
def caching(request, monkeypatch):
    """Run a test with the in-memory image cache and without it (as for a dataset too big to cache)."""
    if request.param == "streamed":
        monkeypatch.setattr(dataset_module, "CACHE_LIMIT_BYTES", 0)
    return request.param


def epoch_order(dataset) -> list[int]:
    return np.concatenate([labels.numpy() for _, labels in dataset]).tolist()


def test_batches_equal_the_preprocessor_output_for_the_same_rows(manifest, preprocessor, caching):
    dataset = make_dataset(manifest, labels_of(manifest), preprocessor, batch_size=4, shuffle=False, seed=0)
    batches = list(dataset)
    assert [len(labels) for _, labels in batches] == [4, 4, 2]
    expected = preprocessor([row.text for row in manifest.rows], [row.image for row in manifest.rows])
    for name, value in expected.items():
        np.testing.assert_array_equal(np.concatenate([inputs[name].numpy() for inputs, _ in batches]), value)
    assert np.concatenate([labels.numpy() for _, labels in batches]).tolist() == list(range(10))


def test_shapes_and_dtypes_follow_the_contract(manifest, preprocessor):
    dataset = make_dataset(
        manifest, labels_of(manifest), preprocessor, batch_size=3, shuffle=False, seed=0, drop_remainder=True
    )
    inputs_spec, label_spec = dataset.element_spec
    assert inputs_spec == {
        "token_ids": tf.TensorSpec([3, SEQUENCE_LENGTH], tf.int32, name=None),
        "padding_mask": tf.TensorSpec([3, SEQUENCE_LENGTH], tf.int32, name=None),
        "image": tf.TensorSpec([3, *IMAGE_SIZE, 3], tf.float32, name=None),
        "modality_mask": tf.TensorSpec([3, 2], tf.float32, name=None),
    }
    assert label_spec == tf.TensorSpec([3], tf.int32, name=None)
    assert sum(1 for _ in dataset) == 3  # the last single row is dropped


def test_missing_modalities_reach_the_modality_mask(manifest, preprocessor):
    dataset = make_dataset(manifest, labels_of(manifest), preprocessor, batch_size=10, shuffle=False, seed=0)
    inputs, _ = next(iter(dataset))
    mask = inputs["modality_mask"].numpy()
    assert mask[:, 1].tolist() == [0.0 if index % 3 == 1 else 1.0 for index in range(10)]
    assert mask[:, 0].tolist() == [0.0 if index % 4 == 2 else 1.0 for index in range(10)]
    assert not inputs["image"].numpy()[[1, 4, 7]].any()


def test_without_labels_it_yields_inputs_only(manifest, preprocessor):
    dataset = make_dataset(manifest, None, preprocessor, batch_size=5, shuffle=False, seed=0)
    assert isinstance(dataset.element_spec, dict)
    assert [inputs["token_ids"].shape[0] for inputs in dataset] == [5, 5]


def test_labels_are_encoded_in_the_given_class_order(manifest, preprocessor):
    reversed_labels = labels_of(manifest)[::-1]
    dataset = make_dataset(manifest, reversed_labels, preprocessor, batch_size=10, shuffle=False, seed=0)
    assert epoch_order(dataset) == list(range(9, -1, -1))


def test_shuffling_is_seeded_and_reshuffles_every_epoch(manifest, preprocessor, caching):
    def two_epochs(seed):
        dataset = make_dataset(manifest, labels_of(manifest), preprocessor, batch_size=4, shuffle=True, seed=seed)
        return [epoch_order(dataset), epoch_order(dataset)]

    first, again, other = two_epochs(seed=7), two_epochs(seed=7), two_epochs(seed=8)
    assert first == again
    assert first[0] != first[1]
    assert first != other
    for order in first + other:
        assert sorted(order) == list(range(10))


def test_shuffled_batches_still_pair_each_row_with_its_inputs(manifest, preprocessor, caching):
    expected = preprocessor([row.text for row in manifest.rows], [row.image for row in manifest.rows])
    dataset = make_dataset(manifest, labels_of(manifest), preprocessor, batch_size=3, shuffle=True, seed=1)
    for inputs, labels in dataset:
        for name, value in inputs.items():
            np.testing.assert_array_equal(value.numpy(), expected[name][labels.numpy()])


def test_decoded_images_are_cached_across_epochs_when_they_fit(manifest, preprocessor, caching, monkeypatch):
    calls = []
    original = preprocessor.load_images

    def counting_load_images(images):
        calls.extend(images)
        return original(images)

    monkeypatch.setattr(preprocessor, "load_images", counting_load_images)
    dataset = make_dataset(manifest, labels_of(manifest), preprocessor, batch_size=4, shuffle=True, seed=0)
    for _ in range(3):
        epoch_order(dataset)
    assert len(calls) == (10 if caching == "cached" else 30)
    image_names = {f"{index}.{['png', 'jpg', 'webp'][index % 3]}" for index in range(10) if index % 3 != 1}
    assert {Path(image).name for image in calls if image} == image_names


def test_epoch_datasets_fix_each_epochs_order_by_seed_and_epoch(manifest, preprocessor, caching):
    def epochs(seed):
        return EpochDatasets(manifest, labels_of(manifest), preprocessor, batch_size=3, seed=seed)

    first, again = epochs(5), epochs(5)
    orders = [epoch_order(first.for_epoch(epoch)) for epoch in range(3)]
    assert [epoch_order(again.for_epoch(epoch)) for epoch in (2, 0, 1)] == [orders[2], orders[0], orders[1]]
    assert len({tuple(order) for order in orders}) == 3 and all(sorted(order) == list(range(10)) for order in orders)
    assert epoch_order(epochs(6).for_epoch(0)) != orders[0]
    assert epoch_order(first.for_epoch(1).skip(2)) == orders[1][6:]  # resuming mid-epoch continues the same order
    assert first.num_examples == 10


def test_epoch_datasets_decode_each_image_once_when_cached(manifest, preprocessor, caching, monkeypatch):
    calls = []
    original = preprocessor.load_images
    monkeypatch.setattr(preprocessor, "load_images", lambda images: calls.extend(images) or original(images))
    epochs = EpochDatasets(manifest, labels_of(manifest), preprocessor, batch_size=4, seed=0)
    for epoch in range(3):
        epoch_order(epochs.for_epoch(epoch))
    assert len(calls) == (10 if caching == "cached" else 30)
