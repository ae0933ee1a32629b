"""Load and run LiteRT (.tflite) models without TensorFlow.

The interpreter comes from the first package that is installed:
`ai_edge_litert` (the maintained LiteRT runtime), then `tflite_runtime` (its
predecessor, frozen at 2.14), then TensorFlow's own copy (only when neither is
there). All three are the same `interpreter.py` with one API.

`LiteRTModel` calls a model by input *names* (the signature's names, never
tensor positions) one example at a time, and converts quantized integer inputs
and outputs to and from float, so callers always see float logits.
`list_ops` lists a model's ops with their tensor dtypes, for conversion reports.

Example:
>>> model = LiteRTModel("bundles/demo/model.tflite")  # doctest: +SKIP
>>> model({"image": images, ...}).shape  # doctest: +SKIP
(8, 6)
"""

import dataclasses
import importlib
import logging
import os
from pathlib import Path
from types import ModuleType

import numpy as np

from mmkeras import compat
from mmkeras.framework_logs import native_stderr_silenced

logger = logging.getLogger("mmkeras")

# Modules that provide `Interpreter` and `OpResolverType`, most preferred first.
INTERPRETER_MODULES = (
    "ai_edge_litert.interpreter",
    "tflite_runtime.interpreter",
    "tensorflow.lite.python.interpreter",
)


def interpreter_module() -> ModuleType:
    """The first installed module of `INTERPRETER_MODULES`."""
    for name in INTERPRETER_MODULES:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError("no LiteRT interpreter found: pip install ai-edge-litert")


def usable_threads(requested: int | None) -> int | None:
    """`requested` interpreter threads, capped to this machine's CPUs (more only oversubscribe and can crash).

    Example:
    >>> usable_threads(None) is None, usable_threads(1)
    (True, 1)
    """
    if requested is None:
        return None
    if requested < 1:
        raise ValueError(f"num_threads must be at least 1, got {requested}")
    available = os.cpu_count() or 1
    if requested > available:
        logger.warning("%d threads requested; this machine has %d CPUs, using %d", requested, available, available)
    return min(requested, available)


def load_interpreter(model: str | Path | bytes, *, num_threads: int | None = None, default_delegates: bool = True):
    """An interpreter for a .tflite file path or the model's bytes, tensors not yet allocated.

    Args:
        model: a .tflite path, or the flatbuffer bytes.
        num_threads: CPU threads for the kernels (capped to the CPUs, `usable_threads`);
            `None` lets the runtime pick.
        default_delegates: apply the default delegate (XNNPACK on CPU). Off,
            every op stays a builtin kernel, which is what op listings need
            (a delegate replaces the ops it runs by one `DELEGATE` node).
    """
    module = interpreter_module()
    resolvers = module.OpResolverType
    resolver = resolvers.AUTO if default_delegates else resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    source = {"model_content": bytes(model)} if isinstance(model, (bytes, bytearray)) else {"model_path": str(model)}
    return module.Interpreter(
        **source, num_threads=usable_threads(num_threads), experimental_op_resolver_type=resolver
    )


@dataclasses.dataclass(frozen=True)
class OpDetails:
    """One op of a LiteRT model.

    Args:
        index: the op's position in the execution plan.
        name: the builtin op name (`FULLY_CONNECTED`), or the custom code for
            custom and Flex ops (`FlexCumprod`).
        input_dtypes: numpy dtype names of the op's input tensors.
        output_dtypes: numpy dtype names of the op's output tensors.
    """

    index: int
    name: str
    input_dtypes: tuple[str, ...]
    output_dtypes: tuple[str, ...]


def list_ops(model: str | Path | bytes) -> list[OpDetails]:
    """Every op of the model's main graph, in execution order, with tensor dtypes.

    Works for models whose custom or Flex ops this runtime cannot run: the ops
    are listed without allocating tensors.

    Example:
    >>> [op.name for op in list_ops("model.tflite")][:2]  # doctest: +SKIP
    ['CONV_2D', 'MEAN']
    """
    interpreter = load_interpreter(model, default_delegates=False)
    return [
        OpDetails(
            index=details["index"],
            name=details["op_name"],
            input_dtypes=tuple(np.dtype(dtype).name for dtype in details["operand_types"]),
            output_dtypes=tuple(np.dtype(dtype).name for dtype in details["result_types"]),
        )
        for details in compat.litert_ops_details(interpreter)
    ]


