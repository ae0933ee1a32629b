import json

import numpy as np
import pytest
import tensorflow as tf
from test_cli_end_to_end import SAMPLES, run_cli, write_subset

from mmkeras.config import RunConfig
from mmkeras.errors import UserError
from mmkeras.models.builder import build_model
from mmkeras.runs import load_run
from mmkeras.training.modality_balance import ModalityBalance, ogm_coefficients


def test_ogm_slows_only_the_dominant_modality():
    text_scale, image_scale = ogm_coefficients(4.0, 1.0)
    assert float(text_scale) == pytest.approx(1 - np.tanh(0.5 * 4.0)) and float(image_scale) == 1.0
    text_scale, image_scale = ogm_coefficients(1.0, 2.0)
    assert float(text_scale) == 1.0 and float(image_scale) == pytest.approx(1 - np.tanh(0.5 * 2.0))
    assert [float(scale) for scale in ogm_coefficients(1.0, 1.0)] == [1.0, 1.0]


def test_adaptive_scales_the_dominant_backbones_gradients_and_nothing_else():
    model, preprocessor = build_model(num_classes=2, texts=["red", "blue"], seed=0)
    balance = ModalityBalance("adaptive", model, num_classes=2)
    gradients = [tf.ones_like(variable) for variable in balance.training_model.trainable_variables]
    labels = tf.constant([0, 1])
    # The text head is sure of the true class, the image head is not: text dominates.
    text_logits = tf.constant([[9.0, -9.0], [-9.0, 9.0]])
    image_logits = tf.zeros((2, 2))
    modulated = balance.modulate(gradients, labels, (None, text_logits, image_logits))
    scales = {group: {float(tf.reduce_max(g)) for g, gr in zip(modulated, balance.variable_groups) if gr == group}
              for group in (0, 1, 2)}
    assert scales[0] == {1.0} and scales[2] == {1.0}
    [text_scale] = scales[1]
    assert text_scale == pytest.approx(1 - np.tanh(0.5 * 2.0), abs=1e-4)


def test_modality_balance_is_refused_with_cached_features():
    with pytest.raises(UserError, match="cache_features"):
        RunConfig(modality_balance="aux", freeze="both", cache_features=True)


@pytest.mark.parametrize("mode", ["aux", "adaptive"])
def test_a_balanced_run_trains_and_saves_the_plain_model(mode, tmp_path, capsys):
    train = write_subset(SAMPLES / "train.csv", tmp_path / "train.csv", 48)
    val = write_subset(SAMPLES / "val.csv", tmp_path / "val.csv", 16)
    code, out, _ = run_cli(capsys, "train", "--data", train, "--val", val, "--out", tmp_path / "run", "--epochs", "1",
                           "--batch-size", "16", "--modality-balance", mode, "--json")
    assert code == 0
    assert np.isfinite(json.loads(out)["loss"])
    run = load_run(tmp_path / "run")
    assert run.config.modality_balance == mode
    assert "unimodal_heads" not in [layer.name for layer in run.model.layers]
    assert tuple(run.model.output.shape) == (None, len(run.labels))
