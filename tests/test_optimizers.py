"""The optimizers mmkeras trains with, including the Keras 3 Adam sparse-gradient trap (FINDINGS)."""

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
    resolve_learning_rate,
)

LEARNING_RATE = 0.1


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
    optimizer = make_optimizer(config, total_steps=1000, pretrained=False)
    assert largest_step(optimizer) <= LEARNING_RATE * 1.001


def test_schedule_warms_up_then_decays_to_zero():
    config = RunConfig(learning_rate=1e-3, warmup_fraction=0.1)
    schedule = make_learning_rate_schedule(config, total_steps=100, pretrained=False)
    rates = [float(schedule(step)) for step in (0, 5, 10, 55, 100)]
    assert rates[0] == 0.0
    assert rates[1] == pytest.approx(5e-4)
    assert rates[2] == pytest.approx(1e-3)
    assert 0.0 < rates[3] < 1e-3
    assert rates[4] == pytest.approx(0.0, abs=1e-9)


def test_default_learning_rate_depends_on_pretrained_backbones():
    config = RunConfig(warmup_fraction=0.0)
    random_init = make_learning_rate_schedule(config, total_steps=10, pretrained=False)(0)
    fine_tune = make_learning_rate_schedule(config, total_steps=10, pretrained=True)(0)
    assert float(random_init) > 10 * float(fine_tune)


def test_lora_defaults_to_the_from_scratch_learning_rate_on_pretrained_backbones():
    assert resolve_learning_rate(RunConfig(lora_rank=4), pretrained=True) == RANDOM_INIT_LEARNING_RATE
    assert resolve_learning_rate(RunConfig(), pretrained=True) == FINE_TUNE_LEARNING_RATE
    assert resolve_learning_rate(RunConfig(lora_rank=4, learning_rate=2e-4), pretrained=True) == 2e-4


def test_weight_decay_spares_biases_and_norms():
    optimizer = make_optimizer(RunConfig(weight_decay=0.5), total_steps=10, pretrained=False)
    bias = keras.Variable(np.ones(3), name="bias")
    kernel = keras.Variable(np.ones(3), name="kernel")
    assert not optimizer._use_weight_decay(bias)
    assert optimizer._use_weight_decay(kernel)
