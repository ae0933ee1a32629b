"""`QuantizedMultiHeadAttention`: attention with fake-quantized internals.

Keras' MultiHeadAttention goes through the fused `ops.dot_product_attention`
when dropout is 0, which leaves no place for fake quantization inside
(docs/design.md#converter-traps). The quantized version always computes attention explicitly and
fake-quantizes the scaled queries, the attention scores and the attended
values (with `QuantizerSettings.integer_only`, or without `float_attention`;
with float attention, the default, none of them); then the attention
probabilities are fake-quantized by its Softmax sub-layer (a
`QuantizedSoftmax`). The projections are `QuantizedEinsumDense`
layers, converted by the QAT transform like any other layer.

Example:
>>> import keras, numpy as np
>>> from mmkeras.quantization.quantized_layer import QuantizerSettings, convert_layer
>>> attention = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
>>> attention.build((None, 3, 8), (None, 5, 8))
>>> attention = convert_layer(attention, QuantizedMultiHeadAttention, QuantizerSettings(),
...                           QuantizedMultiHeadAttention.QUANTIZERS)
>>> tuple(attention(np.ones((1, 3, 8), "float32"), np.ones((1, 5, 8), "float32"), training=True).shape)
(1, 3, 8)
"""

import math

import keras
from keras import ops

from mmkeras import compat


@keras.saving.register_keras_serializable(package="mmkeras")
class QuantizedMultiHeadAttention(keras.layers.MultiHeadAttention):
    """MultiHeadAttention computed explicitly, with fake-quantized queries, scores and context (or none).

    Made by `quantized_layer.convert_layer` with `quantizer_names(settings)`.
    """

    QUANTIZERS = ("query_quantizer", "score_quantizer", "context_quantizer")

    @classmethod
    def quantizer_names(cls, settings) -> tuple[str, ...]:
        """None with `QuantizerSettings.float_attention` (the export keeps the attention float), else all three."""
        return () if settings.float_attention and not settings.integer_only else cls.QUANTIZERS

    def _compute_attention(
        self, query, key, value, attention_mask=None, training=None, return_attention_scores=False, **kwargs
    ):
        # Keras documents `_compute_attention` as the method to override for a
        # custom attention computation (tests/test_compat.py checks it is still called).
        # `use_causal_mask` only arrives here as a separate flag for the base
        # class; for subclasses Keras folds it into `attention_mask`.
        internals = compat.attention_internals(self)
        query = ops.multiply(query, ops.cast(1.0 / math.sqrt(float(self.key_dim)), query.dtype))
        query = self._quantized("query_quantizer", query)
        scores = self._quantized("score_quantizer", ops.einsum(internals.dot_product_equation, key, query))
        probabilities = internals.masked_softmax(scores, attention_mask)
        if self.dropout > 0.0:
            probabilities = internals.dropout_layer(probabilities, training=training)
        context = self._quantized("context_quantizer", ops.einsum(internals.combine_equation, probabilities, value))
        return context, probabilities

    def _quantized(self, quantizer_name, tensor):
        """`tensor` through the named quantizer, or as it is where the layer has none (float attention)."""
        quantizer = getattr(self, quantizer_name, None)
        return tensor if quantizer is None else quantizer(tensor)
