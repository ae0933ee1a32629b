"""Mixed precision for a run: which Keras dtype policy, and loss scaling for float16.

The model's logits layer is float32 by construction (`build_model`) and the
training loop computes the loss in float32, so only the backbones and the
fusion run in the reduced precision. A run folder always holds the float32
model (`float32_copy`): mixed precision is how a run trains, not what it
exports (LiteRT has no builtin float16 or bfloat16 kernels for most ops).
"""

import contextlib

import keras
import tensorflow as tf

POLICIES = {"off": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


def resolve_policy(mixed_precision: str) -> str:
    """The Keras dtype policy for `--mixed-precision` (`auto`: mixed_bfloat16 on a TPU, mixed_float16 on a
    GPU, float32 on a CPU: bfloat16 trained 1.2x faster on an AVX512-BF16 CPU but 0.7x on one without native
    bfloat16, docs/design.md#mixed-precision).

    Example:
    >>> resolve_policy("bfloat16")
    'mixed_bfloat16'
    """
    if mixed_precision == "auto":
        if tf.config.list_logical_devices("TPU"):  # listed once `--strategy tpu` has initialized the TPU
            return "mixed_bfloat16"
        return "mixed_float16" if tf.config.list_logical_devices("GPU") else "float32"
    return POLICIES[mixed_precision]


@contextlib.contextmanager
def dtype_policy(policy: str):
    """Build layers under `policy`, then restore the previous global policy.

    Example:
    >>> with dtype_policy("mixed_bfloat16"):
    ...     layer = keras.layers.Dense(2)
    >>> layer.compute_dtype
    'bfloat16'
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def with_loss_scaling(optimizer: keras.optimizers.Optimizer, policy: str) -> keras.optimizers.Optimizer:
    """Wrap the optimizer in dynamic loss scaling under float16 (its gradients underflow otherwise)."""
    if policy == "mixed_float16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def float32_copy(model: keras.Model) -> keras.Model:
    """The same model with every layer's dtype policy float32 and the same weights.

    Rebuilt from its config (keras-hub backbones and LoRA layers included), so
    the copy is what a float32 run would have trained; the weights are float32
    under mixed precision already, and are copied as they are.

    Example:
    >>> with dtype_policy("mixed_bfloat16"):
    ...     model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    >>> float32_copy(model).layers[0].compute_dtype
    'float32'
    """
    config = keras.saving.serialize_keras_object(model)
    _set_float32_policies(config)
    copy = keras.saving.deserialize_keras_object(config)
    copy.set_weights(model.get_weights())
    return copy


def _set_float32_policies(config):
    """Replace every mixed dtype policy in a serialized model, in place."""
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy" and config["config"].get("name", "").startswith("mixed_"):
            config["config"]["name"] = "float32"
        for value in config.values():
            _set_float32_policies(value)
    elif isinstance(config, list):
        for value in config:
            _set_float32_policies(value)
