"""Mixed precision for a run: which Keras dtype policy, and loss scaling for float16.

The model's logits layer is float32 by construction (`build_model`) and the
training loop computes the loss in float32, so only the backbones and the
fusion run in the reduced precision.
"""

import contextlib

import keras
import tensorflow as tf

POLICIES = {"off": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


def resolve_policy(mixed_precision: str) -> str:
    """The Keras dtype policy for `--mixed-precision` (`auto`: mixed_bfloat16 on a TPU, mixed_float16 on a
    GPU, float32 on a CPU: bfloat16 on this project's AVX-512 CPU changed training speed by -40% to +20%
    between runs, benchmarks/README.md).

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
