"""Optimizers and the learning-rate schedule of a run.

Keras 3.15's Adam/AdamW on the TensorFlow backend mishandle sparse
(`tf.IndexedSlices`) gradients whose indices repeat, which is exactly what an
embedding lookup produces when a token occurs twice in a batch: one step can
move a weight by a multiple of the learning rate (2x with 4 repeats:
docs/design.md#adam-sparse-gradients).
mmkeras's optimizers therefore densify such gradients before the update; the
update is then the textbook one. `tests/test_optimizers.py` guards it.

They also take a learning-rate scale for some variables, which Keras 3 has no
option for: when a pretrained backbone is fine-tuned, its weights train at the
fine-tuning rate while the layers that start from scratch (fusion, head, a
random backbone) train `new_layers_lr_scale` times faster. Measured on
samples/ from pretrained presets (`benchmarks/lora_finetuning.py`, 20 epochs):
full fine-tuning at one 5e-5 rate reached 0.653 test accuracy, with the new
layers at 20x (1e-3) 1.000.
"""

import keras
import tensorflow as tf

from mmkeras import compat
from mmkeras.config import RunConfig
from mmkeras.models.builder import fine_tuned_pretrained_backbones
from mmkeras.tasks.registry import get_task

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


class _ScaledLearningRates:
    """Mixin: `scale_learning_rate(variables, scale)` multiplies the learning rate of those variables' updates.

    Scales given for one variable multiply. A scale may be a `tf.Variable`, read at every update (how
    `--modality-balance adaptive` slows the dominant backbone step by step). Decoupled weight decay stays at the
    optimizer's own rate for every variable.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._learning_rate_scales = {}

    def scale_learning_rate(self, variables, scale):
        """Update `variables` at `scale` (a float or a scalar `tf.Variable`) times their learning rate."""
        for variable in variables:
            self._learning_rate_scales.setdefault(compat.optimizer_variable_key(self, variable), []).append(scale)

    def update_step(self, gradient, variable, learning_rate):
        for scale in self._learning_rate_scales.get(compat.optimizer_variable_key(self, variable), ()):
            learning_rate = learning_rate * scale
        return super().update_step(gradient, variable, learning_rate)


@keras.saving.register_keras_serializable(package="mmkeras")
class DenseAdam(_ScaledLearningRates, _DenseGradients, keras.optimizers.Adam):
    """`keras.optimizers.Adam` that is correct for repeated embedding indices.

    Example:
    >>> optimizer = DenseAdam(learning_rate=1e-3)
    """


@keras.saving.register_keras_serializable(package="mmkeras")
class DenseAdamW(_ScaledLearningRates, _DenseGradients, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` that is correct for repeated embedding indices.

    Example:
    >>> optimizer = DenseAdamW(learning_rate=1e-3, weight_decay=0.01)
    """


@keras.saving.register_keras_serializable(package="mmkeras")
class DenseSGD(_ScaledLearningRates, _DenseGradients, keras.optimizers.SGD):
    """`keras.optimizers.SGD` (momentum 0.9 by default in mmkeras) on dense gradients.

    Example:
    >>> optimizer = DenseSGD(learning_rate=1e-2, momentum=0.9)
    """


def fine_tuned_layers(config: RunConfig) -> tuple[str, ...]:
    """The pretrained layers whose own weights train: the backbones (`fine_tuned_pretrained_backbones`)
    and the head layers the run's task starts from an align run (`Task.aligned_layers`)."""
    return fine_tuned_pretrained_backbones(config, get_task(config.task).aligned_layers(config))


def resolve_learning_rate(config: RunConfig) -> float:
    """The configured peak learning rate, or the default: 5e-5 when a pretrained backbone's weights train, else 1e-3.

    Without pretrained weights to fine-tune (random backbones, frozen backbones, LoRA, whose adapters start from
    zero) everything that trains starts from scratch. Measured on samples/ with pretrained tiny presets
    (`benchmarks/lora_finetuning.py`): LoRA rank 4 reached 0.467 test accuracy at 5e-5 and 1.000 at 1e-3 (20 epochs).
    """
    if config.learning_rate is not None:
        return config.learning_rate
    return FINE_TUNE_LEARNING_RATE if fine_tuned_layers(config) else RANDOM_INIT_LEARNING_RATE


def new_layers_learning_rate(config: RunConfig) -> float:
    """The peak learning rate of the layers that start from scratch: `new_layers_lr_scale` times
    `resolve_learning_rate` when pretrained weights train beside them, else that rate itself."""
    scale = config.new_layers_lr_scale if fine_tuned_layers(config) else 1.0
    return scale * resolve_learning_rate(config)


def new_layer_variables(model: keras.Model, config: RunConfig) -> list:
    """`model`'s trainable variables outside the pretrained backbones it fine-tunes (empty when it fine-tunes none).

    Args:
        model: the model the run trains (a `build_model` model, or its head
            on cached features).
        config: the run config (`fine_tuned_layers`).
    """
    pretrained = fine_tuned_layers(config)
    if not pretrained:
        return []
    kept = {id(variable) for name in pretrained for variable in model.get_layer(name).trainable_variables}
    return [variable for variable in model.trainable_variables if id(variable) not in kept]


def make_learning_rate_schedule(config: RunConfig, *, total_steps: int):
    """Linear warmup over `warmup_fraction` of the steps, then cosine decay to zero.

    Example:
    >>> schedule = make_learning_rate_schedule(RunConfig(), total_steps=100)
    """
    peak = resolve_learning_rate(config)
    total_steps = max(1, total_steps)
    warmup_steps = int(config.warmup_fraction * total_steps)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else peak,
        decay_steps=max(1, total_steps - warmup_steps),
        warmup_target=peak if warmup_steps else None,
        warmup_steps=warmup_steps,
    )


def make_optimizer(config: RunConfig, model: keras.Model, *, total_steps: int) -> keras.optimizers.Optimizer:
    """The run's optimizer for `model`, on the warmup + cosine schedule.

    When the run fine-tunes a pretrained backbone, `model`'s other trainable
    layers (fusion, head, random backbones) learn `new_layers_lr_scale` times
    faster than its pretrained weights.

    Args:
        config: the run config (`optimizer`, `learning_rate`, `weight_decay`,
            `warmup_fraction`, `new_layers_lr_scale`, and the backbone
            settings that pick the default learning rate).
        model: the model the optimizer trains.
        total_steps: optimizer steps over the whole run.

    Example:
    >>> optimizer = make_optimizer(RunConfig(), model, total_steps=100)  # doctest: +SKIP
    """
    schedule = make_learning_rate_schedule(config, total_steps=total_steps)
    if config.optimizer == "adam":
        optimizer = DenseAdam(learning_rate=schedule)
    elif config.optimizer == "sgd":
        optimizer = DenseSGD(learning_rate=schedule, momentum=0.9, weight_decay=config.weight_decay or None)
    else:
        optimizer = DenseAdamW(learning_rate=schedule, weight_decay=config.weight_decay)
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY_VARIABLES)
    optimizer.scale_learning_rate(new_layer_variables(model, config), config.new_layers_lr_scale)
    return optimizer
