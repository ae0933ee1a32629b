"""`integer_only_tracing`: Keras' layer norm and masked softmax traced so that every op converts to int8.

An `--integer-only` export traces the model inside this context. Four Keras
computations that leave float ops (or a useless int8 range) in a
full-integer model are written otherwise, with the same float results:

- **LayerNormalization** computes `x * inv - mean * inv + beta`; the
  converter has no int8 NEG, so `-mean` stayed float in every layer norm.
  Here it is `(x - mean) * inv + beta` (int8 SUB, MUL, ADD).
- **The masked softmax** (`keras.layers.Softmax` with a mask, which
  MultiHeadAttention uses) fills masked scores with -1e9. Calibrated, that
  tensor's int8 range spans -1e9 (scale ~3.9e6, shared by the scores'
  SELECT_V2), and every real score rounds to one value
  (docs/design.md#int8-latency-on-xnnpack). Here the fill is
  `min(scores) - MASK_MARGIN` along the softmax axis: a masked key's weight
  is at most `exp(-MASK_MARGIN)` of the largest real one's, and the int8
  range only widens by `MASK_MARGIN`.
- **GlobalAveragePooling1D with a mask** (the align towers' text pooling)
  casts the padding mask to float, a float CAST; here the mask's 0/1 weights
  are looked up in a table, as the fusion's pooling does (`masked_mean`).
- **MultiHeadAttention with dropout 0** goes through the fused
  `ops.dot_product_attention`, whose mask fill is a large negative number
  too; here it computes attention explicitly (as with dropout), through the
  masked softmax above.

The saved model and every other export are untouched: the replacements exist
only while the integer-only conversion traces the model.

Example:
>>> with integer_only_tracing():  # doctest: +SKIP
...     archive.add_endpoint("serving_default", call, input_signature=[signature])
"""

import contextlib
import math

import keras
from keras import ops

from mmkeras import compat
from mmkeras.models.masked_pooling import masked_mean

# How far below a row's smallest score the masked scores are set. exp(-16) = 1.1e-7, float32's resolution
# near 1: on a samples run the float logits moved by at most 2.4e-6 (1.9e-6 with 32, the layer norm's
# rounding; 2.3e-3 with 8), while the int8 range of the scores widens by 16, not by 1e9
# (docs/design.md#integer-only-export-end-to-end).
MASK_MARGIN = 16.0


def layer_norm_without_neg(layer: keras.layers.LayerNormalization, inputs):
    """`layer(inputs)` as `(x - mean) * rsqrt(variance + epsilon) * gamma + beta`, without a NEG op.

    Layer norms over other than the last axis, or with `rms_scaling`, are computed as Keras computes them.
    """
    axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    rank = len(inputs.shape)
    if layer.rms_scaling or [axis % rank for axis in axes] != [rank - 1]:
        return _KERAS_METHODS[keras.layers.LayerNormalization, "call"](layer, inputs)
    values = ops.cast(inputs, "float32")
    # The variance as a mean of squares: LiteRT has no int16 SQUARED_DIFFERENCE (the 16x8 mode traces this too).
    centered = values - ops.mean(values, axis=-1, keepdims=True)
    inverse = ops.rsqrt(ops.mean(centered * centered, axis=-1, keepdims=True) + layer.epsilon)
    if layer.gamma is not None:
        inverse = inverse * ops.cast(layer.gamma, "float32")
    outputs = centered * inverse
    if layer.beta is not None:
        outputs = outputs + ops.cast(layer.beta, "float32")
    return ops.cast(outputs, layer.compute_dtype)


def softmax_with_bounded_fill(layer: keras.layers.Softmax, inputs, mask=None):
    """`layer(inputs, mask)` with masked scores set to `min(inputs) - MASK_MARGIN` instead of -1e9.

    Masked positions still get exactly 0 probability (as in Keras, a fully
    masked row too); only the tensor feeding the softmax changes.
    """
    keras_softmax = _KERAS_METHODS[keras.layers.Softmax, "call"]
    if mask is None:
        return keras_softmax(layer, inputs)
    if keras.backend.standardize_dtype(mask.dtype) != "bool":
        mask = ops.greater(mask, 0.5)
    fill = ops.min(inputs, axis=layer.axis, keepdims=True) - MASK_MARGIN
    probabilities = keras_softmax(layer, ops.where(mask, inputs, fill))
    return ops.where(mask, probabilities, 0.0)


def explicit_attention(
    layer: keras.layers.MultiHeadAttention, query, key, value, attention_mask=None, training=None,
    return_attention_scores=False, **kwargs,
):
    """MultiHeadAttention's attention step computed explicitly, its mask applied by its (masked) Softmax."""
    if kwargs.get("use_causal_mask"):  # Keras' causal-only kernel; no mmkeras model has one
        return _KERAS_METHODS[keras.layers.MultiHeadAttention, "_compute_attention"](
            layer, query, key, value, attention_mask, training, return_attention_scores, **kwargs
        )
    internals = compat.attention_internals(layer)
    query = ops.multiply(query, ops.cast(1.0 / math.sqrt(float(layer.key_dim)), query.dtype))
    scores = ops.einsum(internals.dot_product_equation, key, query)
    probabilities = internals.masked_softmax(scores, attention_mask)
    if layer.dropout > 0.0:
        probabilities = internals.dropout_layer(probabilities, training=training)
    return ops.einsum(internals.combine_equation, probabilities, value), probabilities


def masked_average_pooling_by_lookup(layer: keras.layers.GlobalAveragePooling1D, inputs, mask=None):
    """`layer(inputs, mask)` with the padding mask's 0/1 weights looked up, not cast to float (a float CAST).

    The mean over real tokens as the fusion's pooling computes it (`masked_mean`); without a mask, with
    channels first or with `keepdims`, as Keras computes it.
    """
    if mask is None or layer.data_format != "channels_last" or layer.keepdims:
        return _KERAS_METHODS[keras.layers.GlobalAveragePooling1D, "call"](layer, inputs, mask)
    real_token = ops.take(ops.convert_to_tensor([0.0, 1.0], inputs.dtype), ops.cast(mask, "int32"), axis=0)
    return masked_mean(inputs, real_token)


# (class, method name) -> the replacement while tracing; subclasses that call `super()` get it too.
_REPLACEMENTS = {
    (keras.layers.LayerNormalization, "call"): layer_norm_without_neg,
    (keras.layers.Softmax, "call"): softmax_with_bounded_fill,
    (keras.layers.MultiHeadAttention, "_compute_attention"): explicit_attention,
    (keras.layers.GlobalAveragePooling1D, "call"): masked_average_pooling_by_lookup,
}
# Keras' own methods, which the replacements fall back on.
_KERAS_METHODS = {key: getattr(*key) for key in _REPLACEMENTS}


@contextlib.contextmanager
def integer_only_tracing():
    """Trace Keras models with `_REPLACEMENTS` in place of Keras' methods; Keras' are restored on exit."""
    compat.check_versions("keras")  # the replaced methods' signatures are Keras'
    try:
        for (cls, name), replacement in _REPLACEMENTS.items():
            setattr(cls, name, replacement)
        yield
    finally:
        for (cls, name), method in _KERAS_METHODS.items():
            setattr(cls, name, method)
