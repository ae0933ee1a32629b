"""Vision backbones: built-in random architectures or keras-hub presets.

A vision SPEC is one of:
- `tiny` (the offline default): a random VGG-style CNN at 32x32, four blocks
  of one 3x3 convolution (48, 96, 128, 128 filters, ReLU) and a 2x2 max-pool,
  giving a 2x2x128 feature map (4 tokens); it sees pixels mapped to -1..1,
- `tiny-vit`: a random ViT (32x32 images, 8x8 patches, 2 layers, hidden 64),
  the default before the CNN; it learns colour but not shapes from a few
  thousand images (see benchmarks/README.md),
- `tiny-mobilenet`: a random MobileNet with V3-style blocks at 32x32,
- a keras-hub preset name (downloads from Kaggle, so needs a network),
- a local preset folder (`save_to_preset` output), a Hugging Face folder
  (`config.json` + `model.safetensors`: ViT, DeiT, DINOv2/v3, Swin) or a timm
  folder (`config.json` with `architecture` + `model.safetensors`: ResNet,
  MobileNet, EfficientNet, DenseNet, CSPNet, HGNetV2, VGG), converted by
  keras-hub.

Every backbone takes RGB images already normalised with its `scale` and
`offset` (`pixels * scale + offset`, pixels in 0..255), as the preset's
`ImageConverter` would do; `vision_tokens` turns its output into a token
sequence for the fusion layers. A checkpoint's own preprocessing config (a
keras-hub `ImageConverter`, timm's `pretrained_cfg` or Hugging Face's
`preprocessor_config.json`) sets the image size, mean/std and resize filter;
they go into the run's and the bundle's preprocessing.

Example:
>>> vision = load_vision_backbone("tiny")
>>> vision.image_size, vision.pretrained
((32, 32), False)
"""

import contextlib
import dataclasses
import io
import json
import logging
from pathlib import Path

import keras
import keras_hub
import numpy as np
from safetensors import safe_open

from mmkeras.errors import UserError
from mmkeras.models.preset_download import offline_preset_error
from mmkeras.models.vgg_backbone import VGGBackbone
from mmkeras.preprocessing.image import DEFAULT_RESAMPLE, RESAMPLE_FILTERS

BUILTIN_VISION_BACKBONES = ("tiny", "tiny-vit", "tiny-mobilenet")
BACKBONE_NAME = "vision_backbone"
# Without a preset ImageConverter, pixels are mapped to 0..1.
DEFAULT_SCALE, DEFAULT_OFFSET = 1.0 / 255.0, 0.0
# The tiny CNN has no normalisation layer: it learns far faster on pixels
# centred on 0 (-1..1) than on 0..1 (benchmarks/README.md).
CENTRED_SCALE, CENTRED_OFFSET = 2.0 / 255.0, -1.0
DEFAULT_IMAGE_SIZE = (224, 224)
TINY_IMAGE_SIZE = (32, 32)
logger = logging.getLogger("mmkeras")
# What keras-hub 0.32 converts from a local folder (its utils/transformers and utils/timm).
CONVERTED_FOLDERS = (
    "Hugging Face vit, deit, dinov2, dinov3_vit, swin; timm resnet*, mobilenetv3_small_050/100, "
    "mobilenetv3_large_100, efficientnet_b0-b5/lite0/el/em/es, densenet121/169/201, cspresnet50, "
    "cspresnext50, cspdarknet53, darknet53, hgnetv2_b0-b6 (ssld tags), vgg11/13/16/19"
)
# Hugging Face image processors name Pillow's filters by number.
PIL_RESAMPLE_NAMES = {0: "nearest", 2: "bilinear", 3: "bicubic"}


@dataclasses.dataclass
class VisionBackbone:
    """A vision backbone and how to feed it.

    Args:
        backbone: the keras model (named `vision_backbone`): normalised images
            [B, H, W, 3] -> tokens [B, N, D] or feature maps [B, h, w, C].
        image_size: the `(height, width)` the backbone expects.
        scale: multiplier of the 0..255 pixels (a float or one per channel).
        offset: added after scaling (a float or one per channel).
        pretrained: whether the weights were loaded from a preset.
        resample: the resize filter the checkpoint was trained with
            (`bilinear`, `bicubic` or `nearest`).
        crop_pct: timm's centre crop share (`None`: resize whole images).
        sources: where each image setting came from (`size`, `resample`,
            `crop`, `normalization`), in words, for the training log.
    """

    backbone: keras.Model
    image_size: tuple[int, int]
    scale: float | list[float]
    offset: float | list[float]
    pretrained: bool
    resample: str = DEFAULT_RESAMPLE
    crop_pct: float | None = None
    sources: dict[str, str] = dataclasses.field(default_factory=dict)


