"""`image_size` for the vision backbones, and the one-line error of a preset name offline."""

import pytest

from mmkeras.errors import UserError
from mmkeras.models.preset_download import offline_preset_error
from mmkeras.models.vision_backbones import (
    VisionBackbone,
    describe_image_settings,
    load_vision_backbone,
)


@pytest.mark.parametrize(("spec", "tokens"), [("tiny", 9), ("tiny-vit", 37), ("tiny-mobilenet", 36)])
def test_the_built_in_backbones_take_any_image_size(spec, tokens):
    vision = load_vision_backbone(spec, image_size=48)
    assert vision.image_size == (48, 48)
    shape = vision.backbone.output_shape
    assert (shape[1] * shape[2] if len(shape) == 4 else shape[1]) == tokens
    assert load_vision_backbone(spec).image_size == (32, 32)  # their small default


def test_a_size_a_built_in_backbone_cannot_take_is_one_line():
    with pytest.raises(UserError, match="multiple of 8"):
        load_vision_backbone("tiny-vit", image_size=20)
    with pytest.raises(UserError, match="at least 16"):
        load_vision_backbone("tiny", image_size=8)


def test_the_image_settings_are_written_as_mean_and_std_with_their_sources():
    imagenet = VisionBackbone(
        None, (224, 224), [1 / 255 / 0.229, 1 / 255 / 0.224, 1 / 255 / 0.225],
        [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225], True, resample="bicubic", crop_pct=0.875,
        sources={"size": "preprocessor_config.json", "normalization": "preprocessor_config.json"},
    )
    assert describe_image_settings(imagenet) == (
        "images: 224x224 (preprocessor_config.json), bicubic resize, centre crop 0.875 of the shorter side, "
        "mean [0.485, 0.456, 0.406] std [0.229, 0.224, 0.225] of 0..1 pixels (preprocessor_config.json)"
    )


def test_a_preset_name_offline_says_what_to_do_in_one_line():
    network = OSError("HTTPSConnectionPool(host='api.kaggle.com', port=443): Max retries exceeded")
    error = offline_preset_error("dinov2_small", "vision", network)
    message = str(error)
    assert "\n" not in message and "HTTPSConnectionPool" not in message
    assert "needs the internet" in message and "pass a local folder" in message
    assert "kagglehub.model_download('keras/dinov2/keras/dinov2_small/" in message
    # Not a preset name, or not a network failure: the caller's own message stands.
    assert offline_preset_error("my-folder", "vision", network) is None
    assert offline_preset_error("dinov2_small", "vision", ValueError("bad config")) is None
