"""`QuantizedConv2D`, `QuantizedDepthwiseConv2D`, and BatchNorm folding.

Convolution kernels are fake-quantized per output channel (symmetric, narrow
range), which the converter supports for convolutions and which keeps
depthwise kernels accurate; the output is fake-quantized after the bias and
activation, unless a ReLU/ReLU6 layer follows that the converter fuses into
the convolution (then only that activation's output is, as in the int8 model).
A BatchNormalization right after a convolution stays float in the converted
model unless it is folded into the convolution first
(docs/design.md#converter-traps),
so `fold_batch_normalization` folds it with its moving statistics (exact at
inference) and turns it into a `FoldedBatchNormalization`, which passes its
input through.

Example:
>>> import keras, numpy as np
>>> conv = keras.layers.Conv2D(4, 3, use_bias=False)
>>> norm = keras.layers.BatchNormalization()
>>> images = np.random.default_rng(0).normal(size=(1, 6, 6, 2)).astype("float32")
>>> norm.build((None, 4, 4, 4)); _ = norm.moving_mean.assign([1.0, 2.0, 3.0, 4.0])
>>> expected = norm(conv(images))
>>> fold_batch_normalization(conv, norm)
>>> bool(np.allclose(norm(conv(images)), expected, atol=1e-5))
True
"""

import keras
from keras import ops

from mmkeras import compat
from mmkeras.quantization.fake_quant import fake_quant_weights


def quantized_convolution(layer, inputs, kernel, channel_axis):
    """Convolve with the kernel fake-quantized along `channel_axis`, add bias, activate, quantize (unless an
    activation the converter fuses into the convolution follows: `quantizes_output`)."""
    outputs = layer.convolution_op(inputs, fake_quant_weights(kernel, axis=channel_axis, num_bits=layer.weight_bits))
    if layer.use_bias:
        outputs = ops.add(outputs, layer.bias)
    if layer.activation is not None:
        outputs = layer.activation(outputs)
    return layer.output_quantizer(outputs) if layer.quantizes_output else outputs


@keras.saving.register_keras_serializable(package="mmkeras")
class QuantizedConv2D(keras.layers.Conv2D):
    """A Conv2D (also grouped) with per-output-channel fake-quantized kernel and a fake-quantized output.

    Made by `quantized_layer.convert_layer`; channels-last only.

    Example:
    >>> from mmkeras.quantization.quantized_layer import QuantizerSettings, convert_layer
    >>> conv = keras.layers.Conv2D(2, 1)
    >>> conv.build((None, 4, 4, 3))
    >>> convert_layer(conv, QuantizedConv2D, QuantizerSettings()).filters
    2
    """

    # False when a ReLU/ReLU6 that the converter fuses into the convolution follows (`qat_transform`).
    quantizes_output = True

    def call(self, inputs):
        return quantized_convolution(self, inputs, self.kernel, channel_axis=-1)


@keras.saving.register_keras_serializable(package="mmkeras")
class QuantizedDepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """A DepthwiseConv2D with a fake-quantized kernel (per channel when the multiplier is 1).

    Example:
    >>> from mmkeras.quantization.quantized_layer import QuantizerSettings, convert_layer
    >>> conv = keras.layers.DepthwiseConv2D(3)
    >>> conv.build((None, 5, 5, 3))
    >>> convert_layer(conv, QuantizedDepthwiseConv2D, QuantizerSettings()).kernel_size
    (3, 3)
    """

    # False when a ReLU/ReLU6 that the converter fuses into the convolution follows (`qat_transform`).
    quantizes_output = True

    def convolution_op(self, inputs, kernel):
        return ops.depthwise_conv(
            inputs,
            kernel,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )

    def call(self, inputs):
        # Kernel [h, w, channels, multiplier]: with multiplier 1 the channel
        # axis is the output channel; otherwise one range for the tensor.
        channel_axis = 2 if self.depth_multiplier == 1 else None
        return quantized_convolution(self, inputs, self.kernel, channel_axis=channel_axis)


@keras.saving.register_keras_serializable(package="mmkeras")
class FoldedBatchNormalization(keras.layers.BatchNormalization):
    """A BatchNormalization already folded into the convolution before it: the identity.

    Its variables stay (so weight files keep their layout) but are unused and frozen.

    Example:
    >>> import numpy as np
    >>> norm = keras.layers.BatchNormalization()
    >>> norm.build((None, 2))
    >>> norm.__class__ = FoldedBatchNormalization
    >>> norm(np.array([[3.0, 4.0]], "float32")).numpy().tolist()
    [[3.0, 4.0]]
    """

    def call(self, inputs, training=None, mask=None):
        return inputs


def fold_batch_normalization(conv, norm):
    """Fold `norm` (a BatchNormalization on `conv`'s output) into `conv`'s kernel and bias.

    `kernel' = kernel * g` and `bias' = (bias - mean) * g + beta` per output
    channel, with `g = gamma / sqrt(variance + epsilon)`. `conv` gains a bias if
    it had none (trainable when the kernel is); `norm` becomes a `FoldedBatchNormalization`.

    Args:
        conv: a built channels-last Conv2D (grouped too) or DepthwiseConv2D
            without activation.
        norm: the built BatchNormalization applied to `conv`'s output, on the
            last axis.

    Raises:
        ValueError: the pair cannot be folded.
    """
    if conv.activation not in (None, keras.activations.linear) or conv.data_format != "channels_last":
        raise ValueError(f"cannot fold {norm.name!r}: {conv.name!r} has an activation or is channels-first")
    if norm.axis not in (-1, len(conv.kernel.shape) - 1):
        raise ValueError(f"cannot fold {norm.name!r}: it normalises axis {norm.axis}, not the channels")
    gamma = norm.gamma if norm.scale else 1.0
    beta = norm.beta if norm.center else 0.0
    factor = ops.cast(gamma, "float32") / ops.sqrt(ops.cast(norm.moving_variance, "float32") + norm.epsilon)
    kernel = ops.cast(conv.kernel, "float32")
    if _is_depthwise(conv):
        factor_in_kernel = ops.reshape(factor, kernel.shape[2:])  # output channel c * multiplier + m
    else:
        factor_in_kernel = factor
    bias = conv.bias if conv.use_bias else 0.0
    folded_bias = (bias - ops.cast(norm.moving_mean, "float32")) * factor + beta
    conv.kernel.assign(ops.cast(kernel * factor_in_kernel, conv.kernel.dtype))
    if conv.use_bias:
        conv.bias.assign(folded_bias)
    else:
        with compat.unlocked_tracker(conv):
            conv.bias = conv.add_weight(
                shape=(conv.kernel.shape[-1] * (conv.kernel.shape[-2] if _is_depthwise(conv) else 1),),
                initializer=keras.initializers.Zeros(),
                name="bias",
                # A frozen backbone's kernel is frozen in a loaded run while its layer's flag may not be
                # (`run_loading._refreeze`): the bias trains exactly when the kernel does.
                trainable=conv.kernel.trainable,
            )
        conv.bias.assign(folded_bias)
        conv.use_bias = True
    norm.__class__ = FoldedBatchNormalization
    norm.trainable = False  # unused from now on: no gradient to apply


def _is_depthwise(conv):
    return isinstance(conv, keras.layers.DepthwiseConv2D)
