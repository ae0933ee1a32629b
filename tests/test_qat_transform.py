"""The QAT transform (`quantize_model`) on tiny BERT + ViT and BERT + MobileNet models."""

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmkeras.config import RunConfig
from mmkeras.errors import UserError
from mmkeras.models import build_model
from mmkeras.quantization.fake_quant import ActivationQuantizer
from mmkeras.quantization.qat_settings import QuantizerSettings
from mmkeras.quantization.qat_transform import (
    UnknownLayerError,
    activation_quantizers,
    calibrate_ranges,
    check_calibrated,
    quantize_model,
)
from mmkeras.quantization.quantized_attention import QuantizedMultiHeadAttention
from mmkeras.quantization.quantized_conv import FoldedBatchNormalization, fold_batch_normalization
from mmkeras.quantization.quantized_dense import QuantizedEinsumDense
from mmkeras.quantization.quantized_outputs import QuantizedSoftmax
from mmkeras.quantization.run_loading import load_run
from mmkeras.runs import save_run
from mmkeras.training.trainer import apply_freeze

TEXTS = ["a red circle on the left", "a blue square", "a big green triangle", "small yellow star"] * 2


def all_layers(model):
    return list(model._flatten_layers(include_self=False, recursive=True))


def tiny_model(vision_backbone):
    model, preprocessor = build_model("tiny", vision_backbone, num_classes=3, texts=TEXTS, sequence_length=16, seed=0)
    inputs = preprocessor(TEXTS, [None] * len(TEXTS))
    inputs["image"] = np.random.default_rng(0).uniform(0, 255, inputs["image"].shape).astype("float32")
    inputs["modality_mask"][:] = 1.0
    return model, inputs


@pytest.fixture(scope="module", params=["tiny", "tiny-mobilenet"])
def float_model(request):
    return tiny_model(request.param)


def logits(model, inputs):
    return keras.ops.convert_to_numpy(model(inputs, training=False))


def test_transform_keeps_the_float_function_at_high_precision(float_model):
    # 16-bit quantizers make the QAT model numerically close to float: every
    # converted layer (2-D matmuls, folded BatchNorms, explicit attention)
    # computes what the float layer did.
    model, inputs = float_model
    expected = logits(model, inputs)
    qat_model = quantize_model(model, QuantizerSettings(num_bits=16))
    calibrate_ranges(qat_model, [inputs])
    np.testing.assert_allclose(logits(qat_model, inputs), expected, atol=2e-3)
    assert np.array_equal(logits(model, inputs), expected)  # the original model is untouched


