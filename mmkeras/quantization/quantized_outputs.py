"""Layers whose output is fake-quantized: normalisation, activations, residual adds.

These layers have no weights to quantize (or, for LayerNormalization, only a
per-channel scale and offset that LiteRT keeps in its own arithmetic); their
outputs get a moving-average `ActivationQuantizer` so that the int8 model uses
ranges learned during QAT rather than calibrated afterwards.

Example:
>>> import keras, numpy as np
>>> from mmkeras.quantization.quantized_layer import QuantizerSettings, convert_layer
>>> norm = keras.layers.LayerNormalization()
>>> norm.build((None, 4))
>>> norm = convert_layer(norm, QuantizedLayerNormalization, QuantizerSettings())
>>> tuple(norm(np.ones((2, 4), "float32"), training=True).shape)
(2, 4)
"""

import keras


class OutputQuantized:
    """Mixin: the float layer's call, then its `output_quantizer`."""

    def call(self, *args, **kwargs):
        return self.output_quantizer(super().call(*args, **kwargs))


@keras.saving.register_keras_serializable(package="mmkeras")
class QuantizedLayerNormalization(OutputQuantized, keras.layers.LayerNormalization):
    """LayerNormalization with a fake-quantized output."""


@keras.saving.register_keras_serializable(package="mmkeras")
class QuantizedActivation(OutputQuantized, keras.layers.Activation):
    """Activation with a fake-quantized output.

    Hard-swish is written as `x * gate` with a separately fake-quantized
    `gate = relu6(x + 3) / 6`: XNNPACK has no int8 HARD_SWISH kernel and the
    builtin one is slow, while int8 ADD, clamp and MUL run in XNNPACK (the
    fake-quant between them keeps the converter from fusing them back into
    HARD_SWISH). Made by `convert_layer` with `quantizer_names(layer)`.
    """

    @staticmethod
    def quantizer_names(layer):
        if layer.activation is keras.activations.hard_swish:
            return ("gate_quantizer", "output_quantizer")
        return ("output_quantizer",)

    def call(self, inputs):
        if self.activation is not keras.activations.hard_swish:
            return super().call(inputs)
        gate = self.gate_quantizer(keras.ops.relu6(inputs + 3.0) * (1.0 / 6.0))
        return self.output_quantizer(inputs * gate)


@keras.saving.register_keras_serializable(package="mmkeras")
class QuantizedReLU(OutputQuantized, keras.layers.ReLU):
    """ReLU with a fake-quantized output."""


@keras.saving.register_keras_serializable(package="mmkeras")
class QuantizedSoftmax(OutputQuantized, keras.layers.Softmax):
    """Softmax with a fake-quantized output (attention probabilities)."""


@keras.saving.register_keras_serializable(package="mmkeras")
class QuantizedAdd(OutputQuantized, keras.layers.Add):
    """Add (e.g. BERT's embedding sum) with a fake-quantized output."""


@keras.saving.register_keras_serializable(package="mmkeras")
class QuantizedMultiply(OutputQuantized, keras.layers.Multiply):
    """Multiply with a fake-quantized output."""