def load_vision_backbone(spec: str, image_size: int | None = None) -> VisionBackbone:
    """Build or load the vision backbone named by `spec`.

    Args:
        spec: `tiny`, `tiny-vit`, `tiny-mobilenet`, a keras-hub preset name,
            a local preset folder or a Hugging Face-format folder.
        image_size: the side of the square images to feed it; `None` keeps
            the checkpoint's own size (32 for the built-in backbones).

    Returns:
        A `VisionBackbone`; its image settings are logged once, with where
        each came from.

    Raises:
        UserError: the spec is unknown, cannot be loaded (e.g. a named preset
            while offline), is not an image backbone, or takes only its own
            image size.
    """
    built_in = {
        "tiny": (_tiny_cnn, CENTRED_SCALE, CENTRED_OFFSET),
        "tiny-vit": (_tiny_vit, DEFAULT_SCALE, DEFAULT_OFFSET),
        "tiny-mobilenet": (_tiny_mobilenet, DEFAULT_SCALE, DEFAULT_OFFSET),
    }
    if spec in built_in:
        build, scale, offset = built_in[spec]
        size = (image_size, image_size) if image_size else TINY_IMAGE_SIZE
        _check_built_in_size(spec, size)
        normalization = "the tiny CNN's -1..1 pixels" if spec == "tiny" else "0..1 pixels"
        sources = {
            "size": "image_size setting" if image_size else f"the {spec} backbone's default",
            "resample": "default",
            "crop": "default",
            "normalization": normalization,
        }
        vision = VisionBackbone(build(size), size, scale, offset, pretrained=False, sources=sources)
    else:
        vision = _with_image_size(_load_preset(spec), spec, image_size)
    logger.info("%s", describe_image_settings(vision))
    return vision


def describe_image_settings(vision: VisionBackbone) -> str:
    """The image size, resize filter, crop and mean/std a backbone is fed with, and where each came from.

    Example:
    >>> describe_image_settings(VisionBackbone(None, (32, 32), 1 / 255, 0.0, False))
    'images: 32x32, bilinear resize, no centre crop, mean 0 std 1 of 0..1 pixels'
    """
    sources = vision.sources

    def source(key):
        return f" ({sources[key]})" if key in sources else ""

    height, width = vision.image_size
    crop = "no centre crop" if vision.crop_pct is None else f"centre crop {vision.crop_pct:.3g} of the shorter side"
    mean, std = _mean_and_std(vision.scale, vision.offset)
    return (
        f"images: {height}x{width}{source('size')}, {vision.resample} resize{source('resample')}, "
        f"{crop}{source('crop')}, mean {mean} std {std} of 0..1 pixels{source('normalization')}"
    )


def _mean_and_std(scale, offset) -> tuple[str, str]:
    """The model's `pixels * scale + offset` on 0..255 pixels written as `(pixels / 255 - mean) / std`."""
    channels = next((len(value) for value in (scale, offset) if isinstance(value, (list, tuple))), None)
    if channels is None:
        std = 1.0 / (255.0 * scale)
        return f"{-offset * std + 0.0:.3g}", f"{std:.3g}"
    scales = scale if isinstance(scale, (list, tuple)) else [scale] * channels
    offsets = offset if isinstance(offset, (list, tuple)) else [offset] * channels
    stds = [1.0 / (255.0 * value) for value in scales]
    means = [-value * std + 0.0 for value, std in zip(offsets, stds)]
    return _listed(means), _listed(stds)


def _listed(values) -> str:
    return "[" + ", ".join(f"{value:.3g}" for value in values) + "]"


def _check_built_in_size(spec, size):
    """The built-in backbones pool four times (tiny) or cut 8x8 patches (tiny-vit)."""
    side = size[0]
    if side < 16:
        raise UserError(f"image_size {side} is too small for the {spec} backbone: use at least 16")
    if spec == "tiny-vit" and side % 8:
        raise UserError(f"image_size {side}: the tiny-vit backbone cuts 8x8 patches; use a multiple of 8")


