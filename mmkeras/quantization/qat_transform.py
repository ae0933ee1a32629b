"""`quantize_model`: a float mmkeras model to a quantization-aware-training (QAT) model.

Every layer of the model, keras-hub blocks' insides included, is looked up by
its exact type:

- quantized in place (`quantized_layer.convert_layer`): Dense, EinsumDense
  (as 2-D matmuls), Conv2D (grouped too) and DepthwiseConv2D (per-channel
  kernels), MultiHeadAttention (its scores; queries and context too unless
  `QuantizerSettings.float_attention`), LayerNormalization, Activation, ReLU,
  Softmax, Add, Multiply (fake-quantized outputs);
- left float unless `QuantizerSettings.integer_only`: hard-swish activations
  and (with `float_attention`, the default) the attention's queries,
  probabilities (Softmax) and context, which the int8 export then keeps float
  as in a post-training export (`FLOAT_OPS_IN_INT8`: XNNPACK runs HARD_SWISH,
  BATCH_MATMUL and SOFTMAX only in float). The scores stay fake-quantized: the
  masked softmax sets masked scores to -1e9, and calibrated instead, that
  tensor's int8 range (shared with the scores) spanned -1e9, so every real
  score rounded to one value (docs/design.md#int8-latency-on-xnnpack);
- folded: a BatchNormalization right after a convolution (inside keras-hub
  MobileNet blocks, or an edge of a functional graph);
- no quantizer needed: layers without arithmetic of their own or whose tensors
  the int8 converter quantizes from calibration data (Embedding, Dropout,
  Reshape, padding, pooling, Rescaling, Concatenate, mmkeras' ModalityDropout,
  which hides modalities while QAT trains as while the float run trained);
- containers whose sub-layers are visited (functional models, keras-hub
  blocks, mmkeras fusion layers). The few element-wise ops these compute
  inline (residual adds, pooling, masking) get their int8 ranges from the
  export's calibration rows;
- any other type is unknown: `UnknownLayerError` names it (or, with
  `on_unknown="warn"`, a warning names it and it stays float).

Ranges of activation quantizers come from data: `calibrate_ranges` sets them
on a few batches before QAT training (which then tracks them), and an
uncalibrated model cannot be exported (`check_calibrated`).

Example:
>>> from mmkeras.models import build_model
>>> model, preprocessor = build_model(num_classes=2, texts=["a red circle"], seed=0)
>>> qat_model = quantize_model(model)
>>> calibrate_ranges(qat_model, [preprocessor(["a red circle"], [None])])
>>> check_calibrated(qat_model)
"""

import logging
import tempfile
from pathlib import Path

import keras
import keras_hub

from mmkeras import compat
from mmkeras.errors import UserError
from mmkeras.models.concat_fusion import ConcatFusion
from mmkeras.models.cross_attention_fusion import CrossAttentionFusion
from mmkeras.models.gated_fusion import GatedFusion
from mmkeras.models.inference_function import inference_function
from mmkeras.models.modality_dropout import ModalityDropout
from mmkeras.quantization.fake_quant import ActivationQuantizer
from mmkeras.quantization.quantized_attention import QuantizedMultiHeadAttention
from mmkeras.quantization.quantized_conv import QuantizedConv2D, QuantizedDepthwiseConv2D, fold_batch_normalization
from mmkeras.quantization.quantized_dense import QuantizedDense, QuantizedEinsumDense
from mmkeras.quantization.quantized_layer import QuantizerSettings, convert_layer
from mmkeras.quantization.quantized_outputs import (
    QuantizedActivation,
    QuantizedAdd,
    QuantizedLayerNormalization,
    QuantizedMultiply,
    QuantizedReLU,
    QuantizedSoftmax,
)

logger = logging.getLogger("mmkeras")