def test_int8_transform_stays_close_and_quantizes_every_compute_layer(float_model):
    model, inputs = float_model
    expected = logits(model, inputs)
    qat_model = quantize_model(model)
    calibrate_ranges(qat_model, [inputs])
    check_calibrated(qat_model)
    actual = logits(qat_model, inputs)
    assert not np.array_equal(actual, expected)  # it really quantizes
    assert np.max(np.abs(actual - expected)) < 0.25 * np.max(np.abs(expected))
    layers = all_layers(qat_model)
    compute = [layer for layer in layers if isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense,
                                                               keras.layers.Conv2D, keras.layers.MultiHeadAttention))]
    assert compute and all(type(layer).__name__.startswith("Quantized") for layer in compute)
    assert any(isinstance(layer, QuantizedMultiHeadAttention) for layer in layers)
    norms = [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert all(type(layer) is FoldedBatchNormalization for layer in norms)
    assert len(activation_quantizers(qat_model)) > len(compute)


def hard_swish_layers(model):
    """Whether each hard-swish activation layer of a model was quantized, by name."""
    return {
        layer.name: type(layer).__name__.startswith("Quantized")
        for layer in all_layers(model)
        if isinstance(layer, keras.layers.Activation) and layer.activation is keras.activations.hard_swish
    }


def test_hard_swish_stays_float_unless_integer_only():
    # The int8 export keeps HARD_SWISH float (XNNPACK runs it only in float); fake quantization would force int8.
    model, _ = tiny_model("tiny-mobilenet")
    default = hard_swish_layers(quantize_model(model))
    assert default and not any(default.values())
    assert all(hard_swish_layers(quantize_model(model, QuantizerSettings(integer_only=True))).values())


def attention_quantizers(model):
    """The fake quantizers of each attention layer and whether each Softmax layer was quantized, by name."""
    layers = all_layers(model)
    attention = {layer.name: sorted(name for name in QuantizedMultiHeadAttention.QUANTIZERS if hasattr(layer, name))
                 for layer in layers if isinstance(layer, keras.layers.MultiHeadAttention)}
    softmax = {
        layer.name: isinstance(layer, QuantizedSoftmax) for layer in layers if isinstance(layer, keras.layers.Softmax)
    }
    return attention, softmax


def test_attention_stays_float_unless_integer_only():
    # The int8 export keeps the attention matmuls, softmax and the mask's path float (XNNPACK runs them only in
    # float), so the QAT graph leaves the attention without fake quantization.
    model, _ = tiny_model("tiny-mobilenet")
    attention, softmax = attention_quantizers(quantize_model(model))
    assert attention and not any(attention.values())
    assert softmax and not any(softmax.values())
    attention, softmax = attention_quantizers(quantize_model(model, QuantizerSettings(integer_only=True)))
    assert all(names == sorted(QuantizedMultiHeadAttention.QUANTIZERS) for names in attention.values())
    assert all(softmax.values())
    attention, _ = attention_quantizers(quantize_model(model, QuantizerSettings(float_attention=False)))
    assert all(names == sorted(QuantizedMultiHeadAttention.QUANTIZERS) for names in attention.values())


def test_mobilenet_batch_norms_are_all_folded():
    model, _ = tiny_model("tiny-mobilenet")
    norms = [layer for layer in all_layers(quantize_model(model)) if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 16 and all(type(layer) is FoldedBatchNormalization for layer in norms)


def conv_model(depthwise):
    inputs = keras.Input((8, 8, 4))
    conv = keras.layers.DepthwiseConv2D(3, use_bias=False) if depthwise else keras.layers.Conv2D(6, 3, groups=2)
    outputs = keras.layers.ReLU()(keras.layers.BatchNormalization()(conv(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(outputs)))
    norm = model.layers[2]
    rng = np.random.default_rng(1)
    for variable in (norm.gamma, norm.beta, norm.moving_mean):
        variable.assign(rng.normal(size=variable.shape))
    norm.moving_variance.assign(rng.uniform(0.5, 2.0, size=norm.moving_variance.shape))
    return model


@pytest.mark.parametrize("depthwise", [False, True])
def test_generic_conv_batch_norm_pairs_fold_exactly(depthwise):
    model = conv_model(depthwise)
    images = np.random.default_rng(2).normal(size=(2, 8, 8, 4)).astype("float32")
    expected = logits(model, images)
    qat_model = quantize_model(model, QuantizerSettings(num_bits=16))
    calibrate_ranges(qat_model, [images])
    assert type(qat_model.layers[2]) is FoldedBatchNormalization
    np.testing.assert_allclose(logits(qat_model, images), expected, atol=1e-3)


def test_folding_the_batch_norms_of_a_loaded_frozen_backbone_trains_nothing_new(tmp_path):
    """A frozen backbone stays frozen in QAT. Folding gives every bias-less convolution a bias (all of
    EfficientNet-Lite0's, 21,008 values); in a loaded run only the variables of a frozen backbone are marked
    frozen, not its inner layers, so the new biases were trainable: QAT trained them, and kept every backbone
    activation of a step for their gradients (peak RSS 4.2 GB on EfficientNet-Lite0 at 224, batch 32)."""
    model, preprocessor = build_model("tiny", "tiny-mobilenet", num_classes=3, texts=TEXTS, seed=0)
    apply_freeze(model, "both")
    config = RunConfig(freeze="both", vision_backbone="tiny-mobilenet")
    save_run(tmp_path, model=model, preprocessor=preprocessor, labels=["a", "b", "c"], config=config)
    loaded = load_run(tmp_path).model
    trainable = {variable.path for variable in loaded.trainable_variables}
    qat_model = quantize_model(loaded, copy=False)
    assert {variable.path for variable in qat_model.trainable_variables} == trainable
    assert sum(type(layer) is FoldedBatchNormalization for layer in all_layers(qat_model)) == 16


def conv_norm_then(activation):
    """Conv2D -> BatchNormalization -> `activation`, with a kernel of -1, 0 and 1 (each channel reaching 1):
    exact in int8 per channel, before and after folding, so only activation rounding remains."""
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(4, 3, use_bias=False)
    model = keras.Model(inputs, activation(keras.layers.BatchNormalization()(conv(inputs))))
    kernel = np.random.default_rng(4).integers(-1, 2, size=conv.kernel.shape).astype("float32")
    kernel[0, 0, 0, :] = 1.0
    conv.kernel.assign(kernel)
    return model


def test_a_conv_followed_by_relu6_is_quantized_after_the_relu6_only():
    """The converter fuses ReLU/ReLU6 into the convolution and quantizes only the activation's output. QAT
    quantized the pre-activation too: with values in about [-100, 100], a step of 0.8 against 6 / 255 after."""
    model = conv_norm_then(keras.layers.Activation("relu6"))
    images = np.random.default_rng(3).normal(0, 15, size=(4, 8, 8, 3)).astype("float32")
    expected = logits(model, images)
    qat_model = quantize_model(model)
    calibrate_ranges(qat_model, [images])
    check_calibrated(qat_model)
    assert not qat_model.layers[1].quantizes_output
    assert np.abs(logits(qat_model, images) - expected).max() <= 0.5 * 6.0 / 255 + 1e-5
    for activation in (keras.layers.Activation("hard_swish"), keras.layers.ReLU(negative_slope=0.1)):
        assert quantize_model(conv_norm_then(activation)).layers[1].quantizes_output


def test_fold_refuses_a_convolution_with_an_activation():
    conv, norm = keras.layers.Conv2D(2, 1, activation="relu"), keras.layers.BatchNormalization()
    conv.build((None, 4, 4, 3))
    norm.build((None, 4, 4, 2))
    with pytest.raises(ValueError, match="activation"):
        fold_batch_normalization(conv, norm)


@keras.saving.register_keras_serializable(package="mmkeras_tests")
class Doubler(keras.layers.Layer):
    """A layer type the QAT transform does not know."""

    def call(self, inputs):
        return inputs * 2.0


def model_with_unknown_layer():
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(2)(Doubler(name="doubler")(inputs)))


def test_an_unknown_layer_type_is_refused_by_name():
    with pytest.raises(UnknownLayerError, match=r"Doubler \(doubler\)") as caught:
        quantize_model(model_with_unknown_layer())
    assert isinstance(caught.value, UserError)


def test_an_unknown_layer_type_is_named_in_a_warning_when_allowed(caplog):
    with caplog.at_level(logging.WARNING, logger="mmkeras"):
        qat_model = quantize_model(model_with_unknown_layer(), on_unknown="warn")
    assert "Doubler" in caplog.text and "stays float" in caplog.text
    assert type(qat_model.get_layer("doubler")) is Doubler


def test_a_batch_norm_without_a_convolution_is_refused():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="lonely")(keras.layers.Dense(4)(inputs)))
    with pytest.raises(UserError, match="lonely"):
        quantize_model(model)


