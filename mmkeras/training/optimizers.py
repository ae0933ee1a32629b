"""Optimizers and the learning-rate schedule of a run.

Keras 3.15's Adam/AdamW on the TensorFlow backend mishandle sparse
(`tf.IndexedSlices`) gradients whose indices repeat, which is exactly what an
embedding lookup produces when a token occurs twice in a batch: one step can
move a weight by a multiple of the learning rate (FINDINGS: 2x with 4 repeats).
mmkeras's optimizers therefore densify such gradients before the update; the
update is then the textbook one. `tests/test_optimizers.py` guards it.
"""

import keras
import tensorflow as tf

from mmkeras.config import RunConfig

RANDOM_INIT_LEARNING_RATE = 1e-3
FINE_TUNE_LEARNING_RATE = 5e-5
# Names of variables that decoupled weight decay must not shrink.
NO_DECAY_VARIABLES = ["bias", "gamma", "beta"]


def densify_gradients(grads):
    """Turn `tf.IndexedSlices` gradients into dense tensors (sums repeated indices)."""
    return [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]


class _DenseGradients:
    """Mixin: densify sparse gradients before any update rule sees them."""

    def apply(self, grads, trainable_variables=None):
        return super().apply(densify_gradients(grads), trainable_variables)


@keras.saving.register_keras_serializable(package="mmkeras")
class DenseAdam(_DenseGradients, keras.optimizers.Adam):
    """`keras.optimizers.Adam` that is correct for repeated embedding indices.

    Example:
    >>> optimizer = DenseAdam(learning_rate=1e-3)
    """


@keras.saving.register_keras_serializable(package="mmkeras")
class DenseAdamW(_DenseGradients, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` that is correct for repeated embedding indices.

    Example:
    >>> optimizer = DenseAdamW(learning_rate=1e-3, weight_decay=0.01)
    """


@keras.saving.register_keras_serializable(package="mmkeras")
class DenseSGD(_DenseGradients, keras.optimizers.SGD):
    """`keras.optimizers.SGD` (momentum 0.9 by default in mmkeras) on dense gradients.

    Example:
    >>> optimizer = DenseSGD(learning_rate=1e-2, momentum=0.9)
    """


def resolve_learning_rate(config: RunConfig, pretrained: bool) -> float:
    """The configured peak learning rate, or the default: 5e-5 to fine-tune pretrained weights, 1e-3 otherwise.

    LoRA runs get 1e-3 even on pretrained backbones: their pretrained weights are frozen, and what trains (the
    zero-initialised adapters, the fusion, the head) starts from scratch. Measured on samples/ with pretrained
    tiny presets (`benchmarks/lora_finetuning.py`): LoRA rank 4 reached 0.467 test accuracy at 5e-5 and 1.000
    at 1e-3 (20 epochs).
    """
    if config.learning_rate is not None:
        return config.learning_rate
    return FINE_TUNE_LEARNING_RATE if pretrained and not config.lora_rank else RANDOM_INIT_LEARNING_RATE


def make_learning_rate_schedule(config: RunConfig, *, total_steps: int, pretrained: bool):
    """Linear warmup over `warmup_fraction` of the steps, then cosine decay to zero.

    Example:
    >>> schedule = make_learning_rate_schedule(RunConfig(), total_steps=100, pretrained=False)
    """
    peak = resolve_learning_rate(config, pretrained)
    total_steps = max(1, total_steps)
    warmup_steps = int(config.warmup_fraction * total_steps)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else peak,
        decay_steps=max(1, total_steps - warmup_steps),
        warmup_target=peak if warmup_steps else None,
        warmup_steps=warmup_steps,
    )


def make_optimizer(config: RunConfig, *, total_steps: int, pretrained: bool) -> keras.optimizers.Optimizer:
    """The run's optimizer on the warmup + cosine schedule.

    Args:
        config: the run config (`optimizer`, `learning_rate`, `weight_decay`,
            `warmup_fraction`).
        total_steps: optimizer steps over the whole run.
        pretrained: whether any backbone is pretrained (picks the default
            learning rate).

    Example:
    >>> optimizer = make_optimizer(RunConfig(), total_steps=100, pretrained=False)
    """
    schedule = make_learning_rate_schedule(config, total_steps=total_steps, pretrained=pretrained)
    if config.optimizer == "adam":
        return DenseAdam(learning_rate=schedule)
    if config.optimizer == "sgd":
        optimizer = DenseSGD(learning_rate=schedule, momentum=0.9, weight_decay=config.weight_decay or None)
    else:
        optimizer = DenseAdamW(learning_rate=schedule, weight_decay=config.weight_decay)
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY_VARIABLES)
    return optimizer