QUANTIZED_CLASSES = {
    keras.layers.Dense: QuantizedDense,
    keras.layers.EinsumDense: QuantizedEinsumDense,
    keras.layers.Conv2D: QuantizedConv2D,
    keras.layers.DepthwiseConv2D: QuantizedDepthwiseConv2D,
    keras.layers.MultiHeadAttention: QuantizedMultiHeadAttention,
    keras.layers.LayerNormalization: QuantizedLayerNormalization,
    keras.layers.Activation: QuantizedActivation,
    keras.layers.ReLU: QuantizedReLU,
    keras.layers.Softmax: QuantizedSoftmax,
    keras.layers.Add: QuantizedAdd,
    keras.layers.Multiply: QuantizedMultiply,
}
NO_QUANTIZER_CLASSES = (
    keras.layers.InputLayer,
    keras.layers.Embedding,
    keras.layers.ReversibleEmbedding,
    keras.layers.Dropout,
    keras.layers.Reshape,
    keras.layers.Flatten,
    keras.layers.ZeroPadding2D,
    keras.layers.Rescaling,
    keras.layers.Concatenate,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.MaxPooling2D,
    keras_hub.layers.PositionEmbedding,
    ModalityDropout,  # the identity at inference: the exported model has no trace of it
)
_MOBILENET = compat.mobilenet_module()
_VIT = compat.vit_layers_module()
# Blocks that call their sub-layers; the convolution / BatchNorm pairs they apply in a row.
CONTAINER_CONV_NORM_PAIRS = {
    keras_hub.layers.TransformerEncoder: (),
    _VIT.ViTPatchingAndEmbedding: (),
    _VIT.ViTEncoder: (),
    _VIT.ViTEncoderBlock: (),
    _VIT.MLP: (),
    _MOBILENET.SqueezeAndExcite2D: (),
    _MOBILENET.ConvBnActBlock: (("conv", "batch_normalization"),),
    _MOBILENET.DepthwiseConvBlock: (("conv1", "batch_normalization1"), ("conv2", "batch_normalization2")),
    _MOBILENET.InvertedResidualBlock: (
        ("conv1", "batch_normalization1"),
        ("conv2", "batch_normalization2"),
        ("conv3", "batch_normalization3"),
    ),
    CrossAttentionFusion: (),
    ConcatFusion: (),
    GatedFusion: (),
}
FOLDABLE_CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


class UnknownLayerError(UserError):
    """The model has layers whose type the QAT transform does not know.

    Args:
        layers: `{class path: [layer names]}`.
    """

    def __init__(self, layers: dict[str, list[str]]):
        self.layers = layers
        listed = "; ".join(f"{name} ({', '.join(names[:3])})" for name, names in sorted(layers.items()))
        super().__init__(
            f"cannot quantize layer type(s) the QAT transform does not know: {listed}; "
            "they would stay float (`mmkeras qat --unknown-layers warn` or on_unknown='warn' accepts that)"
        )


def quantize_model(
    model: keras.Model, settings: QuantizerSettings | None = None, *, on_unknown: str = "error", copy: bool = True
) -> keras.Model:
    """Turn a float model from `build_model` (or a run) into a QAT model.

    Args:
        model: a built functional Keras model.
        settings: bit width and range decay of the quantizers.
        on_unknown: `error` (default) refuses a layer type it does not know;
            `warn` logs a warning naming it and leaves it float.
        copy: quantize a copy (made through a `.keras` file; the model must
            be savable) and leave `model` as it is; `False` converts `model`
            itself, which is cheaper for a model loaded only to be quantized.

    Returns:
        The QAT model: same inputs, outputs and (for the float layers) weights,
        with fake quantizers whose ranges `calibrate_ranges` must set before
        it predicts or trains.

    Raises:
        UnknownLayerError: a layer type it does not know (with `on_unknown="error"`).
    """
    if on_unknown not in ("error", "warn"):
        raise UserError(f"on_unknown must be 'error' or 'warn', got {on_unknown!r}")
    settings = settings or QuantizerSettings()
    if copy:
        model = _copy_model(model)
    layers = _all_layers(model)
    unknown = _unknown_layers(layers)
    for layer in layers:  # refuse before changing anything
        if type(layer) is keras.layers.EinsumDense:
            QuantizedEinsumDense.check_equation(layer.equation, layer.bias_axes)
    if unknown and on_unknown == "error":
        raise UnknownLayerError(unknown)
    pairs = _conv_norm_pairs([model, *layers])
    folded = {id(norm) for _, norm in pairs}
    leftover = [
        layer.name
        for layer in layers
        if type(layer) is keras.layers.BatchNormalization and id(layer) not in folded
    ]
    if leftover:
        raise UserError(f"cannot quantize: BatchNormalization layer(s) not right after a convolution: {leftover}")
    for name, names in unknown.items():
        logger.warning("QAT: layer type %s is unknown and stays float: %s", name, ", ".join(names))
    fused = [conv for conv, norm in pairs if _fused_activation_follows(norm)]
    for conv, norm in pairs:
        fold_batch_normalization(conv, norm)
    for layer in layers:
        quantized_class = QUANTIZED_CLASSES.get(type(layer))
        if stays_float(layer, settings):
            continue
        if quantized_class is QuantizedMultiHeadAttention:
            convert_layer(layer, quantized_class, settings, QuantizedMultiHeadAttention.quantizer_names(settings))
        elif quantized_class is QuantizedActivation:
            convert_layer(layer, quantized_class, settings, QuantizedActivation.quantizer_names(layer))
        elif quantized_class is not None:
            convert_layer(layer, quantized_class, settings)
    for conv in fused:
        conv.quantizes_output = False
    return model


def stays_float(layer, settings: QuantizerSettings) -> bool:
    """Whether `layer` is left without fake quantization: hard-swish, and Softmax with float attention."""
    if settings.integer_only:
        return False
    if type(layer) is keras.layers.Softmax:
        return settings.float_attention
    return type(layer) is keras.layers.Activation and layer.activation is keras.activations.hard_swish


