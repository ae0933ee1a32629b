import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from mmkeras.config import RunConfig
from mmkeras.errors import UserError
from mmkeras.models.builder import build_model
from mmkeras.quantization.run_loading import load_run
from mmkeras.training.modality_balance import SUMMARY_KEYS, ModalityBalance, ogm_coefficients, opm_rates
from mmkeras.training.run_setup import make_loop
from tests.helpers.cli import SAMPLES, run_cli, write_subset


def test_ogm_and_opm_act_on_the_dominant_modality_only_and_not_at_balance():
    text_scale, image_scale = ogm_coefficients(4.0, 1.0)
    assert float(text_scale) == pytest.approx(1 - np.tanh(4.0 - 1.0), abs=1e-6) and float(image_scale) == 1.0
    text_scale, image_scale = ogm_coefficients(1.0, 2.0)
    assert float(text_scale) == 1.0 and float(image_scale) == pytest.approx(1 - np.tanh(2.0 - 1.0), abs=1e-6)
    text_rate, image_rate = opm_rates(1.0, 2.0)
    assert float(text_rate) == 0.0 and float(image_rate) == pytest.approx(0.5 * np.tanh(2.0 - 1.0))
    # No jump at balance: a ratio just above 1 barely slows or hides anything.
    assert [float(scale) for scale in ogm_coefficients(1.01, 1.0)] == [pytest.approx(0.99, abs=1e-3), 1.0]
    assert [float(rate) for rate in opm_rates(1.0, 1.0)] == [0.0, 0.0]


def balanced_model(mode):
    model, preprocessor = build_model(num_classes=2, texts=["red square", "blue circle"], seed=0)
    return model, preprocessor, ModalityBalance(mode, model, num_classes=2)


def batch(preprocessor, tmp_path):
    rng = np.random.default_rng(0)
    images = []
    for index in range(4):
        images.append(tmp_path / f"{index}.png")
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(images[-1])
    return preprocessor(["red square", "blue circle"] * 2, images), tf.constant([0, 1, 0, 1])


def backbone_gradients(balance, inputs, labels, objective):
    """Gradients of `objective(labels, outputs)` for the text and vision backbones' variables."""
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(objective(labels, balance.training_model(inputs, training=False)))
    text, image = balance.backbone_variables
    gradients = tape.gradient(loss, [*text, *image], unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return gradients[: len(text)], gradients[len(text) :]


def cross_entropy(labels, logits):
    return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)


@pytest.mark.parametrize("mode", ["aux", "adaptive"])
def test_aux_losses_reach_the_backbones_and_adaptive_probes_do_not(mode, tmp_path):
    _, preprocessor, balance = balanced_model(mode)
    inputs, labels = batch(preprocessor, tmp_path)

    def heads_only(labels, outputs):
        """The text and image heads' share of the loss: the balanced loss less the fused head's."""
        return balance.per_example_loss(labels, outputs, cross_entropy) - cross_entropy(labels, outputs[0])

    for gradients in backbone_gradients(balance, inputs, labels, heads_only):
        norm = float(tf.linalg.global_norm(gradients))
        assert (norm > 0) if mode == "aux" else (norm == 0)


@pytest.mark.parametrize("weight", [0.0, 2.0])
def test_the_aux_loss_weight_weighs_the_unimodal_losses(weight, tmp_path):
    model, preprocessor = build_model(num_classes=2, texts=["red square", "blue circle"], seed=0)
    balance = ModalityBalance("aux", model, num_classes=2, aux_loss_weight=weight)
    inputs, labels = batch(preprocessor, tmp_path)
    outputs = balance.training_model(inputs, training=False)
    fused, text, image = (cross_entropy(labels, logits) for logits in outputs)
    expected = fused + weight * (text + image)
    np.testing.assert_allclose(balance.per_example_loss(labels, outputs, cross_entropy), expected, rtol=1e-6)


def test_the_aux_loss_weight_is_refused_where_it_weighs_nothing_or_is_negative():
    assert RunConfig(modality_balance="aux", aux_loss_weight=2.0).aux_loss_weight == 2.0
    with pytest.raises(UserError, match="aux_loss_weight applies to modality_balance aux only, got .* adaptive"):
        RunConfig(modality_balance="adaptive", aux_loss_weight=2.0)
    with pytest.raises(UserError, match="aux_loss_weight must not be negative"):
        RunConfig(modality_balance="aux", aux_loss_weight=-0.5)


@pytest.mark.parametrize("command", ["train", "cv"])
def test_train_and_cv_refuse_an_aux_loss_weight_that_weighs_nothing(command, tmp_path, capsys):
    code, _, err = run_cli(capsys, command, "--data", SAMPLES / "train.csv", "--out", tmp_path / "out",
                           "--modality-balance", "aux", "--aux-loss-weight", "-1")
    assert code == 2 and "--aux-loss-weight" in err
    # cv takes the flag as train does (it had only the config file's `aux_loss_weight`), checked before any fold.
    code, _, err = run_cli(capsys, command, "--data", SAMPLES / "train.csv", "--out", tmp_path / "out",
                           "--modality-balance", "adaptive", "--aux-loss-weight", "2")
    assert code == 2 and "--aux-loss-weight applies to" in err and "adaptive" in err
    assert not (tmp_path / "out").exists()