class LiteRTModel:
    """A single-output LiteRT model called with a dict of named input batches.

    The model may have a static batch of 1: a batch is run one example at a
    time. Float values given for quantized integer inputs are quantized with
    the tensor's scale and zero point, and a quantized output is dequantized.

    Args:
        model: a .tflite path, or the flatbuffer bytes.
        num_threads: CPU threads for the kernels; `None` lets the runtime pick.
        default_delegates: apply the default delegate (XNNPACK on CPU); off,
            LiteRT's builtin kernels run every op (benchmarks compare both).

    Example:
    >>> model = LiteRTModel("model.tflite", num_threads=2)  # doctest: +SKIP
    >>> logits = model({"token_ids": ids, "padding_mask": mask, "image": images,
    ...                 "modality_mask": modality})  # doctest: +SKIP
    """

    def __init__(self, model: str | Path | bytes, *, num_threads: int | None = None, default_delegates: bool = True):
        num_threads = usable_threads(num_threads)  # here, so that its warning is not silenced below
        # The XNNPACK delegate announces itself on stderr from C++ when it is applied.
        with native_stderr_silenced():
            self.interpreter = load_interpreter(model, num_threads=num_threads, default_delegates=default_delegates)
            self.interpreter.allocate_tensors()
        self.input_details, output_details = signature_details(self.interpreter)
        if len(output_details) != 1:
            raise ValueError(f"expected a model with one output, got {sorted(output_details)}")
        [(self.output_name, self.output_details)] = output_details.items()

    @property
    def input_names(self) -> list[str]:
        return list(self.input_details)

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Run every example of the batch; returns the float outputs stacked, batch first."""
        missing = sorted(set(self.input_details) - set(inputs))
        if missing:
            raise ValueError(f"missing model input(s) {', '.join(missing)}; the model takes {self.input_names}")
        batch = {name: np.asarray(inputs[name]) for name in self.input_details}
        sizes = {len(value) for value in batch.values()}
        if len(sizes) != 1:
            raise ValueError(f"inputs have different batch sizes: { {n: len(v) for n, v in batch.items()} }")
        return np.concatenate([self._invoke({n: v[i : i + 1] for n, v in batch.items()}) for i in range(sizes.pop())])

    def _invoke(self, example: dict[str, np.ndarray]) -> np.ndarray:
        for name, value in example.items():
            details = self.input_details[name]
            expected = tuple(details["shape"])
            if value.shape != expected:
                raise ValueError(f"input {name!r} has shape {value.shape[1:]}, the model takes {expected[1:]}")
            self.interpreter.set_tensor(details["index"], quantize(value, details))
        self.interpreter.invoke()
        return dequantize(self.interpreter.get_tensor(self.output_details["index"]), self.output_details)


def signature_details(interpreter) -> tuple[dict[str, dict], dict[str, dict]]:
    """Input and output tensor details by signature name, for the model's only signature."""
    # A live SignatureRunner holds a reference that makes `invoke` refuse to
    # run, so it is dropped as soon as the details are read.
    runner = interpreter.get_signature_runner()
    return runner.get_input_details(), runner.get_output_details()


def quantize(value: np.ndarray, details: dict) -> np.ndarray:
    """`value` in the tensor's dtype: float values for a quantized integer tensor are quantized."""
    scale, zero_point = details["quantization"]
    dtype = np.dtype(details["dtype"])
    if scale and dtype.kind in "iu" and value.dtype.kind == "f":
        limits = np.iinfo(dtype)
        return np.clip(np.round(value / scale) + zero_point, limits.min, limits.max).astype(dtype)
    return value.astype(dtype, copy=False)


def dequantize(value: np.ndarray, details: dict) -> np.ndarray:
    """A tensor's value as float32, undoing its quantization if it has any."""
    scale, zero_point = details["quantization"]
    if scale and value.dtype.kind in "iu":
        return ((value.astype(np.float32) - zero_point) * scale).astype(np.float32)
    return value.astype(np.float32, copy=False)