def _with_image_size(vision: VisionBackbone, spec: str, image_size: int | None) -> VisionBackbone:
    """`vision` fed `image_size` images, when its input takes any size; a fixed-size one keeps its own."""
    if not image_size or vision.image_size == (image_size, image_size):
        return vision
    fixed_size = tuple(vision.backbone.inputs[0].shape[1:3])
    if None not in fixed_size:
        raise UserError(
            f"vision backbone {spec!r} takes only {fixed_size[0]}x{fixed_size[1]} images (its position "
            f"embeddings are built for that size): leave out image_size or set it to {fixed_size[0]}"
        )
    own = "x".join(map(str, vision.image_size))
    sources = {**vision.sources, "size": f"image_size setting; the checkpoint's own is {own}"}
    return dataclasses.replace(vision, image_size=(image_size, image_size), sources=sources)


def vision_tokens(features):
    """Turn a vision backbone's output into tokens [B, N, D].

    ViT-like outputs are already tokens; a conv feature map [B, h, w, C]
    becomes h*w tokens of width C (a backbone that names its feature maps,
    as HGNetV2 does, gives one here: `_last_feature_map_only`).

    Args:
        features: the backbone's output (a symbolic or eager tensor, or a
            dict holding one).

    Returns:
        [B, N, D] tokens.
    """
    if isinstance(features, dict):
        (features,) = features.values()
    if len(features.shape) == 3:
        return features
    height, width, channels = features.shape[1:]
    return keras.layers.Reshape((height * width, channels), name="vision_tokens")(features)


def _tiny_cnn(size):
    # A plain conv stack learns shapes from scratch on a few thousand images,
    # where the tiny ViT does not (benchmarks/README.md); four pools leave a
    # 2x2 map whose every token sees the whole image. Only Conv2D (ReLU
    # fused) and MaxPooling2D layers: simple to quantize and export.
    return VGGBackbone(
        stackwise_num_repeats=[1, 1, 1, 1],
        stackwise_num_filters=[48, 96, 128, 128],
        image_shape=(*size, 3),
        name=BACKBONE_NAME,
    )


def _tiny_vit(size):
    return keras_hub.models.ViTBackbone(
        image_shape=(*size, 3),
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=64,
        mlp_dim=128,
        name=BACKBONE_NAME,
    )


def _tiny_mobilenet(size):
    # keras-hub has no MobileNetV3Backbone: MobileNetBackbone takes V3 blocks
    # (inverted residuals, squeeze-and-excite, hard-swish). Two stages of two
    # blocks take 32x32 images to a 4x4x64 feature map (16 tokens).
    return keras_hub.models.MobileNetBackbone(
        stackwise_expansion=[[16, 32], [48, 48]],
        stackwise_num_blocks=[2, 2],
        stackwise_num_filters=[[16, 16], [24, 24]],
        stackwise_kernel_size=[[3, 3], [5, 5]],
        stackwise_num_strides=[[2, 1], [2, 1]],
        stackwise_se_ratio=[[None, None], [0.25, 0.25]],
        stackwise_activation=[["relu", "relu"], ["hard_swish", "hard_swish"]],
        stackwise_padding=[[1, 1], [2, 2]],
        output_num_filters=64,
        depthwise_filters=8,
        depthwise_stride=1,
        depthwise_residual=False,
        last_layer_filter=64,
        squeeze_and_excite=0.5,
        image_shape=(*size, 3),
        input_activation="hard_swish",
        output_activation="hard_swish",
        input_num_filters=16,
        name=BACKBONE_NAME,
    )


def _with_complete_config(backbone: keras_hub.models.VGGBackbone) -> VGGBackbone:
    """The same VGG (architecture and weights) as mmkeras' `VGGBackbone`."""
    complete = VGGBackbone.from_config({**backbone.get_config(), "name": backbone.name})
    complete.set_weights(backbone.get_weights())
    return complete


def _last_feature_map_only(backbone):
    """A backbone giving a feature map per stage (HGNetV2's `out_features`), cut to its last stage's."""
    config = backbone.get_config()
    if len(backbone.outputs) == 1 or "out_features" not in config:
        return backbone
    last_stage = config["out_features"][-1]
    single = type(backbone).from_config({**config, "out_features": [last_stage]})
    single.set_weights(backbone.get_weights())
    return single


