"""`float_grouped_convolutions`: store the int8 weights of hybrid grouped convolutions as float32 again.

A dynamic-range (`dynamic`) export gives every large matmul and convolution
int8 weights on float activations ("hybrid" ops). XNNPACK runs hybrid
FULLY_CONNECTED and ordinary hybrid CONV_2D, but not a hybrid *grouped*
CONV_2D (fewer weight input channels than input channels; keras-hub's
MobileNet writes its 5x5 depthwise stages that way): those fall back to the
builtin hybrid kernel and split XNNPACK's graph. On the edge-sized model
(`benchmarks/qat_int8.py --edge`, 1 thread) the dynamic bundle was 2.1-4x the
float32 latency; with its 8 grouped convolutions' weights back in float32 it
was 0.83x (and 0.83x with every convolution's), while float 1x1 convolutions
alone left it at 2.1x. The converter has no per-op choice for dynamic-range
quantization, so the exporter rewrites the converted flatbuffer: each such
int8 weight tensor becomes the float32 tensor it stands for (the int8 values
times their per-channel scales).

Example:
>>> model = float_grouped_convolutions(dynamic_model_bytes)  # doctest: +SKIP
"""

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from mmkeras.runtime.bundle import TFLITE_IDENTIFIER


def float_grouped_convolutions(tflite_model: bytes) -> bytes:
    """The model with the int8 weights of its hybrid grouped CONV_2D ops stored as float32.

    Args:
        tflite_model: a converted model (flatbuffer bytes).

    Returns:
        The rewritten model; the same bytes when it has no such op.
    """
    model = schema.ModelT.InitFromPackedBuf(tflite_model, 0)
    changed = False
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            # Op codes above 127 only fit the newer field; the older one holds a placeholder then.
            if max(code.builtinCode, code.deprecatedBuiltinCode) != schema.BuiltinOperator.CONV_2D:
                continue
            activations, weights = (subgraph.tensors[index] for index in op.inputs[:2])
            hybrid = activations.type == schema.TensorType.FLOAT32 and weights.type == schema.TensorType.INT8
            # Weights [output channels, height, width, input channels per group].
            if hybrid and weights.shape[-1] != activations.shape[-1]:
                store_as_float(model.buffers[weights.buffer], weights)
                changed = True
    if not changed:
        return tflite_model
    builder = flatbuffers.Builder(len(tflite_model))
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def store_as_float(buffer, tensor):
    """Replace an int8 weight tensor (per-tensor or per-channel scales, zero points 0) by its float32 values."""
    quantization = tensor.quantization
    values = np.frombuffer(bytes(buffer.data), np.int8).reshape(tensor.shape).astype(np.float32)
    scales = np.asarray(quantization.scale, np.float32)
    if scales.size > 1:
        shape = [1] * values.ndim
        shape[quantization.quantizedDimension] = -1
        scales = scales.reshape(shape)
    buffer.data = np.frombuffer((values * scales).astype(np.float32).tobytes(), np.uint8)
    tensor.type = schema.TensorType.FLOAT32
    tensor.quantization = None
