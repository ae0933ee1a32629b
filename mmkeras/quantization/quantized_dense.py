"""`QuantizedDense` and `QuantizedEinsumDense`: projections as int8-ready 2-D matmuls.

The TFLite converter keeps a Dense on a 3-D input, or an EinsumDense, float
(they lower to reshape-MatMul-reshape around the fake-quant ops), but turns a
fake-quantized 2-D `matmul + bias` into an int8 FULLY_CONNECTED
(docs/design.md#converter-traps).
So both layers flatten their input to 2-D, multiply by a per-tensor
fake-quantized kernel (per-channel fails to convert for matmuls), add the
bias, apply the activation, fake-quantize the output once, and only then
restore the shape: a reshape between two fake-quants breaks the converter's
same-scale rule.

Example:
>>> import keras, numpy as np
>>> from mmkeras.quantization.quantized_layer import QuantizerSettings, convert_layer
>>> dense = keras.layers.Dense(4)
>>> dense.build((None, 5, 3))
>>> dense = convert_layer(dense, QuantizedDense, QuantizerSettings())
>>> tuple(dense(np.ones((2, 5, 3), "float32"), training=True).shape)
(2, 5, 4)
"""

import math
import re

import keras
from keras import ops

from mmkeras.errors import UserError
from mmkeras.quantization.fake_quant import fake_quant_weights


def quantized_matmul(layer, inputs, kernel, bias, contracted_rank, output_tail):
    """`layer.output_quantizer(activation(flat(inputs) @ kernel + bias))`, reshaped to `output_tail`.

    Args:
        layer: the quantized layer (its `activation`, `output_quantizer`, `weight_bits`).
        inputs: [..., *contracted dims] input.
        kernel: [prod(contracted dims), prod(output_tail)] float kernel.
        bias: [prod(output_tail)] bias or `None`.
        contracted_rank: how many trailing input dims the kernel contracts.
        output_tail: the output's trailing dims (replacing the contracted ones).
    """
    # The batch (first) dim becomes -1; other dims stay static where they are known.
    leading = [-1] + [
        size if size is not None else ops.shape(inputs)[index]
        for index, size in enumerate(inputs.shape[1:-contracted_rank], start=1)
    ]
    flat = inputs if len(inputs.shape) == 2 else ops.reshape(inputs, (-1, kernel.shape[0]))
    outputs = ops.matmul(flat, fake_quant_weights(kernel, num_bits=layer.weight_bits))
    if bias is not None:
        outputs = ops.add(outputs, bias)
    if layer.activation is not None:
        outputs = layer.activation(outputs)
    outputs = layer.output_quantizer(outputs)
    if len(inputs.shape) == 2 and len(output_tail) == 1:
        return outputs
    return ops.reshape(outputs, leading + output_tail)


@keras.saving.register_keras_serializable(package="mmkeras")
class QuantizedDense(keras.layers.Dense):
    """A Dense layer with a fake-quantized kernel and output (made by `convert_layer`).

    Args: as `keras.layers.Dense`; `convert_layer` adds `output_quantizer`.

    Example:
    >>> from mmkeras.quantization.quantized_layer import QuantizerSettings, convert_layer
    >>> dense = keras.layers.Dense(2)
    >>> dense.build((None, 3))
    >>> convert_layer(dense, QuantizedDense, QuantizerSettings()).units
    2
    """

    def call(self, inputs, training=None):
        return quantized_matmul(self, inputs, self.kernel, self.bias, 1, [self.units])


@keras.saving.register_keras_serializable(package="mmkeras")
class QuantizedEinsumDense(keras.layers.EinsumDense):
    """An EinsumDense written as a fake-quantized 2-D matmul (made by `convert_layer`).

    Only equations of the matmul form are supported: the input's trailing axes
    are contracted with the kernel's leading axes in order, the output is the
    input's free axes then the kernel's free axes (MultiHeadAttention's
    projections, `abc,cde->abde` and `abcd,cde->abe`), and the bias lies on
    the kernel's free axes. `check_equation` refuses other forms.

    Example:
    >>> QuantizedEinsumDense.check_equation("abc,cde->abde", "de")
    1
    """

    @staticmethod
    def check_equation(equation, bias_axes):
        """The number of contracted axes; `UserError` when the equation is not a plain matmul."""
        match = re.fullmatch(r"([a-z]+),([a-z]+)->([a-z]+)", equation.replace(" ", ""))
        if match:
            source, kernel, output = match.groups()
            contracted = [axis for axis in source if axis in kernel]
            count = len(contracted)
            if (
                count
                and source[-count:] == kernel[:count] == "".join(contracted)
                and output == source[:-count] + kernel[count:]
                and set(bias_axes or "") <= set(kernel[count:])
            ):
                return count
        raise UserError(
            f"cannot quantize EinsumDense with equation {equation!r} (bias axes {bias_axes!r}): "
            "only matmul-like equations are supported"
        )

    def call(self, inputs, training=None):
        contracted_rank = self.check_equation(self.equation, self.bias_axes)
        kernel_shape = tuple(self.kernel.shape)
        contracted_size = math.prod(kernel_shape[:contracted_rank])
        output_tail = list(kernel_shape[contracted_rank:])
        kernel = ops.reshape(self.kernel, (contracted_size, -1))
        bias = None
        if self.bias is not None:
            bias = ops.reshape(ops.broadcast_to(self.bias, output_tail), (-1,))
        return quantized_matmul(self, inputs, kernel, bias, contracted_rank, output_tail)
