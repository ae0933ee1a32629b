"""`inference_function`: one trace for every batch size, the same logits as Keras' `predict_on_batch`."""

import keras
import numpy as np

from mmkeras.models.inference_function import inference_function


class CountingCalls(keras.layers.Layer):
    """The identity, counting its Python calls: once per trace inside a compiled function."""

    calls = 0

    def call(self, inputs):
        CountingCalls.calls += 1
        return inputs


def toy_model():
    token_ids = keras.Input((4,), dtype="int32", name="token_ids")
    image = keras.Input((3, 3, 1), name="image")
    text = keras.layers.Embedding(10, 2)(token_ids)
    features = keras.layers.Concatenate()([keras.layers.Flatten()(text), keras.layers.Flatten()(image)])
    logits = keras.layers.Dense(3)(CountingCalls()(features))
    return keras.Model({"token_ids": token_ids, "image": image}, logits)


def toy_inputs(rows, seed):
    rng = np.random.default_rng(seed)
    # int64 ids and an extra key, as a preprocessor's dict may carry: cast and ignored as Keras does.
    return {"token_ids": rng.integers(0, 10, (rows, 4)), "image": rng.random((rows, 3, 3, 1)), "extra": np.ones(rows)}


def test_batches_of_any_size_reuse_the_one_trace_and_match_predict_on_batch():
    model = toy_model()
    built = CountingCalls.calls  # building the functional model called the layer once
    predict = inference_function(model)
    traced = CountingCalls.calls - built
    for rows, seed in [(8, 0), (3, 1), (1, 2), (8, 3)]:
        inputs = toy_inputs(rows, seed)
        logits = predict(inputs)
        assert isinstance(logits, np.ndarray) and logits.shape == (rows, 3)
        expected = model.predict_on_batch({name: inputs[name] for name in ("token_ids", "image")})
        np.testing.assert_allclose(logits, expected, rtol=1e-6, atol=1e-6)
    assert traced == 1 and CountingCalls.calls - built == 1 + 2  # + predict_on_batch's: for 8 rows, then any