def _load_preset(spec):
    if "://" not in spec and not Path(spec).exists() and spec not in keras_hub.models.Backbone.presets:
        raise UserError(
            f"unknown vision backbone {spec!r}: not {' or '.join(BUILTIN_VISION_BACKBONES)}, an existing folder, "
            "or a keras-hub preset name"
        )
    try:
        # keras-hub's timm MobileNet converter prints a line per weight: stdout carries `--json` reports.
        with contextlib.redirect_stdout(io.StringIO()):
            backbone = keras_hub.models.Backbone.from_preset(spec, name=BACKBONE_NAME)
    except (OSError, ValueError, KeyError, ImportError) as error:
        offline = offline_preset_error(spec, "vision", error)
        if offline is not None:
            raise offline from error
        reason = _timm_hgnetv2_problem(spec) or (str(error).strip() or type(error).__name__).splitlines()[0]
        if spec in keras_hub.models.Backbone.presets:
            reason += " (named presets download from Kaggle: check the network or use a local preset folder)"
        elif Path(spec).is_dir():
            reason += f" (keras-hub converts these checkpoint folders: {CONVERTED_FOLDERS})"
        raise UserError(f"cannot load vision backbone {spec!r}: {reason}") from error
    if type(backbone) is keras_hub.models.VGGBackbone:  # keep its name and flags in saved runs
        backbone = _with_complete_config(backbone)
    backbone = _last_feature_map_only(backbone)
    _warn_of_unread_affine_blocks(spec, backbone)
    if len(backbone.inputs) != 1 or len(backbone.inputs[0].shape) != 4 or len(backbone.outputs) != 1:
        raise UserError(f"vision backbone {spec!r} ({type(backbone).__name__}) is not an image backbone")
    if len(backbone.outputs[0].shape) not in (3, 4):
        raise UserError(f"vision backbone {spec!r} gives outputs of shape {backbone.outputs[0].shape}, not tokens")
    image_size, scale, offset, resample, sources = _preset_image_settings(spec, backbone)
    crop_pct = _checkpoint_crop_pct(spec)
    sources["crop"] = "default" if crop_pct is None else "the folder's config.json / preprocessor_config.json"
    return VisionBackbone(
        backbone, image_size, scale, offset, pretrained=True, resample=resample, crop_pct=crop_pct, sources=sources
    )


def _preset_image_settings(spec, backbone):
    """`(image_size, scale, offset, resample, sources)` from the preset's ImageConverter (keras-hub presets,
    timm's `pretrained_cfg`), else Hugging Face's `preprocessor_config.json`, else defaults; `sources` says which."""
    try:
        converter = keras_hub.layers.ImageConverter.from_preset(spec)
    except (FileNotFoundError, ValueError):  # no image_converter.json / no converter class
        converter = None
    if converter is not None:
        image_size, scale, offset = converter.image_size, converter.scale, converter.offset
        resample = converter.interpolation
        found_in = "the preset's image converter"
    else:
        image_size, scale, offset, resample = _hugging_face_image_settings(spec)
        found_in = "preprocessor_config.json"
    sources = {
        "size": found_in if image_size else "default",
        "normalization": found_in if scale is not None else "default",
        "resample": found_in if resample in RESAMPLE_FILTERS else "default",
    }
    # A fixed input shape is a hard constraint; the converter's size only
    # matters for backbones that take any size.
    fixed_size = tuple(backbone.inputs[0].shape[1:3])
    if None not in fixed_size:
        image_size = fixed_size
        sources["size"] = "the backbone's fixed input shape"
    return (
        tuple(image_size or DEFAULT_IMAGE_SIZE),
        DEFAULT_SCALE if scale is None else _plain(scale),
        DEFAULT_OFFSET if offset is None else _plain(offset),
        resample if resample in RESAMPLE_FILTERS else DEFAULT_RESAMPLE,
        sources,
    )


