"""The optimizers mmkeras trains with, including Keras 3's Adam sparse-gradient trap.

The trap: docs/design.md#adam-sparse-gradients.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmkeras.config import RunConfig
from mmkeras.training.optimizers import (
    FINE_TUNE_LEARNING_RATE,
    RANDOM_INIT_LEARNING_RATE,
    DenseAdam,
    DenseAdamW,
    make_learning_rate_schedule,
    make_optimizer,
    new_layers_learning_rate,
    resolve_learning_rate,
)

LEARNING_RATE = 0.1
# Any SPEC but a built-in random architecture counts as pretrained; nothing is loaded here.
PRESET = "bert_tiny_en_uncased"


def largest_step(optimizer) -> float:
    """One update of an embedding looked up 4 times at the same index; the largest weight change."""
    keras.utils.set_random_seed(0)
    embedding = keras.layers.Embedding(10, 4)
    embedding.build((1, 4))
    before = embedding.embeddings.numpy().copy()
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(embedding(tf.constant([[1, 1, 1, 1]])))
    grads = tape.gradient(loss, embedding.trainable_variables)
    assert isinstance(grads[0], tf.IndexedSlices)  # the case that triggers the trap
    optimizer.apply(grads, embedding.trainable_variables)
    return float(np.abs(embedding.embeddings.numpy() - before).max())


def test_stock_adam_overshoots_on_repeated_sparse_indices():
    # The trap is real on this stack; if this starts failing, upstream fixed it and
    # the densifying optimizers can go.
    assert largest_step(keras.optimizers.Adam(LEARNING_RATE)) > 1.5 * LEARNING_RATE


@pytest.mark.parametrize("optimizer_class", [DenseAdam, DenseAdamW])
def test_mmkeras_adam_moves_at_most_the_learning_rate(optimizer_class):
    # Adam's first step is lr * m / sqrt(v) = lr * sign(g) for any dense gradient.
    step = largest_step(optimizer_class(LEARNING_RATE))
    assert step == pytest.approx(LEARNING_RATE, rel=1e-3)


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_the_trainers_optimizers_are_guarded(name):
    config = RunConfig(optimizer=name, learning_rate=LEARNING_RATE, warmup_fraction=0.0, weight_decay=0.0)
    optimizer = make_optimizer(config, keras.Sequential(), total_steps=1000)
    assert largest_step(optimizer) <= LEARNING_RATE * 1.001


def test_schedule_warms_up_then_decays_to_zero():
    config = RunConfig(learning_rate=1e-3, warmup_fraction=0.1)
    schedule = make_learning_rate_schedule(config, total_steps=100)
    rates = [float(schedule(step)) for step in (0, 5, 10, 55, 100)]
    assert rates[0] == 0.0
    assert rates[1] == pytest.approx(5e-4)
    assert rates[2] == pytest.approx(1e-3)
    assert 0.0 < rates[3] < 1e-3
    assert rates[4] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, RANDOM_INIT_LEARNING_RATE),  # random tiny backbones
        ({"text_backbone": PRESET}, FINE_TUNE_LEARNING_RATE),
        ({"vision_backbone": PRESET, "freeze": "text"}, FINE_TUNE_LEARNING_RATE),
        ({"text_backbone": PRESET, "freeze": "text"}, RANDOM_INIT_LEARNING_RATE),  # nothing pretrained trains
        ({"text_backbone": PRESET, "lora_rank": 4}, RANDOM_INIT_LEARNING_RATE),  # adapters start from zero
        ({"text_backbone": PRESET, "lora_rank": 4, "learning_rate": 2e-4}, 2e-4),
    ],
)
def test_default_learning_rate_is_the_fine_tuning_one_only_when_pretrained_weights_train(settings, expected):
    assert resolve_learning_rate(RunConfig(**settings)) == expected


def test_new_layers_learning_rate_is_scaled_only_beside_fine_tuned_pretrained_weights():
    assert new_layers_learning_rate(RunConfig(text_backbone=PRESET)) == pytest.approx(20 * FINE_TUNE_LEARNING_RATE)
    assert new_layers_learning_rate(RunConfig(text_backbone=PRESET, lora_rank=4)) == RANDOM_INIT_LEARNING_RATE
    assert new_layers_learning_rate(RunConfig(learning_rate=2e-4)) == 2e-4


def backbone_and_head():
    """A model with a layer named like mmkeras' text backbone, and a head."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    features = keras.layers.Dense(4, name="text_backbone")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(features))


