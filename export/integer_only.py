"""`check_integer_only`: refuse an int8 model that is not integer-only (`export --integer-only`).

Integer-only accelerators (Edge TPU, Arm Ethos-U, many phone NPUs) run a
model only when every op is int8. `export --integer-only` converts without
`FLOAT_OPS_IN_INT8` (every op the converter can quantize is quantized) and
then refuses, before writing anything, a model in which ops still produce
float32, naming them by type. The DEQUANTIZE ops that turn int8 tensors back
into float are not counted: they mark the float ops' inputs and the float
scores output (integer input and output tensors are not made yet:
docs/quantization.md#integer-only-export).

Example:
>>> check_integer_only(tflite_bytes)  # doctest: +SKIP
Traceback (most recent call last):
FloatOpsError: --integer-only: the int8 model still has float ops: SELECT_V2 x2 (...)
"""

import collections

from mmkeras.errors import UserError
from mmkeras.runtime.interpreter import list_ops


class FloatOpsError(UserError):
    """An `--integer-only` export whose model keeps float ops.

    Args:
        float_ops: `{op type: count}` of the ops with a float32 output.
    """

    def __init__(self, float_ops: dict[str, int]):
        self.float_ops = float_ops
        listed = ", ".join(f"{name} x{count}" for name, count in float_ops.items())
        super().__init__(
            f"--integer-only: the int8 model still has float ops: {listed} "
            "(not every op mmkeras models use converts to int8 yet); nothing written; "
            "export without --integer-only keeps them float"
        )


def float_ops(tflite_model: bytes) -> dict[str, int]:
    """`{op type: count}` of the ops whose output is float32, DEQUANTIZE aside, most frequent first."""
    counts = collections.Counter(
        op.name for op in list_ops(tflite_model) if op.name != "DEQUANTIZE" and "float32" in op.output_dtypes
    )
    return dict(counts.most_common())


def check_integer_only(tflite_model: bytes):
    """Raise `FloatOpsError` unless every op of `tflite_model` (DEQUANTIZE aside) has integer outputs."""
    remaining = float_ops(tflite_model)
    if remaining:
        raise FloatOpsError(remaining)