def _hugging_face_image_settings(spec):
    """Size, normalisation and resize filter from a Hugging Face `preprocessor_config.json`, if any.

    keras-hub builds no ImageConverter for Hugging Face ViT folders, but their
    image processor config says how the weights were trained to see images.
    """
    config = _json_file(Path(spec) / "preprocessor_config.json")
    if not config:
        return None, None, None, None
    size = config.get("size")
    image_size = (size["height"], size["width"]) if isinstance(size, dict) and "height" in size else None
    resample = PIL_RESAMPLE_NAMES.get(config.get("resample"))
    rescale = config.get("rescale_factor", 1.0 / 255.0) if config.get("do_rescale", True) else 1.0
    if not config.get("do_normalize", False):
        return image_size, rescale, 0.0, resample
    mean, std = config["image_mean"], config["image_std"]
    return image_size, [rescale / s for s in std], [-m / s for m, s in zip(mean, std)], resample


def _timm_hgnetv2_problem(spec):
    """Why keras-hub 0.32 fails on a timm hgnetv2 folder not tagged `ssld`, else `None`.

    timm's hgnetv2 keeps learnable affine blocks (`lab.scale`, `lab.bias`) of
    shape [1], which keras-hub's scalar variables refuse; for `ssld` tags
    (timm's published weights) it builds the backbone without them.
    """
    config = _json_file(Path(spec) / "config.json")
    architecture = str(config.get("architecture", ""))
    tag = str((config.get("pretrained_cfg") or {}).get("tag") or "")
    if not architecture.startswith("hgnetv2") or tag.startswith("ssld"):
        return None
    return (
        f"keras-hub 0.32 loads timm {architecture} checkpoints only with an ssld tag (this one: {tag!r}): "
        "it cannot read their [1]-shaped learnable affine blocks"
    )


def _warn_of_unread_affine_blocks(spec, backbone):
    """Warn when keras-hub built a timm hgnetv2 without the learnable affine blocks its file holds, and they
    are not the identity (scale 1, bias 0): then the converted backbone is not the checkpoint's function."""
    path = Path(spec) / "model.safetensors"
    config = backbone.get_config()
    if config.get("use_learnable_affine_block", True) or not path.is_file():
        return
    with safe_open(str(path), framework="numpy") as tensors:
        blocks = {name: tensors.get_tensor(name) for name in tensors.keys() if ".lab." in name}
    changed = sum(not np.all(value == (1.0 if name.endswith(".scale") else 0.0)) for name, value in blocks.items())
    if changed:
        logger.warning(
            "%s: keras-hub 0.32 leaves out this hgnetv2's learnable affine blocks (ssld tag), and %d of their "
            "%d tensors are not the identity: the converted backbone differs from timm's; fine-tuning adapts it",
            spec, changed, len(blocks),
        )


def _checkpoint_crop_pct(spec):
    """The centre crop share the checkpoint is evaluated with, else `None`.

    timm: `pretrained_cfg.crop_pct` when `crop_mode` is `center` (timm's
    default); `squash` and `border` resize differently and are not
    reproduced. Hugging Face: a centre crop after a shortest-edge resize
    (BitImageProcessor, as DINOv2's) is the same crop, `crop_size /
    shortest_edge`; a crop after a fixed-size resize (DeiT's 256x256, then
    224) is not reproduced: whole images are resized.
    """
    folder = Path(spec)
    pretrained_cfg = _json_file(folder / "config.json").get("pretrained_cfg") or {}
    processor = _json_file(folder / "preprocessor_config.json")
    crop_pct = None
    if pretrained_cfg.get("crop_mode", "center") == "center":
        crop_pct = pretrained_cfg.get("crop_pct")
    size, crop_size = processor.get("size"), processor.get("crop_size")
    if processor.get("do_center_crop") and isinstance(size, dict) and isinstance(crop_size, dict):
        shortest_edge, crop_side = size.get("shortest_edge"), crop_size.get("height")
        if isinstance(shortest_edge, int) and isinstance(crop_side, int) and crop_side == crop_size.get("width"):
            crop_pct = crop_side / shortest_edge
    if not isinstance(crop_pct, (int, float)) or not 0.0 < crop_pct <= 1.0:
        return None
    return float(crop_pct)


def _json_file(path):
    """A JSON object file's content, `{}` when there is none (`UserError` naming it when it is not JSON)."""
    if not path.is_file():
        return {}
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"invalid JSON: {error}", path=path) from None
    return content if isinstance(content, dict) else {}


def _plain(value):
    """A float or a list of floats (converters may hold numpy values)."""
    if isinstance(value, (int, float)):
        return float(value)
    return [float(item) for item in value]
