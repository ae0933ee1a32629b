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
    """Activation with a fake-quantized output."""


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
