"""Every vision checkpoint folder keras-hub 0.32 converts, written tiny and random in its family's on-disk layout:
loaded by mmkeras with its weights, image size, mean/std, resize filter and centre crop from its own config."""

import json

import keras
import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import save_file

from mmkeras.errors import UserError
from mmkeras.models import build_model, load_vision_backbone
from mmkeras.preprocessing import MultimodalPreprocessor
from mmkeras.preprocessing.image import load_image
from tests.helpers.cli import SAMPLES, run_cli, write_subset
from tests.helpers.vision_folders import (
    HALF_MEAN,
    HALF_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    TIMM_IMAGE_SIZE,
    VIT_IMAGE_SIZE,
    write_deit_folder,
    write_dinov2_folder,
    write_dinov3_folder,
    write_swin_folder,
    write_timm_cspnet_folder,
    write_timm_densenet_folder,
    write_timm_efficientnet_folder,
    write_timm_hgnetv2_folder,
    write_timm_mobilenet_folder,
    write_timm_resnet_folder,
    write_timm_vgg_folder,
    write_vit_folder,
)

MEAN_STD_SCALE = [1 / 255 / std for std in IMAGENET_STD]
MEAN_STD_OFFSET = [-mean / std for mean, std in zip(IMAGENET_MEAN, IMAGENET_STD)]
HUGGING_FACE_SIZE, TIMM_SIZE = (VIT_IMAGE_SIZE,) * 2, (TIMM_IMAGE_SIZE,) * 2


def conv(name):
    """A PyTorch convolution `[out, in, kh, kw]` as keras-hub stores it `[kh, kw, in, out]`."""
    return lambda tensors: np.transpose(tensors[name], (2, 3, 1, 0))


def depthwise(name):
    """A PyTorch depthwise convolution `[C, 1, kh, kw]` as a keras DepthwiseConv2D kernel `[kh, kw, C, 1]`."""
    return lambda tensors: np.transpose(tensors[name], (2, 3, 0, 1))


def linear(name):
    return lambda tensors: tensors[name].T


def same(name):
    return lambda tensors: tensors[name]


def swin_qkv(prefix):
    """Swin's separate query, key and value `Linear`s, joined into keras-hub's one projection."""
    return lambda tensors: np.concatenate([tensors[f"{prefix}.{part}.weight"] for part in ("query", "key", "value")]).T


