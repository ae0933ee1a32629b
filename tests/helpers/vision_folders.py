"""Tiny random vision checkpoint folders, written in each family's on-disk layout.

Hugging Face (`save_pretrained`): `config.json` with the keys `transformers`
writes for the family, `model.safetensors` with its tensor names (`Linear`
weights `[out, in]`, convolutions `[out, in, kh, kw]`) and the image
processor's `preprocessor_config.json`; the widths are tiny. timm
(`push_to_hub`): `config.json` with `architecture` and `pretrained_cfg`, and
`model.safetensors` with timm's names; keras-hub converts timm checkpoints by
architecture name, so each is the family's smallest real architecture with
random weights (BatchNorm running statistics included). Every writer returns
the tensors it wrote, by name.
"""

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from tests.helpers.hugging_face_folders import (
    HEADS,
    HIDDEN,
    INTERMEDIATE,
    RandomTensors,
)

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
HALF_MEAN, HALF_STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]
# Hugging Face image processors name Pillow's filters by number.
PIL_BILINEAR, PIL_BICUBIC = 2, 3
VIT_IMAGE_SIZE, VIT_PATCH = 16, 8
TIMM_IMAGE_SIZE = 32


class VisionTensors(RandomTensors):
    """Random tensors by name, with PyTorch's convolution and BatchNorm layouts."""

    def conv(self, name, inputs, outputs, kernel, *, groups=1, bias=False):
        self.add(f"{name}.weight", outputs, inputs // groups, kernel, kernel)
        if bias:
            self.add(f"{name}.bias", outputs)

    def batch_norm(self, name, width):
        self.layer_norm(name, width)
        self.add(f"{name}.running_mean", width)
        self[f"{name}.running_var"] = np.abs(self[f"{name}.weight"]) + 0.5
        self[f"{name}.num_batches_tracked"] = np.array(0, np.int64)

    def conv_bn(self, conv, norm, inputs, outputs, kernel, *, groups=1):
        self.conv(conv, inputs, outputs, kernel, groups=groups)
        self.batch_norm(norm, outputs)


def _save(folder, tensors, config, preprocessor=None):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(dict(tensors), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    if preprocessor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    return dict(tensors)


# -- Hugging Face -------------------------------------------------------------------------------


def _hugging_face_config(model_type, architecture, **keys):
    """The keys every transformers vision config shares, at tiny widths, and the family's own."""
    return {
        "model_type": model_type, "architectures": [architecture], "image_size": VIT_IMAGE_SIZE,
        "patch_size": VIT_PATCH, "num_channels": 3, "hidden_size": HIDDEN, "num_hidden_layers": 1,
        "num_attention_heads": HEADS, "hidden_act": "gelu", "initializer_range": 0.02, "torch_dtype": "float32",
        **keys,
    }


def _image_processor(processor_type, resample, mean, std, size, **keys):
    return {
        "image_processor_type": processor_type, "do_resize": True, "size": size, "resample": resample,
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": mean, "image_std": std,
        **keys,
    }


def _square(side):
    return {"height": side, "width": side}


def _patch_embedding(tensors, prefix):
    tensors.conv(prefix, 3, HIDDEN, VIT_PATCH, bias=True)


def _vit_layer(tensors, prefix):
    """A ViT/DeiT encoder layer: `attention.attention.{query,key,value}`, `layernorm_before/after`."""
    for part in ("query", "key", "value"):
        tensors.linear(f"{prefix}.attention.attention.{part}", HIDDEN, HIDDEN)
    tensors.linear(f"{prefix}.attention.output.dense", HIDDEN, HIDDEN)
    tensors.layer_norm(f"{prefix}.layernorm_before", HIDDEN)
    tensors.layer_norm(f"{prefix}.layernorm_after", HIDDEN)
    tensors.linear(f"{prefix}.intermediate.dense", HIDDEN, INTERMEDIATE)
    tensors.linear(f"{prefix}.output.dense", INTERMEDIATE, HIDDEN)


def write_vit_folder(folder, seed=0):
    """ViTForImageClassification (`vit.` names), ViTImageProcessor: bicubic, ImageNet mean/std."""
    tensors = VisionTensors(np.random.default_rng(seed))
    patches = (VIT_IMAGE_SIZE // VIT_PATCH) ** 2
    _patch_embedding(tensors, "vit.embeddings.patch_embeddings.projection")
    tensors.add("vit.embeddings.cls_token", 1, 1, HIDDEN)
    tensors.add("vit.embeddings.position_embeddings", 1, patches + 1, HIDDEN)
    _vit_layer(tensors, "vit.encoder.layer.0")
    tensors.layer_norm("vit.layernorm", HIDDEN)
    tensors.linear("classifier", HIDDEN, 3)
    config = _hugging_face_config(
        "vit", "ViTForImageClassification", intermediate_size=INTERMEDIATE, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, layer_norm_eps=1e-12, qkv_bias=True, encoder_stride=VIT_PATCH,
        id2label={"0": "a", "1": "b", "2": "c"}, label2id={"a": 0, "b": 1, "c": 2},
    )
    processor = _image_processor(
        "ViTImageProcessor", PIL_BICUBIC, IMAGENET_MEAN, IMAGENET_STD, _square(VIT_IMAGE_SIZE)
    )
    return _save(folder, tensors, config, processor)


def write_deit_folder(folder, seed=0):
    """DeiTForImageClassificationWithTeacher (`deit.` names, a distillation token and head); DeiTImageProcessor
    resizes to 256x256 and crops the centre 224 (scaled down here)."""
    tensors = VisionTensors(np.random.default_rng(seed))
    patches = (VIT_IMAGE_SIZE // VIT_PATCH) ** 2
    _patch_embedding(tensors, "deit.embeddings.patch_embeddings.projection")
    tensors.add("deit.embeddings.cls_token", 1, 1, HIDDEN)
    tensors.add("deit.embeddings.distillation_token", 1, 1, HIDDEN)
    tensors.add("deit.embeddings.position_embeddings", 1, patches + 2, HIDDEN)
    _vit_layer(tensors, "deit.encoder.layer.0")
    tensors.layer_norm("deit.layernorm", HIDDEN)
    tensors.linear("cls_classifier", HIDDEN, 3)
    tensors.linear("distillation_classifier", HIDDEN, 3)
    config = _hugging_face_config(
        "deit", "DeiTForImageClassificationWithTeacher", intermediate_size=INTERMEDIATE, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, layer_norm_eps=1e-12, qkv_bias=True, encoder_stride=VIT_PATCH,
        id2label={"0": "a", "1": "b", "2": "c"}, label2id={"a": 0, "b": 1, "c": 2},
    )
    processor = _image_processor(
        "DeiTImageProcessor", PIL_BICUBIC, IMAGENET_MEAN, IMAGENET_STD, _square(VIT_IMAGE_SIZE * 8 // 7),
        do_center_crop=True, crop_size=_square(VIT_IMAGE_SIZE),
    )
    return _save(folder, tensors, config, processor)


def write_dinov2_folder(folder, seed=0):
    """Dinov2Model (no prefix; layer scale, mask token); BitImageProcessor: shortest edge 256, centre 224 (0.875)."""
    tensors = VisionTensors(np.random.default_rng(seed))
    patches = (VIT_IMAGE_SIZE // VIT_PATCH) ** 2
    tensors.add("embeddings.cls_token", 1, 1, HIDDEN)
    tensors.add("embeddings.mask_token", 1, HIDDEN)
    tensors.add("embeddings.position_embeddings", 1, patches + 1, HIDDEN)
    _patch_embedding(tensors, "embeddings.patch_embeddings.projection")
    layer = "encoder.layer.0"
    tensors.layer_norm(f"{layer}.norm1", HIDDEN)
    for part in ("query", "key", "value"):
        tensors.linear(f"{layer}.attention.attention.{part}", HIDDEN, HIDDEN)
    tensors.linear(f"{layer}.attention.output.dense", HIDDEN, HIDDEN)
    tensors.add(f"{layer}.layer_scale1.lambda1", HIDDEN)
    tensors.layer_norm(f"{layer}.norm2", HIDDEN)
    tensors.linear(f"{layer}.mlp.fc1", HIDDEN, 4 * HIDDEN)
    tensors.linear(f"{layer}.mlp.fc2", 4 * HIDDEN, HIDDEN)
    tensors.add(f"{layer}.layer_scale2.lambda1", HIDDEN)
    tensors.layer_norm("layernorm", HIDDEN)
    config = _hugging_face_config(
        "dinov2", "Dinov2Model", mlp_ratio=4, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        layer_norm_eps=1e-6, qkv_bias=True, layerscale_value=1.0, drop_path_rate=0.0, use_swiglu_ffn=False,
        apply_layernorm=True, reshape_hidden_states=True, out_features=["stage1"], out_indices=[1],
        stage_names=["stem", "stage1"],
    )
    processor = _image_processor(
        "BitImageProcessor", PIL_BICUBIC, IMAGENET_MEAN, IMAGENET_STD, {"shortest_edge": 256},
        do_center_crop=True, crop_size=_square(224), do_convert_rgb=True,
    )
    return _save(folder, tensors, config, processor)


def write_dinov3_folder(folder, seed=0):
    """DINOv3ViTModel (`layer.N`, rotary positions, register tokens, no key bias); bilinear, ImageNet mean/std."""
    tensors = VisionTensors(np.random.default_rng(seed))
    registers = 2
    tensors.add("embeddings.cls_token", 1, 1, HIDDEN)
    tensors.add("embeddings.mask_token", 1, 1, HIDDEN)
    tensors.add("embeddings.register_tokens", 1, registers, HIDDEN)
    _patch_embedding(tensors, "embeddings.patch_embeddings")
    layer = "layer.0"
    tensors.layer_norm(f"{layer}.norm1", HIDDEN)
    for part in ("q_proj", "v_proj", "o_proj"):
        tensors.linear(f"{layer}.attention.{part}", HIDDEN, HIDDEN)
    tensors.add(f"{layer}.attention.k_proj.weight", HIDDEN, HIDDEN)  # key_bias: false
    tensors.add(f"{layer}.layer_scale1.lambda1", HIDDEN)
    tensors.layer_norm(f"{layer}.norm2", HIDDEN)
    tensors.linear(f"{layer}.mlp.up_proj", HIDDEN, INTERMEDIATE)
    tensors.linear(f"{layer}.mlp.down_proj", INTERMEDIATE, HIDDEN)
    tensors.add(f"{layer}.layer_scale2.lambda1", HIDDEN)
    tensors.layer_norm("norm", HIDDEN)
    config = _hugging_face_config(
        "dinov3_vit", "DINOv3ViTModel", intermediate_size=INTERMEDIATE, attention_dropout=0.0,
        layer_norm_eps=1e-5, rope_theta=100.0, query_bias=True, key_bias=False, value_bias=True,
        proj_bias=True, mlp_bias=True, layerscale_value=1.0, drop_path_rate=0.0, use_gated_mlp=False,
        num_register_tokens=registers, pos_embed_shift=None, pos_embed_jitter=None, pos_embed_rescale=2.0,
    )
    processor = _image_processor(
        "DINOv3ViTImageProcessorFast", PIL_BILINEAR, IMAGENET_MEAN, IMAGENET_STD, _square(VIT_IMAGE_SIZE)
    )
    return _save(folder, tensors, config, processor)


SWIN_PATCH, SWIN_WINDOW, SWIN_DEPTHS = 2, 4, (1, 1)


def write_swin_folder(folder, seed=0):
    """SwinForImageClassification (`swin.` names; two stages, a patch merging between); bicubic, mean/std."""
    tensors = VisionTensors(np.random.default_rng(seed))
    tensors.conv("swin.embeddings.patch_embeddings.projection", 3, HIDDEN, SWIN_PATCH, bias=True)
    tensors.layer_norm("swin.embeddings.norm", HIDDEN)
    width = HIDDEN
    for stage, depth in enumerate(SWIN_DEPTHS):
        for block in range(depth):
            prefix = f"swin.encoder.layers.{stage}.blocks.{block}"
            tensors.layer_norm(f"{prefix}.layernorm_before", width)
            tensors.add(f"{prefix}.attention.self.relative_position_bias_table", (2 * SWIN_WINDOW - 1) ** 2, HEADS)
            tensors[f"{prefix}.attention.self.relative_position_index"] = np.zeros(
                (SWIN_WINDOW**2, SWIN_WINDOW**2), np.int64
            )
            for part in ("query", "key", "value"):
                tensors.linear(f"{prefix}.attention.self.{part}", width, width)
            tensors.linear(f"{prefix}.attention.output.dense", width, width)
            tensors.layer_norm(f"{prefix}.layernorm_after", width)
            tensors.linear(f"{prefix}.intermediate.dense", width, 4 * width)
            tensors.linear(f"{prefix}.output.dense", 4 * width, width)
        if stage < len(SWIN_DEPTHS) - 1:
            tensors.add(f"swin.encoder.layers.{stage}.downsample.reduction.weight", 2 * width, 4 * width)
            tensors.layer_norm(f"swin.encoder.layers.{stage}.downsample.norm", 4 * width)
            width *= 2
    tensors.layer_norm("swin.layernorm", width)
    tensors.linear("classifier", width, 3)
    config = _hugging_face_config(
        "swin", "SwinForImageClassification", patch_size=SWIN_PATCH, embed_dim=HIDDEN, depths=list(SWIN_DEPTHS),
        num_heads=[HEADS] * len(SWIN_DEPTHS), window_size=SWIN_WINDOW, mlp_ratio=4.0, qkv_bias=True,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, drop_path_rate=0.0,
        use_absolute_embeddings=False, layer_norm_eps=1e-5, encoder_stride=SWIN_PATCH * 2,
        hidden_size=width, num_layers=len(SWIN_DEPTHS),
    )
    processor = _image_processor(
        "ViTImageProcessor", PIL_BICUBIC, IMAGENET_MEAN, IMAGENET_STD, _square(VIT_IMAGE_SIZE)
    )
    return _save(folder, tensors, config, processor)


# -- timm ---------------------------------------------------------------------------------------


def _timm_config(architecture, num_features, *, interpolation="bicubic", mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 crop_pct=0.875, **pretrained_cfg):
    """timm's `config.json`: the architecture and its `pretrained_cfg` (at `TIMM_IMAGE_SIZE`)."""
    return {
        "architecture": architecture, "num_classes": 10, "num_features": num_features, "global_pool": "avg",
        "pretrained_cfg": {
            "tag": "in1k", "input_size": [3, TIMM_IMAGE_SIZE, TIMM_IMAGE_SIZE], "interpolation": interpolation,
            "mean": mean, "std": std, "crop_pct": crop_pct, "crop_mode": "center", "num_classes": 10,
            "pool_size": [1, 1], **pretrained_cfg,
        },
    }


def write_timm_resnet_folder(folder, seed=0):
    """timm `resnet18` (torchvision-style names)."""
    tensors = VisionTensors(np.random.default_rng(seed))
    tensors.conv_bn("conv1", "bn1", 3, 64, 7)
    inputs = 64
    for stage, width in enumerate([64, 128, 256, 512], start=1):
        for block in range(2):
            name = f"layer{stage}.{block}"
            tensors.conv_bn(f"{name}.conv1", f"{name}.bn1", inputs, width, 3)
            tensors.conv_bn(f"{name}.conv2", f"{name}.bn2", width, width, 3)
            if block == 0 and stage > 1:
                tensors.conv_bn(f"{name}.downsample.0", f"{name}.downsample.1", inputs, width, 1)
            inputs = width
    tensors.linear("fc", 512, 10)
    config = _timm_config("resnet18", 512, first_conv="conv1", classifier="fc")
    return _save(folder, tensors, config)


def _make_divisible(value, divisor=8):
    """timm's `make_divisible`: the nearest multiple of `divisor`, never 10% below `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


# mobilenetv3_small_050's stages after the stem block: (kernel, [(expanded width, output width, squeeze-excite)]).
MOBILENET_V3_SMALL_050 = (
    (3, [(40, 16, False), (56, 16, False)]),
    (5, [(64, 24, True), (144, 24, True), (144, 24, True)]),
    (5, [(72, 24, True), (72, 24, True)]),
    (5, [(144, 48, True), (288, 48, True), (288, 48, True)]),
)


def write_timm_mobilenet_folder(folder, seed=0):
    """timm `mobilenetv3_small_050` (`conv_stem`, `blocks.S.B` with `conv_pw/conv_dw/se/conv_pwl`), bilinear."""
    tensors = VisionTensors(np.random.default_rng(seed))

    def squeeze_excite(prefix, width):
        reduced = _make_divisible(width * 0.25)
        tensors.conv(f"{prefix}.se.conv_reduce", width, reduced, 1, bias=True)
        tensors.conv(f"{prefix}.se.conv_expand", reduced, width, 1, bias=True)

    tensors.conv_bn("conv_stem", "bn1", 3, 16, 3)
    tensors.conv_bn("blocks.0.0.conv_dw", "blocks.0.0.bn1", 16, 16, 3, groups=16)
    squeeze_excite("blocks.0.0", 16)
    tensors.conv_bn("blocks.0.0.conv_pw", "blocks.0.0.bn2", 16, 8, 1)
    inputs = 8
    for stage, (kernel, blocks) in enumerate(MOBILENET_V3_SMALL_050, start=1):
        for block, (expanded, outputs, has_se) in enumerate(blocks):
            prefix = f"blocks.{stage}.{block}"
            tensors.conv_bn(f"{prefix}.conv_pw", f"{prefix}.bn1", inputs, expanded, 1)
            tensors.conv_bn(f"{prefix}.conv_dw", f"{prefix}.bn2", expanded, expanded, kernel, groups=expanded)
            if has_se:
                squeeze_excite(prefix, expanded)
            tensors.conv_bn(f"{prefix}.conv_pwl", f"{prefix}.bn3", expanded, outputs, 1)
            inputs = outputs
    last = len(MOBILENET_V3_SMALL_050) + 1
    tensors.conv_bn(f"blocks.{last}.0.conv", f"blocks.{last}.0.bn1", inputs, 288, 1)
    tensors.conv("conv_head", 288, 1024, 1, bias=True)
    tensors.linear("classifier", 1024, 10)
    config = _timm_config(
        "mobilenetv3_small_050", 1024, interpolation="bilinear", first_conv="conv_stem", classifier="classifier"
    )
    return _save(folder, tensors, config)


VGG11_CONVS = (64, "pool", 128, "pool", 256, 256, "pool", 512, 512, "pool", 512, 512)


def write_timm_vgg_folder(folder, seed=0):
    """timm `vgg11` (`features.N` as torchvision numbers convolution, ReLU and pooling modules), bilinear.

    The `pre_logits` 7x7 convolutions (120M numbers the backbone never reads) are left out.
    """
    tensors = VisionTensors(np.random.default_rng(seed))
    index, inputs = 0, 3
    for item in VGG11_CONVS:
        if item == "pool":
            index += 1
            continue
        tensors.conv(f"features.{index}", inputs, item, 3, bias=True)
        index, inputs = index + 2, item  # the convolution and its ReLU
    tensors.linear("head.fc", 4096, 10)
    config = _timm_config("vgg11", 4096, interpolation="bilinear", first_conv="features.0", classifier="head.fc")
    return _save(folder, tensors, config)


DENSENET121_BLOCKS, GROWTH, BOTTLENECK = (6, 12, 24, 16), 32, 4


def write_timm_densenet_folder(folder, seed=0):
    """timm `densenet121` (`features.denseblockN.denselayerM`, `features.transitionN`), bicubic."""
    tensors = VisionTensors(np.random.default_rng(seed))
    tensors.conv_bn("features.conv0", "features.norm0", 3, 64, 7)
    width = 64
    for block, layers in enumerate(DENSENET121_BLOCKS, start=1):
        for layer in range(1, layers + 1):
            prefix = f"features.denseblock{block}.denselayer{layer}"
            tensors.batch_norm(f"{prefix}.norm1", width)
            tensors.conv(f"{prefix}.conv1", width, BOTTLENECK * GROWTH, 1)
            tensors.batch_norm(f"{prefix}.norm2", BOTTLENECK * GROWTH)
            tensors.conv(f"{prefix}.conv2", BOTTLENECK * GROWTH, GROWTH, 3)
            width += GROWTH
        if block < len(DENSENET121_BLOCKS):
            tensors.batch_norm(f"features.transition{block}.norm", width)
            tensors.conv(f"features.transition{block}.conv", width, width // 2, 1)
            width //= 2
    tensors.batch_norm("features.norm5", width)
    tensors.linear("classifier", width, 10)
    config = _timm_config("densenet121", width, first_conv="features.conv0", classifier="classifier")
    return _save(folder, tensors, config)


# efficientnet_b0's stages: (kernel, repeats, output width, expansion ratio).
EFFICIENTNET_B0 = ((3, 1, 16, 1), (3, 2, 24, 6), (5, 2, 40, 6), (3, 3, 80, 6), (5, 3, 112, 6), (5, 4, 192, 6),
                   (3, 1, 320, 6))


def write_timm_efficientnet_folder(folder, seed=0):
    """timm `efficientnet_b0` (`blocks.S.B`; squeeze-excite reduced from the block's input width), bicubic."""
    tensors = VisionTensors(np.random.default_rng(seed))
    tensors.conv_bn("conv_stem", "bn1", 3, 32, 3)
    inputs = 32
    for stage, (kernel, repeats, outputs, expansion) in enumerate(EFFICIENTNET_B0):
        for block in range(repeats):
            prefix = f"blocks.{stage}.{block}"
            expanded, norms = inputs * expansion, iter(f"{prefix}.bn{index}" for index in (1, 2, 3))
            if expansion != 1:
                tensors.conv_bn(f"{prefix}.conv_pw", next(norms), inputs, expanded, 1)
            tensors.conv_bn(f"{prefix}.conv_dw", next(norms), expanded, expanded, kernel, groups=expanded)
            reduced = max(1, int(inputs * 0.25))
            tensors.conv(f"{prefix}.se.conv_reduce", expanded, reduced, 1, bias=True)
            tensors.conv(f"{prefix}.se.conv_expand", reduced, expanded, 1, bias=True)
            projection = "conv_pw" if expansion == 1 else "conv_pwl"
            tensors.conv_bn(f"{prefix}.{projection}", next(norms), expanded, outputs, 1)
            inputs = outputs
    tensors.conv_bn("conv_head", "bn2", inputs, 1280, 1)
    tensors.linear("classifier", 1280, 10)
    config = _timm_config("efficientnet_b0", 1280, first_conv="conv_stem", classifier="classifier")
    return _save(folder, tensors, config)


# cspresnet50's stages: (output width, bottleneck blocks, stride); each expands to twice its width, split in two.
CSPRESNET50 = ((128, 3, 1), (256, 3, 2), (512, 5, 2), (1024, 2, 2))


def write_timm_cspnet_folder(folder, seed=0):
    """timm `cspresnet50` (`stem.conv1`, `stages.N` with `conv_down/conv_exp/blocks/conv_transition(_b)`), bilinear."""
    tensors = VisionTensors(np.random.default_rng(seed))

    def conv_norm_act(name, inputs, outputs, kernel):  # timm's ConvNormAct: `.conv` and `.bn`
        tensors.conv_bn(f"{name}.conv", f"{name}.bn", inputs, outputs, kernel)

    conv_norm_act("stem.conv1", 3, 64, 7)
    inputs = 64
    for stage, (outputs, blocks, stride) in enumerate(CSPRESNET50):
        prefix = f"stages.{stage}"
        if stride != 1:
            conv_norm_act(f"{prefix}.conv_down", inputs, inputs, 3)
        expanded = 2 * outputs
        conv_norm_act(f"{prefix}.conv_exp", inputs, expanded, 1)
        block_inputs = expanded // 2
        for block in range(blocks):
            conv_norm_act(f"{prefix}.blocks.{block}.conv1", block_inputs, outputs // 2, 1)
            conv_norm_act(f"{prefix}.blocks.{block}.conv2", outputs // 2, outputs // 2, 3)
            conv_norm_act(f"{prefix}.blocks.{block}.conv3", outputs // 2, outputs, 1)
            block_inputs = outputs
        conv_norm_act(f"{prefix}.conv_transition_b", outputs, expanded // 2, 1)
        conv_norm_act(f"{prefix}.conv_transition", expanded, outputs, 1)
        inputs = outputs
    tensors.linear("head.fc", inputs, 10)
    config = _timm_config(
        "cspresnet50", inputs, interpolation="bilinear", first_conv="stem.conv1.conv", classifier="head.fc"
    )
    return _save(folder, tensors, config)


# hgnetv2_b0's stages: (input, middle, output width, blocks, layers per block, kernel, downsample, light layers).
HGNETV2_B0 = ((16, 16, 64, 1, 3, 3, False, False), (64, 32, 256, 1, 3, 3, True, False),
              (256, 64, 512, 2, 3, 5, True, True), (512, 128, 1024, 1, 3, 5, True, True))


def write_timm_hgnetv2_folder(folder, tag="ssld_stage2_ft_in1k", seed=0):
    """timm `hgnetv2_b0` (`stem.stemN`, `stages.N.blocks.M.layers/aggregation`), bicubic.

    timm's hgnetv2 always has learnable affine blocks (`lab.scale`, `lab.bias`: shape [1]); its published
    weights are tagged `ssld_...`.
    """
    tensors = VisionTensors(np.random.default_rng(seed))

    def conv_bn_act(name, inputs, outputs, kernel, *, groups=1, activation=True):
        tensors.conv_bn(f"{name}.conv", f"{name}.bn", inputs, outputs, kernel, groups=groups)
        if activation:  # timm adds its LearnableAffineBlock after activations only
            tensors.add(f"{name}.lab.scale", 1)
            tensors.add(f"{name}.lab.bias", 1)

    conv_bn_act("stem.stem1", 3, 16, 3)
    conv_bn_act("stem.stem2a", 16, 8, 2)
    conv_bn_act("stem.stem2b", 8, 16, 2)
    conv_bn_act("stem.stem3", 32, 16, 3)
    conv_bn_act("stem.stem4", 16, 16, 1)
    for stage, (inputs, middle, outputs, blocks, layers, kernel, downsample, light) in enumerate(HGNETV2_B0):
        if downsample:
            conv_bn_act(f"stages.{stage}.downsample", inputs, inputs, 3, groups=inputs, activation=False)
        for block in range(blocks):
            prefix = f"stages.{stage}.blocks.{block}"
            width = inputs if block == 0 else outputs
            total = width + layers * middle
            for layer in range(layers):
                name = f"{prefix}.layers.{layer}"
                if light:
                    conv_bn_act(f"{name}.conv1", width, middle, 1, activation=False)
                    conv_bn_act(f"{name}.conv2", middle, middle, kernel, groups=middle)
                else:
                    conv_bn_act(name, width, middle, kernel)
                width = middle
            conv_bn_act(f"{prefix}.aggregation.0", total, outputs // 2, 1)
            conv_bn_act(f"{prefix}.aggregation.1", outputs // 2, outputs, 1)
    tensors.conv("head.last_conv.0", 1024, 2048, 1)
    tensors.linear("head.fc", 2048, 10)
    config = _timm_config("hgnetv2_b0", 2048, tag=tag, first_conv="stem.stem1.conv", classifier="head.fc")
    return _save(folder, tensors, config)
