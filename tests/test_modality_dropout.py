"""ModalityDropout: hides one modality of training examples, never both, and nothing at inference."""

import keras
import numpy as np
import pytest

from mmkeras.config import RunConfig
from mmkeras.errors import UserError
from mmkeras.models import CrossAttentionFusion, ModalityDropout, build_model

TEXTS = ["a red circle", "a blue square"]


def dropped(layer, mask):
    return keras.ops.convert_to_numpy(layer(mask, training=True))


def test_inference_passes_the_mask_through():
    mask = np.array([[1, 1], [1, 0], [0, 1]], "float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(ModalityDropout(1.0, seed=0)(mask)), mask)


def test_rate_one_hides_exactly_one_modality_of_complete_examples_text_and_image_alike():
    out = dropped(ModalityDropout(1.0, seed=0), np.ones((2000, 2), "float32"))
    assert set(out.sum(axis=1).tolist()) == {1.0}
    assert 0.45 < out[:, 1].mean() < 0.55  # which one is hidden: a fair coin


def test_incomplete_examples_are_left_as_they_are():
    mask = np.array([[1, 0], [0, 1], [0, 0]] * 100, "float32")
    np.testing.assert_array_equal(dropped(ModalityDropout(1.0, seed=0), mask), mask)


def test_rate_is_the_share_of_examples_that_lose_a_modality():
    out = dropped(ModalityDropout(0.3, seed=1), np.ones((4000, 2), "float32"))
    assert 0.27 < (out.sum(axis=1) == 1).mean() < 0.33


def test_draws_differ_from_step_to_step_and_repeat_with_the_seed():
    mask = np.ones((64, 2), "float32")
    layer = ModalityDropout(0.5, seed=7)
    first, second = dropped(layer, mask), dropped(layer, mask)
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(dropped(ModalityDropout(0.5, seed=7), mask), first)


def test_config_round_trip_and_rate_check():
    layer = ModalityDropout(0.25, seed=3, name="modality_dropout")
    clone = ModalityDropout.from_config(layer.get_config())
    assert (clone.rate, clone.seed, clone.name) == (0.25, 3, "modality_dropout")
    with pytest.raises(ValueError, match="rate"):
        ModalityDropout(1.5)


def test_a_hidden_modality_in_training_equals_that_modality_missing():
    """Before the fusion, a hidden modality is exactly an absent one (the fusion masks exactly)."""
    rng = np.random.default_rng(0)
    text, text_mask, image = rng.normal(size=(1, 5, 8)), np.ones((1, 5), "int32"), rng.normal(size=(1, 4, 8))
    fusion = CrossAttentionFusion(fusion_dim=8, num_heads=2, dropout=0.0)
    mask = keras.Input((2,))
    model = keras.Model(mask, fusion(text, text_mask, image, ModalityDropout(1.0, seed=0)(mask)))
    trained_view = keras.ops.convert_to_numpy(model(np.ones((1, 2), "float32"), training=True))
    text_absent, image_absent = (
        keras.ops.convert_to_numpy(model(np.array([present], "float32"))) for present in ([0, 1], [1, 0])
    )
    assert not np.allclose(text_absent, image_absent)
    assert np.allclose(trained_view, text_absent, atol=1e-6) or np.allclose(trained_view, image_absent, atol=1e-6)


def test_model_with_modality_dropout_saves_and_loads(tmp_path):
    model, preprocessor = build_model(num_classes=2, modality_dropout=0.2, texts=TEXTS, seed=0)
    assert model.get_layer("modality_dropout").rate == 0.2
    inputs = preprocessor(TEXTS, [None, None])
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(inputs)), keras.ops.convert_to_numpy(model(inputs))
    )


def test_without_modality_dropout_the_model_has_no_such_layer():
    model, _ = build_model(num_classes=2, texts=TEXTS, seed=0)
    assert "modality_dropout" not in {layer.name for layer in model.layers}


@pytest.mark.parametrize("rate", [-0.1, 1.1])
def test_out_of_range_rate_is_a_user_error(rate):
    with pytest.raises(UserError, match="modality_dropout"):
        RunConfig(modality_dropout=rate)
    with pytest.raises(UserError, match="modality_dropout"):
        build_model(num_classes=2, modality_dropout=rate, texts=TEXTS)
