"""The three fusion layers: shapes, exact masking, serialization, gradients."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmkeras.models import ConcatFusion, CrossAttentionFusion, GatedFusion

BATCH, TEXT_LENGTH, TEXT_DIM, IMAGE_LENGTH, IMAGE_DIM, FUSION_DIM = 3, 6, 8, 5, 12, 16

FUSIONS = {
    "cross-attention": (lambda: CrossAttentionFusion(FUSION_DIM, num_heads=4, dropout=0.0), 2 * FUSION_DIM),
    "concat": (lambda: ConcatFusion(FUSION_DIM, dropout=0.0), 2 * FUSION_DIM),
    "gated": (lambda: GatedFusion(FUSION_DIM), FUSION_DIM),
}


@pytest.fixture(params=sorted(FUSIONS))
def fusion_case(request):
    keras.utils.set_random_seed(7)
    make, output_dim = FUSIONS[request.param]
    return make, output_dim


def randomized(layer):
    """`layer`, built, with every weight random: zero-initialised biases would hide leaks."""
    fuse(layer, random_inputs())
    rng = np.random.default_rng(3)
    layer.set_weights([rng.normal(size=w.shape).astype("float32") for w in layer.get_weights()])
    return layer


def random_inputs(seed=0, text_lengths=(6, 3, 1), modality_mask=None):
    rng = np.random.default_rng(seed)
    text_mask = (np.arange(TEXT_LENGTH)[None, :] < np.array(text_lengths)[:, None]).astype("int32")
    if modality_mask is None:
        modality_mask = np.ones((BATCH, 2), "float32")
    return {
        "text_tokens": rng.normal(size=(BATCH, TEXT_LENGTH, TEXT_DIM)).astype("float32"),
        "text_mask": text_mask,
        "image_tokens": rng.normal(size=(BATCH, IMAGE_LENGTH, IMAGE_DIM)).astype("float32"),
        "modality_mask": np.asarray(modality_mask, "float32"),
    }


def fuse(layer, inputs, training=False):
    return keras.ops.convert_to_numpy(layer(**inputs, training=training))


def test_output_shape_eager_and_functional(fusion_case):
    make, output_dim = fusion_case
    layer = make()
    assert fuse(layer, random_inputs()).shape == (BATCH, output_dim)
    symbolic = {
        "text_tokens": keras.Input((TEXT_LENGTH, TEXT_DIM)),
        "text_mask": keras.Input((TEXT_LENGTH,), dtype="int32"),
        "image_tokens": keras.Input((IMAGE_LENGTH, IMAGE_DIM)),
        "modality_mask": keras.Input((2,)),
    }
    assert tuple(make()(**symbolic).shape) == (None, output_dim)


def test_padded_positions_do_not_change_the_output(fusion_case):
    layer = randomized(fusion_case[0]())
    inputs = random_inputs()
    changed = dict(inputs, text_tokens=inputs["text_tokens"].copy())
    padded = inputs["text_mask"] == 0
    changed["text_tokens"][padded] = 100.0 * np.random.default_rng(1).normal(size=changed["text_tokens"][padded].shape)
    np.testing.assert_array_equal(fuse(layer, inputs), fuse(layer, changed))
    # The same change at a real position must show: the test can fail.
    changed["text_tokens"][0, 0] += 1.0
    assert not np.allclose(fuse(layer, inputs)[0], fuse(layer, changed)[0])


@pytest.mark.parametrize("missing", ["text", "image"])
def test_missing_modality_contributes_nothing(fusion_case, missing):
    layer = randomized(fusion_case[0]())
    modality_mask = np.array([[1, 1], [0, 1] if missing == "text" else [1, 0], [1, 1]], "float32")
    inputs = random_inputs(modality_mask=modality_mask)
    other = random_inputs(seed=5, modality_mask=modality_mask)
    swapped = dict(inputs, **{f"{missing}_tokens": other[f"{missing}_tokens"]})
    if missing == "text":
        swapped["text_mask"] = np.ones_like(inputs["text_mask"])
    original, changed = fuse(layer, inputs), fuse(layer, swapped)
    np.testing.assert_array_equal(original[1], changed[1])
    # Rows where the modality is present do see the new tokens.
    assert not np.allclose(original[0], changed[0])


def test_both_modalities_missing_gives_zeros(fusion_case):
    layer = randomized(fusion_case[0]())
    fused = fuse(layer, random_inputs(modality_mask=np.zeros((BATCH, 2))))
    np.testing.assert_array_equal(fused, np.zeros_like(fused))


def test_config_round_trip_gives_the_same_layer(fusion_case):
    layer = fusion_case[0]()
    inputs = random_inputs()
    expected = fuse(layer, inputs)
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    fuse(clone, inputs)  # builds the clone
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(fuse(clone, inputs), expected, atol=1e-6)


def test_functional_model_saves_and_loads(fusion_case, tmp_path):
    make, _ = fusion_case
    symbolic = {
        "text_tokens": keras.Input((TEXT_LENGTH, TEXT_DIM), name="text_tokens"),
        "text_mask": keras.Input((TEXT_LENGTH,), dtype="int32", name="text_mask"),
        "image_tokens": keras.Input((IMAGE_LENGTH, IMAGE_DIM), name="image_tokens"),
        "modality_mask": keras.Input((2,), name="modality_mask"),
    }
    model = keras.Model(symbolic, keras.layers.Dense(3)(make()(**symbolic)))
    model.save(tmp_path / "fusion.keras")
    loaded = keras.models.load_model(tmp_path / "fusion.keras")
    inputs = random_inputs()
    np.testing.assert_allclose(loaded.predict(inputs, verbose=0), model.predict(inputs, verbose=0), atol=1e-6)


def test_gradients_reach_every_weight_and_both_inputs(fusion_case):
    layer = randomized(fusion_case[0]())
    inputs = {name: tf.constant(value) for name, value in random_inputs().items()}
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([inputs["text_tokens"], inputs["image_tokens"]])
        loss = tf.reduce_sum(tf.square(layer(**inputs, training=True)))
    gradients = tape.gradient(loss, layer.trainable_weights)
    assert layer.trainable_weights
    for weight, gradient in zip(layer.trainable_weights, gradients):
        assert gradient is not None and np.any(gradient.numpy() != 0), weight.path
    for name in ("text_tokens", "image_tokens"):
        assert np.any(tape.gradient(loss, inputs[name]).numpy() != 0), name


def test_gated_fusion_with_one_modality_is_that_modality():
    layer = GatedFusion(FUSION_DIM)
    inputs = random_inputs(modality_mask=[[1, 0]] * BATCH)
    mask = inputs["text_mask"][:, :, None]
    pooled_text = (inputs["text_tokens"] * mask).sum(1) / mask.sum(1)
    fused = fuse(layer, inputs)
    expected = keras.ops.convert_to_numpy(layer.projections.text_projection(pooled_text))
    np.testing.assert_allclose(fused, expected, atol=1e-5)


def test_cross_attention_needs_heads_that_divide_the_width():
    with pytest.raises(ValueError, match="divisible"):
        CrossAttentionFusion(fusion_dim=10, num_heads=4)
