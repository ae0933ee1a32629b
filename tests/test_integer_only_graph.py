"""`integer_only_tracing`: the same float results as Keras, no -1e9 and no float op in the converted model,
and Keras' own methods back afterwards."""

import keras
import numpy as np
import pytest

from mmkeras.export.integer_only import float_ops
from mmkeras.export.integer_only_graph import integer_only_tracing
from tests.helpers.tiny_runs import int8_tensor_scales

KERAS_METHODS = (
    keras.layers.LayerNormalization.call, keras.layers.Softmax.call, keras.layers.MultiHeadAttention._compute_attention,
)


def attention_model(dropout: float) -> keras.Model:
    """A self-attention over 8 tokens, masked by a 0/1 int32 padding mask (as BERT's), with a layer norm."""
    tokens = keras.Input((8, 16), name="tokens")
    padding_mask = keras.Input((8,), dtype="int32", name="padding_mask")
    attention_mask = keras.ops.greater(padding_mask, 0)[:, None, :]
    attended = keras.layers.MultiHeadAttention(2, 8, dropout=dropout, seed=0)(
        tokens, tokens, attention_mask=attention_mask
    )
    outputs = keras.layers.LayerNormalization(beta_initializer="ones")(tokens + attended)
    return keras.Model({"tokens": tokens, "padding_mask": padding_mask}, keras.layers.Flatten()(outputs))


def attention_inputs(rows: int = 16) -> dict[str, np.ndarray]:
    """Random tokens; each row keeps its first 1..8 tokens (so some keys are always masked, none fully)."""
    generator = np.random.default_rng(0)
    lengths = generator.integers(1, 9, rows)
    return {
        "tokens": generator.normal(0, 2, (rows, 8, 16)).astype("float32"),
        "padding_mask": (np.arange(8)[None, :] < lengths[:, None]).astype("int32"),
    }


@pytest.mark.parametrize("dropout", [0.0, 0.1])  # 0: Keras takes the fused dot_product_attention path
def test_traced_replacements_give_keras_float_results_and_keras_methods_come_back(dropout):
    model = attention_model(dropout)
    inputs = attention_inputs()
    expected = keras.ops.convert_to_numpy(model(inputs, training=False))
    with integer_only_tracing():
        traced = keras.ops.convert_to_numpy(model(inputs, training=False))
        assert keras.layers.Softmax.call is not KERAS_METHODS[1]
    np.testing.assert_allclose(traced, expected, atol=1e-5)
    assert (
        keras.layers.LayerNormalization.call, keras.layers.Softmax.call,
        keras.layers.MultiHeadAttention._compute_attention,
    ) == KERAS_METHODS


def test_a_fully_masked_row_still_gives_zero_probabilities():
    scores = np.random.default_rng(1).normal(0, 3, (2, 5)).astype("float32")
    mask = np.array([[1, 1, 0, 1, 0], [0, 0, 0, 0, 0]], bool)
    softmax = keras.layers.Softmax()
    expected = keras.ops.convert_to_numpy(softmax(scores, mask=mask))
    with integer_only_tracing():
        traced = keras.ops.convert_to_numpy(softmax(scores, mask=mask))
    np.testing.assert_allclose(traced, expected, atol=1e-6)
    assert not traced[1].any() and not traced[0][~mask[0]].any()


@pytest.mark.slow
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_masked_attention_converts_to_int8_ops_without_a_huge_scale(dropout):
    """Without the replacements, the -1e9 fill gave the scores an int8 scale of ~3.9e6 and layer norms a float NEG."""
    from mmkeras.export.litert_conversion import convert_model

    model = attention_model(dropout)
    tflite_model = convert_model(model, quantize="int8", representative_inputs=[attention_inputs(64)],
                                 keep_float=(), integer_only=True)
    assert float_ops(tflite_model) == {}
    assert max(int8_tensor_scales(tflite_model).values()) < 100
