"""`check_integer_only`: refuse an `--integer-only` model in which an op still produces float32.

Integer-only accelerators (Edge TPU, Arm Ethos-U, many phone NPUs) run a
model only when every op is integer. `export --integer-only` traces the
model with integer-friendly layer norms and masked softmaxes
(`mmkeras.export.integer_only_graph`), converts with only
`TFLITE_BUILTINS_INT8` and uint8 input and output tensors
(`convert_model(integer_only=True)`), and then refuses, before writing
anything, a model in which some op still has a float32 output: the
converter does not enforce the op set, it leaves an op it cannot quantize
float between DEQUANTIZE and QUANTIZE. DEQUANTIZE counts too: with integer
inputs and outputs every one of them feeds a float op.

Example:
>>> check_integer_only(tflite_bytes)  # doctest: +SKIP
Traceback (most recent call last):
FloatOpsError: --integer-only: ops still produce float32: NEG x7 (in text_backbone/..., ...), ...
"""

import collections

import numpy as np

from mmkeras import compat
from mmkeras.errors import UserError
from mmkeras.runtime.interpreter import load_interpreter

# Layers named per op type in the refusal; the count says how many ops there are.
LAYERS_NAMED = 2


class FloatOpsError(UserError):
    """An `--integer-only` export whose model keeps float ops.

    Args:
        float_ops: `{op type: [layer of each op]}` of the ops with a float32 output.
    """

    def __init__(self, float_ops: dict[str, list[str]]):
        self.float_ops = float_ops
        listed = ", ".join(
            f"{name} x{len(layers)} ({', '.join(place(layer) for layer in sorted(set(layers))[:LAYERS_NAMED])}"
            f"{', ...' if len(set(layers)) > LAYERS_NAMED else ''})"
            for name, layers in float_ops.items()
        )
        super().__init__(
            f"--integer-only: ops still produce float32: {listed}; nothing written. The converter has no int8 "
            "kernel for them as the model computes them: replace those layers, or export without --integer-only "
            "(the default int8 keeps such ops float)"
        )


def place(layer: str) -> str:
    """Where an op is, in words: `in fusion/text_norm`, or `after logits` (`op_layer`)."""
    return layer if layer.startswith("after ") else f"in {layer}"


def float_ops(tflite_model: bytes) -> dict[str, list[str]]:
    """`{op type: [layer of each op]}` of the ops whose output is float32, most frequent type first.

    The layer is read from the op's output tensor name, without the model's
    outer name and the op's own name (`text_backbone/transformer_layer_0/...`).
    A tensor the converter named itself (`tfl.dequantize`, a signature output)
    names no layer: then the op is placed `after` the nearest layer upstream.

    Example:
    >>> float_ops(tflite_bytes)  # doctest: +SKIP
    {'NEG': ['text_backbone/embeddings_layer_norm', ...], 'SIN': ['after mmkeras_classifier/logits']}
    """
    interpreter = load_interpreter(tflite_model, default_delegates=False)
    tensors = {details["index"]: details for details in interpreter.get_tensor_details()}
    ops = compat.litert_ops_details(interpreter)
    producers = {index: op for op in ops for index in op["outputs"] if index >= 0}
    found = collections.defaultdict(list)
    for op in ops:
        outputs = [tensors[index] for index in op["outputs"] if index >= 0]
        if any(np.dtype(tensor["dtype"]) == np.float32 for tensor in outputs):
            found[op["op_name"]].append(op_layer(op, tensors, producers))
    return dict(sorted(found.items(), key=lambda item: -len(item[1])))


def op_layer(op: dict, tensors: dict, producers: dict, steps: int = 4) -> str:
    """The layer an op belongs to (its output's name), else `after` the nearest layer upstream within `steps` ops."""
    name = tensors[op["outputs"][0]]["name"]
    if layer_of_tensor(name) != name:
        return layer_of_tensor(name)
    pending, seen = [op], set()
    for _ in range(steps):
        inputs = [index for current in pending for index in current["inputs"] if index >= 0 and index not in seen]
        seen.update(inputs)
        for index in inputs:
            if layer_of_tensor(tensors[index]["name"]) != tensors[index]["name"]:
                return f"after {layer_of_tensor(tensors[index]['name'])}"
        pending = [producers[index] for index in inputs if index in producers]
    return name


def layer_of_tensor(name: str) -> str:
    """The Keras layer path in a converted tensor's name (`model_1/fusion_1/Cast` -> `fusion`), else the name.

    Example:
    >>> layer_of_tensor("mmkeras_classifier_1/text_backbone_1/transformer_layer_0_1/self_attention_layer_norm_1/Neg")
    'text_backbone/transformer_layer_0/self_attention_layer_norm'
    >>> layer_of_tensor("serving_default_image:0")
    'serving_default_image:0'
    """
    parts = name.split(";")[0].split("/")
    if len(parts) < 3:
        return name
    return "/".join(part.removesuffix("_1") for part in parts[1:-1])


def check_integer_only(tflite_model: bytes):
    """Raise `FloatOpsError` unless every op of `tflite_model` has integer (or bool) outputs."""
    remaining = float_ops(tflite_model)
    if remaining:
        raise FloatOpsError(remaining)
