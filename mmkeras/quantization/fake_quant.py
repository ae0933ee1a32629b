"""Fake quantization: the quantizer state of quantization-aware training.

mmkeras follows tensorflow-model-optimization's default 8-bit scheme (which
cannot be used itself: it only takes tf_keras models, see
docs/design.md#qat-without-tensorflow-model-optimization):

- weights: symmetric, narrow-range int8 ([-127, 127]), the range taken from
  the current weights at every step ("last value"); per output channel for
  convolutions, per tensor for matmuls (the TFLite converter rejects
  per-channel fake-quant on Dense/EinsumDense kernels:
  docs/design.md#converter-traps);
- activations: asymmetric int8 with a range tracked as a moving average of the
  batch min/max during training (`ActivationQuantizer`).

Both go through `keras.quantizers.fake_quant_with_min_max_vars`, which on the
TensorFlow backend emits the FakeQuant ops the TFLite converter turns into
int8 kernels. Keras 3 has no quantizer with moving-average state, hence this
small layer.

Example:
>>> import numpy as np
>>> quantizer = ActivationQuantizer()
>>> _ = quantizer(np.array([[-1.0, 0.5, 3.0]], "float32"), training=True)  # the first batch sets the range
>>> [round(float(v), 3) for v in (quantizer.range_min.numpy(), quantizer.range_max.numpy())]
[-1.0, 3.0]
"""

import keras
import tensorflow as tf
from keras import ops

from mmkeras.quantization.qat_settings import EMA_DECAY, NUM_BITS


def fake_quant_weights(kernel, *, axis=None, num_bits=NUM_BITS):
    """Symmetric narrow-range fake quantization of a weight tensor.

    Args:
        kernel: the float weights.
        axis: the output-channel axis for per-channel ranges, or `None` for
            one range for the whole tensor.
        num_bits: quantization bit width.

    Returns:
        The weights rounded to the `2**num_bits - 1` levels of their range
        (gradients pass straight through).
    """
    if axis is None:
        bound = ops.max(ops.abs(kernel))
    else:
        axis = axis % len(kernel.shape)
        bound = ops.max(ops.abs(kernel), axis=[dim for dim in range(len(kernel.shape)) if dim != axis])
    # The range follows the weights but is not trained through them (tfmot's
    # LastValueQuantizer assigns it outside the gradient, too).
    bound = ops.stop_gradient(ops.maximum(bound, 1e-8))
    return keras.quantizers.fake_quant_with_min_max_vars(
        kernel, -bound, bound, num_bits=num_bits, narrow_range=True, axis=axis
    )


@keras.saving.register_keras_serializable(package="mmkeras")
class ActivationQuantizer(keras.layers.Layer):
    """Asymmetric fake quantization of activations with a moving-average range.

    In training (or while `observing`, see `qat_transform.calibrate_ranges`)
    every batch moves the range towards the batch's min/max (always including
    0, so that zero is exact); the first batch sets it. Under a tf.distribute
    strategy with several replicas that is the min/max of the *global* batch
    (gathered from every replica), so the ranges equal single-process
    training's. At inference the stored range is used, and it becomes the
    tensor's int8 scale and zero point in the exported model.

    Args:
        ema_decay: weight of the old range in the moving average.
        num_bits: quantization bit width.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    >>> quantizer = ActivationQuantizer(ema_decay=0.9)
    >>> quantizer.get_config()["ema_decay"]
    0.9
    """

    def __init__(self, ema_decay=EMA_DECAY, num_bits=NUM_BITS, **kwargs):
        super().__init__(**kwargs)
        self.ema_decay = ema_decay
        self.num_bits = num_bits
        # A Python switch, read when the call is traced: `calibrate_ranges`
        # collects ranges in inference mode (no dropout) with it.
        self.observing = False

    def build(self, input_shape=None):
        zeros = keras.initializers.Zeros()
        self.range_min = self.add_weight(shape=(), initializer=zeros, trainable=False, name="range_min")
        self.range_max = self.add_weight(shape=(), initializer=zeros, trainable=False, name="range_max")
        # 0 until a batch has been seen: the first batch sets the range.
        self.calibrated = self.add_weight(shape=(), initializer=zeros, trainable=False, name="calibrated")

    def call(self, inputs, training=None):
        if training or self.observing:
            range_min, range_max = self._update_range(inputs)
        else:
            range_min, range_max = self.range_min, self.range_max
        return keras.quantizers.fake_quant_with_min_max_vars(
            inputs, ops.cast(range_min, inputs.dtype), ops.cast(range_max, inputs.dtype), num_bits=self.num_bits
        )

    def _update_range(self, inputs):
        values = ops.stop_gradient(ops.cast(inputs, "float32"))
        # 0 is always in the range (so that it is exact).
        batch_min = ops.minimum(ops.min(values), 0.0)
        batch_max = ops.maximum(ops.max(values), 0.0)
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            batch_min, batch_max = _global_min_max(replica, batch_min, batch_max)
        decay = self.ema_decay * self.calibrated
        range_min = decay * self.range_min + (1.0 - decay) * batch_min
        range_max = decay * self.range_max + (1.0 - decay) * batch_max
        self.range_min.assign(range_min)
        self.range_max.assign(range_max)
        self.calibrated.assign(1.0)
        return range_min, range_max

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"ema_decay": self.ema_decay, "num_bits": self.num_bits})
        return config


def _global_min_max(replica, local_min, local_max):
    """The min and max of the global batch from each replica's min and max of its share.

    Averaging per-replica ranges (a mirrored variable's `mean` aggregation)
    would not give the range one process sees on the whole batch, and without
    any aggregation each replica would keep its own range. Here each replica
    writes its (finite) pair into its own row of a zero table and one sum
    all-reduce (exact: the other rows add zeros) gives every replica the whole
    table, as an all-gather would; all-reduce is the collective the training
    loop already runs, measured faster than `all_gather` under
    MultiWorkerMirroredStrategy. Every replica then assigns the same values to
    its copy of the (`aggregation none`) range variables, so the copies stay
    equal without a merge call.
    """
    rows = tf.range(replica.num_replicas_in_sync)[:, None] == replica.replica_id_in_sync_group
    table = replica.all_reduce("sum", tf.where(rows, ops.stack([local_min, local_max])[None], 0.0))
    return ops.min(table[:, 0]), ops.max(table[:, 1])