def test_einsum_dense_must_be_a_matmul():
    assert QuantizedEinsumDense.check_equation("abcd,cde->abe", "e") == 2
    with pytest.raises(UserError, match="abc,dc->abd"):
        QuantizedEinsumDense.check_equation("abc,dc->abd", None)


def test_an_uncalibrated_qat_model_is_refused():
    qat_model = quantize_model(model_with_unknown_layer(), on_unknown="warn")
    with pytest.raises(UserError, match="without a range"):
        check_calibrated(qat_model)


def test_calibration_runs_compiled_not_eagerly(float_model, monkeypatch):
    """Eager calls of EfficientNet-Lite0 at 224 on a batch of 32 peaked at 3.29 GB RSS, one compiled call at
    1.56 GB: every range update happens inside a traced function, while the quantizers observe."""
    model, inputs = float_model
    qat_model = quantize_model(model)
    eager_updates = []
    update_range = ActivationQuantizer._update_range

    def recording(self, values):
        eager_updates.append(tf.executing_eagerly())
        return update_range(self, values)

    monkeypatch.setattr(ActivationQuantizer, "_update_range", recording)
    calibrate_ranges(qat_model, [inputs, inputs])
    assert eager_updates and not any(eager_updates)
    check_calibrated(qat_model)
    assert not any(quantizer.observing for quantizer in activation_quantizers(qat_model))


def test_activation_ranges_follow_a_moving_average():
    quantizer = ActivationQuantizer(ema_decay=0.5)
    quantizer(np.array([-2.0, 4.0], "float32"), training=True)
    quantizer(np.array([0.5, 2.0], "float32"), training=True)  # min clipped to 0 before averaging
    assert float(quantizer.range_min.numpy()) == pytest.approx(-1.0)
    assert float(quantizer.range_max.numpy()) == pytest.approx(3.0)
    before = quantizer.range_max.numpy()
    quantizer(np.array([100.0], "float32"), training=False)  # inference leaves the range alone
    assert quantizer.range_max.numpy() == before