def largest_steps(model, optimizer, strategy) -> dict:
    """One update on a random batch: the largest weight change of each layer."""
    before = {layer.name: layer.kernel.numpy().copy() for layer in model.layers[1:]}

    def step(features):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(features) ** 2)
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)

    strategy.run(step, (tf.random.normal((2, 4), seed=1),))
    return {name: float(np.abs(model.get_layer(name).kernel.numpy() - kernel).max()) for name, kernel in before.items()}


@pytest.mark.parametrize("strategy", [tf.distribute.get_strategy(), tf.distribute.MirroredStrategy(["/cpu:0"])])
@pytest.mark.parametrize("scale", [20.0, 1.0])
def test_new_layers_learn_faster_than_the_pretrained_backbone_they_fine_tune(strategy, scale):
    # Adam's first step is lr * sign(g): the backbone moves by the learning rate, the head by `scale` times it.
    config = RunConfig(text_backbone=PRESET, optimizer="adam", warmup_fraction=0.0, new_layers_lr_scale=scale)
    with strategy.scope():
        model = backbone_and_head()
        optimizer = make_optimizer(config, model, total_steps=10)
        optimizer.build(model.trainable_variables)
    steps = largest_steps(model, optimizer, strategy)
    assert steps["text_backbone"] == pytest.approx(FINE_TUNE_LEARNING_RATE, rel=1e-3)
    assert steps["logits"] == pytest.approx(scale * FINE_TUNE_LEARNING_RATE, rel=1e-3)


def test_without_pretrained_weights_to_fine_tune_every_layer_learns_at_one_rate():
    model = backbone_and_head()
    optimizer = make_optimizer(RunConfig(optimizer="adam", warmup_fraction=0.0), model, total_steps=10)
    steps = largest_steps(model, optimizer, tf.distribute.get_strategy())
    expected = {"text_backbone": RANDOM_INIT_LEARNING_RATE, "logits": RANDOM_INIT_LEARNING_RATE}
    assert steps == pytest.approx(expected, rel=1e-3)


def test_weight_decay_spares_biases_and_norms():
    optimizer = make_optimizer(RunConfig(weight_decay=0.5), keras.Sequential(), total_steps=10)
    bias = keras.Variable(np.ones(3), name="bias")
    kernel = keras.Variable(np.ones(3), name="kernel")
    assert not optimizer._use_weight_decay(bias)
    assert optimizer._use_weight_decay(kernel)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_learning_rate_scales_multiply_and_a_variable_scale_is_read_at_each_update(jit_compile):
    # Adam's first step is lr * sign(g): each update moves the weight by lr times the product of its scales.
    weight = keras.Variable(np.zeros(3, "float32"))
    optimizer = DenseAdam(LEARNING_RATE)
    optimizer.build([weight])
    step_scale = tf.Variable(0.5, trainable=False)
    optimizer.scale_learning_rate([weight], 20.0)
    optimizer.scale_learning_rate([weight], step_scale)
    update = tf.function(lambda: optimizer.apply([tf.ones(3)], [weight]), jit_compile=jit_compile)
    update()
    assert float(weight.numpy()[0]) == pytest.approx(-10 * LEARNING_RATE, rel=1e-3)
    step_scale.assign(0.0)
    update()
    assert float(weight.numpy()[0]) == pytest.approx(-10 * LEARNING_RATE, rel=1e-3)
