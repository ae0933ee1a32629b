"""How a float layer becomes its quantized version: in place, keeping its variables.

keras-hub blocks (TransformerEncoder, ViT and MobileNet blocks) create their
sub-layers in `__init__` and call them by attribute, and
`keras.models.clone_model(recursive=True)` does not reach inside them, nor can
ViT layers be cloned from their config
(docs/design.md#qat-without-tensorflow-model-optimization). So the QAT transform
does not rebuild the model: it turns each known layer into its quantized
subclass in place (`convert_layer`): the object keeps its variables, its place
in the graph and its call signature, gains `ActivationQuantizer` sub-layers,
and its `call` fake-quantizes weights and outputs. A converted model therefore
cannot be saved as `.keras` (the config of a keras-hub block rebuilds float
sub-layers); a QAT run stores weights and is rebuilt by the same transform
(`mmkeras.runs`).

Example:
>>> import keras
>>> from mmkeras.quantization.quantized_dense import QuantizedDense
>>> dense = keras.layers.Dense(4)
>>> dense.build((None, 3))
>>> dense = convert_layer(dense, QuantizedDense, QuantizerSettings())
>>> type(dense).__name__, type(dense.output_quantizer).__name__
('QuantizedDense', 'ActivationQuantizer')
"""

from mmkeras import compat
from mmkeras.quantization.fake_quant import ActivationQuantizer
from mmkeras.quantization.qat_settings import QuantizerSettings


def convert_layer(layer, quantized_class, settings: QuantizerSettings, quantizer_names=("output_quantizer",)):
    """Turn a built `layer` into `quantized_class` (a subclass of its class) in place.

    Args:
        layer: a built float layer.
        quantized_class: the quantized subclass of `type(layer)`.
        settings: the quantizers' settings.
        quantizer_names: attributes that get a fresh `ActivationQuantizer`.

    Returns:
        The same object, now of `quantized_class`.
    """
    if not issubclass(quantized_class, type(layer)):
        raise TypeError(f"{quantized_class.__name__} is not a subclass of {type(layer).__name__}")
    if not layer.built:
        raise ValueError(f"layer {layer.name!r} must be built before it is quantized")
    layer.__class__ = quantized_class
    layer.weight_bits = settings.num_bits
    quantizers = {}
    for attribute in quantizer_names:
        quantizer = ActivationQuantizer(
            settings.ema_decay, settings.num_bits, name=f"{layer.name}_{attribute}", dtype="float32"
        )
        quantizer.build()
        quantizers[attribute] = quantizer
    # A built layer locks its state; the quantizers are new state, tracked like
    # Keras' own `Layer.quantize` adds its scales.
    with compat.unlocked_tracker(layer):
        for attribute, quantizer in quantizers.items():
            setattr(layer, attribute, quantizer)
    return layer
