"""`augment: photo`: stateless crop/flip/colour jitter seeded by (seed, epoch, row), training epochs only."""

import numpy as np
import pytest
import tensorflow as tf
import yaml

from mmkeras.config import RunConfig
from mmkeras.data.augmentation import augment_photo
from mmkeras.data.dataset import EpochDatasets
from mmkeras.errors import UserError
from mmkeras.training.trainer import train
from tests.helpers.cli import SAMPLES, write_subset
from tests.helpers.dataset_rows import IMAGE_SIZE, labels_of

# Rows 1, 4 and 7 of test_dataset's manifest have no image.
ROWS_WITHOUT_IMAGE = (1, 4, 7)


def epoch_images(epochs, epoch, **options):
    """`{row label index: image}` of one epoch."""
    images = {}
    for inputs, labels in epochs.for_epoch(epoch, **options):
        images.update(zip(labels.numpy().tolist(), inputs["image"].numpy()))
    return images


def test_augment_photo_is_a_function_of_its_seed():
    image = tf.constant(np.random.default_rng(0).integers(0, 256, (40, 30, 3)), tf.uint8)
    first = augment_photo(image, tf.constant([3, 5], tf.int64), (24, 16)).numpy()
    again = augment_photo(image, tf.constant([3, 5], tf.int64), (24, 16)).numpy()
    other = augment_photo(image, tf.constant([3, 6], tf.int64), (24, 16)).numpy()
    assert first.shape == (24, 16, 3) and first.dtype == np.float32
    assert 0.0 <= first.min() and first.max() <= 255.0
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_photo_epochs_are_augmented_per_row_and_epoch_the_same_however_they_are_batched(manifest, preprocessor):
    labels = labels_of(manifest)
    plain = EpochDatasets(manifest, labels, preprocessor, batch_size=4, seed=0)
    photo = EpochDatasets(manifest, labels, preprocessor, batch_size=4, seed=0, augment="photo")
    other_batches = EpochDatasets(manifest, labels, preprocessor, batch_size=3, seed=0, augment="photo")
    originals = epoch_images(plain, 0)
    epoch0, epoch1 = epoch_images(photo, 0), epoch_images(photo, 1)
    for row, image in epoch0.items():
        np.testing.assert_array_equal(image, epoch_images(photo, 0)[row])  # a rerun (a resume) is exact
        np.testing.assert_array_equal(image, epoch_images(other_batches, 0)[row])  # so is another batch size
        if row in ROWS_WITHOUT_IMAGE:
            assert not image.any() and not epoch1[row].any()  # a missing image stays all zeros
        else:
            assert image.shape == (*IMAGE_SIZE, 3)
            assert not np.allclose(image, originals[row]) and not np.allclose(image, epoch1[row])
    for row, image in epoch_images(photo, 0, augmented=False).items():
        np.testing.assert_array_equal(image, originals[row])  # calibration sees what inference sees


def test_resuming_mid_epoch_continues_with_the_same_augmented_images(manifest, preprocessor):
    photo = EpochDatasets(manifest, labels_of(manifest), preprocessor, batch_size=4, seed=2, augment="photo")
    whole = [inputs["image"].numpy() for inputs, _ in photo.for_epoch(3)]
    resumed = [inputs["image"].numpy() for inputs, _ in photo.for_epoch(3).skip(1)]
    for expected, got in zip(whole[1:], resumed, strict=True):
        np.testing.assert_array_equal(expected, got)


def test_augment_is_a_checked_setting():
    assert RunConfig().augment == "none"
    with pytest.raises(UserError, match="augment must be one of none, photo"):
        RunConfig(augment="heavy")
    with pytest.raises(UserError, match="cannot augment"):
        RunConfig(augment="photo", freeze="both", cache_features=True)


@pytest.mark.slow
def test_a_run_trains_with_photo_augmentation_and_records_it(tmp_path):
    train_csv = write_subset(SAMPLES / "train.csv", tmp_path / "train.csv", 16)
    config = RunConfig(data=str(train_csv), out=str(tmp_path / "run"), epochs=1, batch_size=8, augment="photo")
    result = train(config)
    assert result.metrics["epochs_completed"] == 1 and np.isfinite(result.metrics["loss"])
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["augment"] == "photo"