def activation_quantizers(model: keras.Model) -> list[ActivationQuantizer]:
    """Every `ActivationQuantizer` a QAT model applies (not those of convolutions a fused activation follows)."""
    layers = _all_layers(model)
    unused = {id(layer.output_quantizer) for layer in layers if not getattr(layer, "quantizes_output", True)}
    return [layer for layer in layers if isinstance(layer, ActivationQuantizer) and id(layer) not in unused]


def is_quantized(model: keras.Model) -> bool:
    return bool(activation_quantizers(model))


def calibrate_ranges(model: keras.Model, batches):
    """Set every activation quantizer's range from `batches` of model inputs (inference mode).

    The first batch sets each range, later batches move it by the quantizers'
    moving average. Runs batch by batch in a function compiled here, while the
    quantizers observe (a fresh one, so no trace made without `observing`
    is reused): eager calls of EfficientNet-Lite0 at 224 on 32 images peaked
    at 3.29 GB RSS, the compiled call at 1.56 GB
    (docs/design.md#efficientnet-lite0-measured-as-a-user-would).
    """
    quantizers = activation_quantizers(model)
    for quantizer in quantizers:
        quantizer.observing = True
    try:
        observe = inference_function(model)
        for batch in batches:
            observe(batch)
    finally:
        for quantizer in quantizers:
            quantizer.observing = False


def check_calibrated(model: keras.Model):
    """Refuse a QAT model whose activation quantizers never saw data."""
    missing = [quantizer.name for quantizer in activation_quantizers(model) if float(quantizer.calibrated.numpy()) < 1]
    if missing:
        raise UserError(
            f"the QAT model has {len(missing)} activation quantizer(s) without a range "
            f"(e.g. {missing[0]}); run calibrate_ranges or QAT training first"
        )


def _copy_model(model):
    with tempfile.TemporaryDirectory(prefix="mmkeras-qat-") as folder:
        path = Path(folder) / "model.keras"
        model.save(path)
        return keras.models.load_model(path, compile=False)


def _all_layers(model):
    return compat.flatten_layers(model)


def _unknown_layers(layers):
    unknown = {}
    for layer in layers:
        kind = type(layer)
        if kind in QUANTIZED_CLASSES or kind in CONTAINER_CONV_NORM_PAIRS or kind is keras.layers.BatchNormalization:
            continue
        if kind in NO_QUANTIZER_CLASSES or isinstance(layer, ActivationQuantizer) or compat.is_functional_model(layer):
            continue
        unknown.setdefault(f"{kind.__module__}.{kind.__name__}", []).append(layer.name)
    return unknown


def _conv_norm_pairs(layers):
    """(convolution, BatchNormalization) pairs applied in a row: in known blocks and functional graphs."""
    pairs = []
    for layer in layers:
        for conv_name, norm_name in CONTAINER_CONV_NORM_PAIRS.get(type(layer), ()):
            pairs.append((getattr(layer, conv_name), getattr(layer, norm_name)))
        if compat.is_functional_model(layer):
            pairs.extend(_functional_conv_norm_pairs(layer))
    return pairs


def _fused_activation_follows(norm) -> bool:
    """Whether `norm`'s output goes only to a ReLU or ReLU6, which the converter fuses into the convolution that
    `norm` folds into (`fused_activation_function`): the int8 model then quantizes the activation's output alone.

    Fake-quantizing the convolution's output too simulated a rounding the int8 model does not have: on
    EfficientNet-Lite0 a step of 0.12 (median; up to 0.79) on the pre-activation range (e.g. [-101, 99]) against
    6 / 255 = 0.0235 after ReLU6 (docs/design.md#efficientnet-lite0-measured-as-a-user-would).
    """
    consumers = compat.graph_consumers(norm)
    if len(consumers) != 1:
        return False
    consumer = consumers[0]
    if type(consumer) is keras.layers.Activation:
        return consumer.activation in (keras.activations.relu, keras.activations.relu6)
    if type(consumer) is keras.layers.ReLU:
        return consumer.max_value in (None, 6.0) and not consumer.negative_slope and not consumer.threshold
    return False


def _functional_conv_norm_pairs(model):
    pairs = []
    for layer in model.layers:
        if type(layer) is not keras.layers.BatchNormalization or compat.graph_call_count(layer) != 1:
            continue
        producers = compat.graph_producers(layer)
        if len(producers) != 1:
            continue
        producer = producers[0]
        # Folding changes the convolution's output: only when the norm is its sole consumer.
        if type(producer) in FOLDABLE_CONVOLUTIONS and compat.graph_consumer_count(producer) == 1:
            pairs.append((producer, layer))
    return pairs
