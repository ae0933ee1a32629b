"""Hugging Face and timm vision folders: weights, and image size, mean/std and resize filter from their configs."""

import json

import numpy as np
import pytest
from hugging_face_folders import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VIT_IMAGE_SIZE,
    write_timm_resnet_folder,
    write_vit_folder,
)
from PIL import Image

from mmkeras.models import build_model, load_vision_backbone
from mmkeras.preprocessing import MultimodalPreprocessor
from mmkeras.preprocessing.image import load_image

MEAN_STD_SCALE = [1 / 255 / std for std in IMAGENET_STD]
MEAN_STD_OFFSET = [-mean / std for mean, std in zip(IMAGENET_MEAN, IMAGENET_STD)]


@pytest.fixture(scope="module")
def vit_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vit")
    return folder, write_vit_folder(folder)


@pytest.fixture(scope="module")
def resnet_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resnet18")
    return folder, write_timm_resnet_folder(folder)


def test_hugging_face_vit_folder_loads_its_weights_and_its_preprocessor_config(vit_folder):
    folder, tensors = vit_folder
    vision = load_vision_backbone(str(folder))
    assert vision.pretrained and type(vision.backbone).__name__ == "ViTBackbone"
    assert vision.image_size == (VIT_IMAGE_SIZE, VIT_IMAGE_SIZE) and vision.resample == "bicubic"
    np.testing.assert_allclose(vision.scale, MEAN_STD_SCALE, rtol=1e-6)
    np.testing.assert_allclose(vision.offset, MEAN_STD_OFFSET, rtol=1e-6)
    patch_kernel = vision.backbone.layers[1].patch_embedding.kernel.numpy()
    expected = np.transpose(tensors["vit.embeddings.patch_embeddings.projection.weight"], (2, 3, 1, 0))
    np.testing.assert_array_equal(patch_kernel, expected)


def test_timm_resnet_folder_loads_its_weights_and_its_pretrained_cfg(resnet_folder):
    folder, tensors = resnet_folder
    vision = load_vision_backbone(str(folder))
    assert vision.pretrained and type(vision.backbone).__name__ == "ResNetBackbone"
    assert vision.image_size == (32, 32) and vision.resample == "bicubic"
    np.testing.assert_allclose(vision.scale, MEAN_STD_SCALE, rtol=1e-6)
    np.testing.assert_allclose(vision.offset, MEAN_STD_OFFSET, rtol=1e-6)
    stem = vision.backbone.get_layer("conv1_conv").kernel.numpy()
    np.testing.assert_array_equal(stem, np.transpose(tensors["conv1.weight"], (2, 3, 1, 0)))
    moving_variance = vision.backbone.get_layer("stack3_block1_2_bn").moving_variance.numpy()
    np.testing.assert_array_equal(moving_variance, tensors["layer4.1.bn2.running_var"])


def test_the_checkpoints_resize_filter_and_normalisation_reach_the_run_and_the_bundle(resnet_folder, tmp_path):
    folder, _ = resnet_folder
    model, preprocessor = build_model("tiny", str(folder), num_classes=2, texts=["a photo"], seed=0)
    normalization = model.get_layer("image_normalization")
    np.testing.assert_allclose(normalization.scale, MEAN_STD_SCALE, rtol=1e-6)
    preprocessor.save(tmp_path)
    settings = json.loads((tmp_path / "preprocessor.json").read_text())
    assert settings["image"]["resample"] == "bicubic" and settings["image_size"] == [32, 32]
    assert settings["image"]["crop_pct"] == 0.875  # pretrained_cfg: crop_pct 0.875, crop_mode center
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(image)
    pixels = MultimodalPreprocessor.load(tmp_path)(["a photo"], [image])["image"][0]
    np.testing.assert_array_equal(pixels, load_image(image, (32, 32), "bicubic", crop_pct=0.875))
    assert not np.array_equal(pixels, load_image(image, (32, 32), "bicubic"))
    assert tuple(model(preprocessor(["a photo"], [image])).shape) == (1, 2)