def backbone_steps(text_probe_bias, tmp_path):
    """How far one training step moves each backbone's weights, with the text probe's bias on the true class."""
    model, preprocessor, balance = balanced_model("adaptive")
    # Every label is class 0: a bias on class 0 makes the text probe sure of the truth, the image probe is not.
    balance.training_model.get_layer("unimodal_heads").text_head.bias.assign([text_probe_bias, 0.0])
    inputs, _ = batch(preprocessor, tmp_path)
    labels = np.zeros(4, "int32")
    config = RunConfig(warmup_fraction=0.0)
    loop = make_loop(config, balance.training_model, tf.distribute.get_strategy(), "float32", labels, 2, balance)
    before = [[variable.numpy() for variable in variables] for variables in balance.backbone_variables]
    loop.train_epoch(tf.data.Dataset.from_tensors((inputs, labels)), num_examples=4, batch_size=4)
    steps = [
        np.sqrt(sum(np.sum((variable.numpy() - old) ** 2) for variable, old in zip(variables, olds)))
        for variables, olds in zip(balance.backbone_variables, before)
    ]
    return steps, [float(scale.numpy()) for scale in balance.update_scales + balance.drop_rates], balance


@pytest.mark.slow
def test_adaptive_slows_the_dominant_backbones_step_under_adamw(tmp_path):
    # A scaled gradient would not do it: AdamW's first step is lr x sign(gradient) whatever the scale.
    (text_step, image_step), (text_scale, image_scale, *drop_rates), balance = backbone_steps(20.0, tmp_path)  # text
    (other_text_step, other_image_step), (other_text_scale, other_image_scale, *_), _ = backbone_steps(-20.0, tmp_path)
    assert text_scale < 0.5 and image_scale == 1.0 and other_text_scale == 1.0 and other_image_scale < 0.5
    assert drop_rates[0] > 0.0 and drop_rates[1] == 0.0  # the next batch hides some of the texts
    # The probes' biases change no backbone gradient: the step ratios are the coefficients.
    assert text_step / other_text_step == pytest.approx(text_scale, rel=0.05)
    assert other_image_step / image_step == pytest.approx(other_image_scale, abs=0.02)
    # The epoch's record of its one batch: its scales and rates, the probes' true-class probability per row.
    summary = balance.epoch_summary()
    assert [summary[key] for key in SUMMARY_KEYS[:4]] == pytest.approx([text_scale, image_scale, *drop_rates])
    assert summary["text_probe_score"] > 0.99 and 0.0 < summary["image_probe_score"] < 0.99
    assert set(balance.epoch_summary().values()) == {0.0}  # the next epoch starts from no batches


def test_adaptive_hides_only_the_dominant_modality_of_rows_that_have_both():
    _, _, balance = balanced_model("adaptive")
    balance.drop_rates[0].assign(0.5)
    mask = np.ones((2000, 2), "float32")
    mask[:500, 1] = 0.0  # no image: the text is kept
    dropped = np.asarray(balance.drop_dominant({"modality_mask": tf.constant(mask)})["modality_mask"])
    assert (dropped[:, 1] == mask[:, 1]).all() and (dropped[:500, 0] == 1.0).all()
    assert 1 - dropped[500:, 0].mean() == pytest.approx(0.5, abs=0.05)


def test_modality_balance_is_refused_with_cached_features():
    with pytest.raises(UserError, match="cache_features"):
        RunConfig(modality_balance="aux", freeze="both", cache_features=True)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["aux", "adaptive"])
def test_a_balanced_run_trains_and_saves_the_plain_model(mode, tmp_path, capsys):
    train = write_subset(SAMPLES / "train.csv", tmp_path / "train.csv", 48)
    val = write_subset(SAMPLES / "val.csv", tmp_path / "val.csv", 16)
    epochs = 2 if mode == "adaptive" else 1
    code, out, err = run_cli(capsys, "train", "--data", train, "--val", val, "--out", tmp_path / "run", "--epochs",
                             str(epochs), "--batch-size", "16", "--modality-balance", mode, "--json")
    assert code == 0
    assert np.isfinite(json.loads(out)["loss"])
    # adaptive's modulation, one figure per epoch in the history and a chart in the report; aux has none.
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    page = (tmp_path / "run" / "report.html").read_text()
    recorded = {key: history[key] for key in SUMMARY_KEYS if key in history}
    assert list(recorded) == (list(SUMMARY_KEYS) if mode == "adaptive" else [])
    assert all(len(values) == epochs and all(0.0 <= value <= 1.0 for value in values) for values in recorded.values())
    assert ('alt="OGM step scale per epoch"' in page) == (mode == "adaptive")
    assert err.count("(OGM step text ") == (epochs if mode == "adaptive" else 0)  # the epoch lines say it briefly
    run = load_run(tmp_path / "run")
    assert run.config.modality_balance == mode
    assert "unimodal_heads" not in [layer.name for layer in run.model.layers]
    assert tuple(run.model.output.shape) == (None, len(run.labels))
