"""Gradient checkpointing (`TrainingLoop(remat=...)`, `train --remat`): the same training, the backbone run twice."""

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmkeras.config import RunConfig
from mmkeras.errors import UserError
from mmkeras.models.builder import build_model
from mmkeras.models.vision_backbones import BACKBONE_NAME as VISION_BACKBONE
from mmkeras.training.rematerialization import backbone_segments, rematerialized
from mmkeras.training.training_loop import TrainingLoop
from tests.helpers.cli import SAMPLES, run_cli, write_subset
from tests.helpers.training_runs import SimulatedCrash, crashing_at_checkpoint

ROWS, BATCH, CLASSES = 12, 8, 3
FORWARD_CONVOLUTIONS = ("Conv2D", "DepthwiseConv2dNative")


def tiny_mobilenet():
    """A tiny multimodal model whose vision backbone has batch norms (moving statistics) and residual blocks."""
    return build_model("tiny", "tiny-mobilenet", num_classes=CLASSES, texts=["a photo"], seed=0)


def batches(preprocessor):
    rng = np.random.default_rng(0)
    inputs = dict(preprocessor(["a photo of a cat"] * ROWS, [None] * ROWS))
    inputs["image"] = rng.integers(0, 256, (ROWS, *preprocessor.image_size, 3)).astype("float32")
    inputs["modality_mask"] = np.ones((ROWS, 2), "float32")
    labels = (np.arange(ROWS) % CLASSES).astype("int32")
    return tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(BATCH)


def train_epoch(remat):
    """One epoch (a batch of 8, then 4) of plain SGD; the loss, every weight and the forward convolutions traced."""
    model, preprocessor = tiny_mobilenet()
    loop = TrainingLoop(model, keras.optimizers.SGD(0.1), remat=remat)
    loss, _ = loop.train_epoch(batches(preprocessor), num_examples=ROWS, batch_size=BATCH)
    (graph,) = [trace.graph for trace in loop._update_step._list_all_concrete_functions()]
    convolutions = sum(op.type in FORWARD_CONVOLUTIONS for op in graph.get_operations())
    return loss, model.get_weights(), convolutions


def test_remat_trains_as_without_and_computes_the_backbone_twice():
    loss, weights, convolutions = train_epoch(remat=None)
    remat_loss, remat_weights, remat_convolutions = train_epoch(remat=VISION_BACKBONE)
    np.testing.assert_allclose(remat_loss, loss, rtol=1e-6)
    # Batch norms' moving statistics among the weights: the recomputation does not update them a second time.
    for remat_weight, weight in zip(remat_weights, weights):
        np.testing.assert_allclose(remat_weight, weight, atol=1e-6)
    assert remat_convolutions == 2 * convolutions  # the forward pass again, on the backward pass


def test_the_recomputation_draws_the_forward_passs_dropout_masks():
    # Dropout advances its seed in the forward pass: recomputed from the advanced seed, the masks (and the
    # gradients) would differ; the seed is also advanced once, as without remat.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16,))
    hidden = keras.layers.Dropout(0.5)(keras.layers.Dense(32, activation="relu")(inputs))
    hidden = keras.layers.Dropout(0.5)(keras.layers.Dense(32, activation="relu")(hidden))
    backbone = keras.Model(inputs, keras.layers.Dense(8)(hidden), name=VISION_BACKBONE)
    outer = keras.Input((16,))
    model = keras.Model(outer, keras.layers.Dense(3)(backbone(outer)))
    rows = np.random.default_rng(0).normal(size=(8, 16)).astype("float32")

    def gradients_and_state(remat):
        state = [variable.numpy() for variable in model.non_trainable_variables]

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                with rematerialized(model, VISION_BACKBONE) if remat else contextlib.nullcontext():
                    loss = tf.reduce_sum(model(rows, training=True) ** 2)
            return tape.gradient(loss, model.trainable_variables)

        gradients = [gradient.numpy() for gradient in step()]
        after = [variable.numpy() for variable in model.non_trainable_variables]
        for variable, value in zip(model.non_trainable_variables, state):
            variable.assign(value)
        return gradients, after

    gradients, state = gradients_and_state(remat=False)
    remat_gradients, remat_state = gradients_and_state(remat=True)
    for remat_gradient, gradient in zip(remat_gradients, gradients, strict=True):
        np.testing.assert_allclose(remat_gradient, gradient, atol=1e-6)
    for remat_value, value in zip(remat_state, state, strict=True):
        np.testing.assert_array_equal(remat_value, value)


def test_segments_chain_to_the_backbone():
    backbone = tiny_mobilenet()[0].get_layer(VISION_BACKBONE)
    segments = backbone_segments(backbone)
    assert len(segments) > 1
    images = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")
    outputs = images
    for segment in segments:
        outputs = segment(outputs, training=False)
    np.testing.assert_allclose(outputs, backbone(images), atol=1e-6)


def test_a_backbone_with_no_cut_point_is_refused():
    inputs = keras.Input((8,))
    branches = [keras.layers.Dense(4)(inputs), keras.layers.Dense(4)(inputs)]
    no_cut = keras.Model(inputs, keras.layers.Add()(branches), name="branches")
    with pytest.raises(UserError, match="no point that one tensor alone crosses"):
        backbone_segments(no_cut)


@pytest.mark.parametrize("freeze", ["vision", "both"])
def test_remat_is_refused_without_vision_gradients(freeze):
    with pytest.raises(UserError, match=f"remat recomputes the vision backbone.*freeze {freeze}"):
        RunConfig(remat=True, freeze=freeze)


def test_a_remat_run_resumes_and_exports(tmp_path, monkeypatch, capsys):
    from mmkeras.export.converter import export_bundle
    from mmkeras.runs import load_run_config
    from mmkeras.training.trainer import train

    data = write_subset(SAMPLES / "train.csv", tmp_path / "train.csv", 12)
    config = RunConfig(
        data=str(data), out=str(tmp_path / "run"), epochs=1, batch_size=8, seed=0, checkpoint_steps=1, remat=True
    )
    with crashing_at_checkpoint(monkeypatch, 1), pytest.raises(SimulatedCrash):
        train(config)
    with pytest.raises(UserError, match="remat"):  # the checkpoint's settings say remat
        train(config.replace(remat=False), resume=True)
    resumed = train(config, resume=True)
    assert load_run_config(resumed.run_dir).remat is True and resumed.history["loss"]
    report = export_bundle(resumed.run_dir, tmp_path / "bundle")  # the saved model holds no remat wrapper
    assert report["parity"]["max_abs_logit_diff"] <= 1e-4
    capsys.readouterr()  # the runs' log lines (on stderr once an earlier test has installed mmkeras' handler)
    code, _, err = run_cli(capsys, "train", "--data", data, "--out", tmp_path / "frozen", "--remat", "--freeze", "both")
    assert code == 2 and err.strip().splitlines() == [
        "error: --remat recomputes the vision backbone on the backward pass; with freeze both it has no gradients"
    ]