# name -> (writer, backbone class, image size, resample, crop_pct, [(keras variable, expected from the file)]).
FORMATS = {
    "vit": (write_vit_folder, "ViTBackbone", HUGGING_FACE_SIZE, "bicubic", None, [
        (lambda b: b.layers[1].patch_embedding.kernel, conv("vit.embeddings.patch_embeddings.projection.weight")),
    ]),
    "deit": (write_deit_folder, "DeiTBackbone", HUGGING_FACE_SIZE, "bicubic", None, [
        (lambda b: b.layers[1].distillation_token, same("deit.embeddings.distillation_token")),
        (lambda b: b.layers[2].encoder_layers[0].mlp.dense.kernel,
         linear("deit.encoder.layer.0.intermediate.dense.weight")),
    ]),
    "dinov2": (write_dinov2_folder, "DINOV2Backbone", HUGGING_FACE_SIZE, "bicubic", 0.875, [
        (lambda b: b.embeddings.patch_embeddings.projection.kernel,
         conv("embeddings.patch_embeddings.projection.weight")),
        (lambda b: b.encoder.layers[0].layer_scale1.lambda1, same("encoder.layer.0.layer_scale1.lambda1")),
    ]),
    "dinov3": (write_dinov3_folder, "DINOV3Backbone", HUGGING_FACE_SIZE, "bilinear", None, [
        (lambda b: b.encoder.layers[0].attention.key_dense.kernel, linear("layer.0.attention.k_proj.weight")),
        (lambda b: b.embeddings.register_tokens, same("embeddings.register_tokens")),
    ]),
    "swin": (write_swin_folder, "SwinTransformerBackbone", HUGGING_FACE_SIZE, "bicubic", None, [
        (lambda b: b.stages[0].blocks[0].attn.qkv.kernel, swin_qkv("swin.encoder.layers.0.blocks.0.attention.self")),
        (lambda b: b.stages[0].downsample.reduction.kernel,
         linear("swin.encoder.layers.0.downsample.reduction.weight")),
    ]),
    "timm-resnet": (write_timm_resnet_folder, "ResNetBackbone", TIMM_SIZE, "bicubic", 0.875, [
        (lambda b: b.get_layer("conv1_conv").kernel, conv("conv1.weight")),
        (lambda b: b.get_layer("stack3_block1_2_bn").moving_variance, same("layer4.1.bn2.running_var")),
    ]),
    "timm-mobilenet": (write_timm_mobilenet_folder, "MobileNetBackbone", TIMM_SIZE, "bilinear", 0.875, [
        (lambda b: b.get_layer("input_conv").kernel, conv("conv_stem.weight")),
        (lambda b: b.get_layer("block_2_1").squeeze_excite.conv_reduce.kernel,
         conv("blocks.2.1.se.conv_reduce.weight")),
    ]),
    "timm-efficientnet": (write_timm_efficientnet_folder, "EfficientNetBackbone", TIMM_SIZE, "bicubic", 0.875, [
        (lambda b: b.get_layer("block2a_dwconv").kernel, depthwise("blocks.1.0.conv_dw.weight")),
        (lambda b: b.get_layer("top_bn").moving_variance, same("bn2.running_var")),
    ]),
    "timm-densenet": (write_timm_densenet_folder, "DenseNetBackbone", TIMM_SIZE, "bicubic", 0.875, [
        (lambda b: b.get_layer("stack2_block3_2_conv").kernel, conv("features.denseblock2.denselayer3.conv2.weight")),
        (lambda b: b.get_layer("bn").moving_variance, same("features.norm5.running_var")),
    ]),
    "timm-cspnet": (write_timm_cspnet_folder, "CSPNetBackbone", TIMM_SIZE, "bilinear", 0.875, [
        (lambda b: b.get_layer("stage_2_csp_conv_exp").kernel, conv("stages.2.conv_exp.conv.weight")),
    ]),
    "timm-hgnetv2": (write_timm_hgnetv2_folder, "HGNetV2Backbone", TIMM_SIZE, "bicubic", 0.875, [
        (lambda b: b.embedder_layer.stem1_layer.convolution.kernel, conv("stem.stem1.conv.weight")),
    ]),
    "timm-vgg": (write_timm_vgg_folder, "VGGBackbone", TIMM_SIZE, "bilinear", 0.875, [
        (lambda b: b.get_layer("block3_conv2").kernel, conv("features.8.weight")),
    ]),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """name -> (folder, tensors), written on first use."""
    written = {}

    def folder(name):
        if name not in written:
            path = tmp_path_factory.mktemp(name)
            written[name] = path, FORMATS[name][0](path)
        return written[name]

    return folder


@pytest.mark.parametrize("name", list(FORMATS))
def test_a_checkpoint_folder_loads_its_weights_and_its_preprocessing(folders, name, capsys):
    _, backbone_class, image_size, resample, crop_pct, weights = FORMATS[name]
    folder, tensors = folders(name)
    vision = load_vision_backbone(str(folder))
    assert capsys.readouterr().out == ""  # stdout carries --json reports
    assert vision.pretrained and type(vision.backbone).__name__ == backbone_class
    assert (vision.image_size, vision.resample, vision.crop_pct) == (image_size, resample, crop_pct)
    np.testing.assert_allclose(vision.scale, MEAN_STD_SCALE, rtol=1e-6)
    np.testing.assert_allclose(vision.offset, MEAN_STD_OFFSET, rtol=1e-6)
    for variable, expected in weights:
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable(vision.backbone)), expected(tensors))


def edit_json(path, edit):
    content = json.loads(path.read_text())
    edit(content)
    path.write_text(json.dumps(content))


@pytest.mark.parametrize(("write", "config_file", "edit"), [
    (write_timm_resnet_folder, "config.json", lambda config: config["pretrained_cfg"].update(
        mean=HALF_MEAN, std=HALF_STD, interpolation="nearest", crop_mode="squash")),
    (write_dinov3_folder, "preprocessor_config.json", lambda config: config.update(
        image_mean=HALF_MEAN, image_std=HALF_STD, resample=0)),
])
def test_the_folders_own_mean_std_filter_and_crop_mode_are_used(tmp_path, write, config_file, edit):
    write(tmp_path)
    edit_json(tmp_path / config_file, edit)
    vision = load_vision_backbone(str(tmp_path))
    np.testing.assert_allclose(vision.scale, [2 / 255] * 3, rtol=1e-6)
    np.testing.assert_allclose(vision.offset, [-1.0] * 3, rtol=1e-6)
    assert (vision.resample, vision.crop_pct) == ("nearest", None)  # timm's squash mode is not a centre crop


def photo(folder):
    path = folder / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize(("name", "resample"), [("timm-resnet", "bicubic"), ("dinov2", "bicubic")])
def test_the_checkpoints_preprocessing_reaches_the_model_and_the_saved_preprocessor(folders, name, resample, tmp_path):
    folder, _ = folders(name)
    model, preprocessor = build_model("tiny", str(folder), num_classes=2, texts=["a photo"], seed=0)
    np.testing.assert_allclose(model.get_layer("image_normalization").scale, MEAN_STD_SCALE, rtol=1e-6)
    preprocessor.save(tmp_path)
    settings = json.loads((tmp_path / "preprocessor.json").read_text())
    size = list(FORMATS[name][2])
    assert (settings["image_size"], settings["image"]["resample"], settings["image"]["crop_pct"]) == (
        size, resample, 0.875
    )
    image = photo(tmp_path)
    pixels = MultimodalPreprocessor.load(tmp_path)(["a photo"], [image])["image"][0]
    np.testing.assert_array_equal(pixels, load_image(image, tuple(size), resample, crop_pct=0.875))
    assert not np.array_equal(pixels, load_image(image, tuple(size), resample))
    assert tuple(model(preprocessor(["a photo"], [image])).shape) == (1, 2)


def test_unread_affine_blocks_that_are_not_the_identity_are_a_warning(folders, tmp_path, caplog):
    folder, _ = folders("timm-hgnetv2")
    with caplog.at_level("WARNING", logger="mmkeras"):
        load_vision_backbone(str(folder))
    assert "leaves out this hgnetv2's learnable affine blocks" in caplog.text
    identity = tmp_path / "identity"
    tensors = write_timm_hgnetv2_folder(identity)
    for name in [name for name in tensors if ".lab." in name]:
        tensors[name] = np.full(1, 1.0 if name.endswith(".scale") else 0.0, np.float32)
    save_file(tensors, str(identity / "model.safetensors"))
    caplog.clear()
    with caplog.at_level("WARNING", logger="mmkeras"):
        load_vision_backbone(str(identity))
    assert "affine" not in caplog.text


@pytest.mark.slow  # fits a timm backbone
def test_a_backbone_with_a_feature_map_per_stage_trains_on_its_last_one(folders, tmp_path):
    folder, _ = folders("timm-hgnetv2")
    model, preprocessor = build_model("tiny", str(folder), num_classes=2, texts=["a photo"], seed=0)
    inputs = preprocessor(["a photo", "a photo"], [photo(tmp_path), None])
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(inputs, np.array([0, 1]), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def write_unconverted_timm_folder(folder):
    write_timm_resnet_folder(folder)
    edit_json(folder / "config.json", lambda config: config.update(architecture="convnext_tiny"))


def write_unconverted_hugging_face_folder(folder):
    write_vit_folder(folder)
    edit_json(folder / "config.json", lambda config: config.update(model_type="beit"))


@pytest.mark.parametrize(("write", "reason"), [
    (write_unconverted_timm_folder, "no converter for timm models with architecture `'convnext_tiny'`"),
    (write_unconverted_hugging_face_folder,
     "no converter for huggingface/transformers models with model type `'beit'`"),
    (lambda folder: write_timm_hgnetv2_folder(folder, tag="in1k"),
     "loads timm hgnetv2_b0 checkpoints only with an ssld tag (this one: 'in1k')"),
])
def test_a_folder_keras_hub_cannot_convert_is_one_line_naming_it_and_what_is_supported(tmp_path, write, reason):
    folder = tmp_path / "checkpoint"
    write(folder)
    with pytest.raises(UserError) as raised:
        load_vision_backbone(str(folder))
    message = str(raised.value)
    assert len(message.splitlines()) == 1 and str(folder) in message and reason in message
    assert "keras-hub converts these checkpoint folders: Hugging Face vit, deit" in message


def test_the_cli_exits_2_with_that_line(tmp_path, capsys):
    write_unconverted_timm_folder(tmp_path / "checkpoint")
    train = write_subset(SAMPLES / "train.csv", tmp_path / "train.csv", 4)
    code, _, err = run_cli(
        capsys, "train", "--data", train, "--out", tmp_path / "run", "--vision-backbone", tmp_path / "checkpoint"
    )
    (error,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and "Traceback" not in err
    assert str(tmp_path / "checkpoint") in error and "convnext_tiny" in error and "keras-hub converts" in error


def test_a_damaged_preprocessor_config_is_one_line_naming_it(tmp_path):
    write_vit_folder(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text('{"size": ')
    with pytest.raises(UserError, match=r"preprocessor_config.json: invalid JSON"):
        load_vision_backbone(str(tmp_path))
