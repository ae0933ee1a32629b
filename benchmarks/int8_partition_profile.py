"""How XNNPACK partitions each int8 graph: partitions, delegated ops, QUANTIZE/DEQUANTIZE, ops left out, latency.

For a float run (and optionally its QAT run) the script converts float32 and
int8 in each of `VARIANTS`: the default export (`FLOAT_OPS_IN_INT8` kept
float, and each layer norm's `variance + epsilon` ADD and RSQRT:
`litert_conversion.layer_norm_tail_names`); `-norm-tail-int8`, the default
before those two went float (XNNPACK takes neither in int8); `-traced`, the
model traced with `integer_only_graph`'s layer norm and bounded-fill masked
softmax (`INT8_TRACED_FLOAT_OPS` kept float: the mask path's SELECT_V2 /
TRANSPOSE no longer need to be); `-traced-arith-mask`, the same with the mask
applied by MUL / ADD (XNNPACK has no SELECT_V2 kernel, float or int8). The
last three are comparisons here, in no export. Plus any
`--model NAME=PATH` (.tflite or bundle folder); `--convert-none` times only
those (the run gives the input).
For each model it prints: XNNPACK partition count, delegated ops out of all
ops, QUANTIZE and DEQUANTIZE counts, the op types XNNPACK left to the builtin
kernels, the size, and p50 latency at 1 and 2 threads, measured interleaved
(run i of every model before run i + 1 of any) in `--rounds` rounds, with its
ratio to float32. The model timed right after float32 runs with the cache
its 18.6 MB of weights left: on the AMD EPYC two int8 graphs' order changed
their ratio by ~4% (`--convert-none` with the `--model` order swapped checks
it). One JSON object on stdout, progress on stderr.

The partitions are read from the delegated interpreter, not from a log: the
delegate's "Replacing N out of M node(s) ... yielding K partitions" line is a
`TFLITE_LOG` (debug builds only on non-Android) and ai-edge-litert's release
build never prints it (fd 2 shows only "Created TensorFlow Lite XNNPACK
delegate", whatever TF_CPP_MIN_LOG_LEVEL says). After the delegate is applied
the interpreter lists one DELEGATE node per partition after the model's own
ops; a partition's ops are those reached backwards from its outputs without
crossing its inputs.

    python benchmarks/qat_int8.py --edge --workdir /tmp/edge      # makes float_run and qat_run
    python benchmarks/int8_partition_profile.py --run /tmp/edge/float_run --qat-run /tmp/edge/qat_run
"""

import argparse
import collections
import contextlib
import json
import logging
import statistics
import sys
from pathlib import Path
from unittest import mock

import keras
from keras import ops

from mmkeras import compat
from mmkeras.export import integer_only_graph, litert_conversion
from mmkeras.export.integer_only_graph import integer_only_tracing
from mmkeras.export.litert_conversion import (
    CALIBRATION_ROWS,
    FLOAT_OPS_IN_INT8,
    convert_model,
    manifest_inputs,
)
from mmkeras.quantization.run_loading import load_run
from mmkeras.runtime.interpreter import LiteRTModel, list_ops, load_interpreter

sys.path.insert(0, str(Path(__file__).parent))
from int8_op_profile import timed_p50  # noqa: E402

THREADS = (1, 2)
DELEGATE = "DELEGATE"
# The traced variants' float set: the bounded mask fill keeps the scores' int8 scale sane, so the mask's path
# (SELECT_V2, TRANSPOSE) may be int8, and the traced layer norm has no SQUARED_DIFFERENCE left to keep.
INT8_TRACED_FLOAT_OPS = tuple(op for op in FLOAT_OPS_IN_INT8 if op not in ("SELECT_V2", "TRANSPOSE"))


def softmax_with_arithmetic_mask(layer: keras.layers.Softmax, inputs, mask=None):
    """The bounded-fill masked softmax with the mask applied by MUL / ADD instead of SELECT_V2 (no XNNPACK kernel)."""
    keras_softmax = integer_only_graph._KERAS_METHODS[keras.layers.Softmax, "call"]
    if mask is None:
        return keras_softmax(layer, inputs)
    keep = ops.cast(mask, inputs.dtype)
    fill = ops.min(inputs, axis=layer.axis, keepdims=True) - integer_only_graph.MASK_MARGIN
    return keras_softmax(layer, fill + (inputs - fill) * keep) * keep


@contextlib.contextmanager
def arithmetic_mask_tracing():
    """`integer_only_tracing` with `softmax_with_arithmetic_mask` as the masked softmax (an experiment only)."""
    key = keras.layers.Softmax, "call"
    bounded_fill = integer_only_graph._REPLACEMENTS[key]
    integer_only_graph._REPLACEMENTS[key] = softmax_with_arithmetic_mask
    try:
        with integer_only_tracing():
            yield
    finally:
        integer_only_graph._REPLACEMENTS[key] = bounded_fill


@contextlib.contextmanager
def layer_norm_tail_int8():
    """The default export before the layer norms' tail went float: `variance + epsilon` and RSQRT int8."""
    with mock.patch.object(litert_conversion, "layer_norm_tail_names", lambda tflite_model: []):
        yield


# The variants whose float32 graph differs from the default's (float32 itself: suffix "").
FLOAT_GRAPH_VARIANTS = ("", "-traced-arith-mask")
# Model name suffix -> (the tracing context, the op types kept float in int8).
VARIANTS = {
    "": (contextlib.nullcontext, FLOAT_OPS_IN_INT8),  # the default export
    "-traced": (integer_only_tracing, INT8_TRACED_FLOAT_OPS),
    "-traced-arith-mask": (arithmetic_mask_tracing, INT8_TRACED_FLOAT_OPS),
    "-norm-tail-int8": (layer_norm_tail_int8, FLOAT_OPS_IN_INT8),
}


def xnnpack_partitions(model: bytes) -> dict:
    """Partitions, delegated ops and the op types left to builtin kernels, from the delegated op graph."""
    interpreter = load_interpreter(model, num_threads=1)
    interpreter.allocate_tensors()
    graph = compat.litert_ops_details(interpreter)
    delegates = [op for op in graph if op["op_name"] == DELEGATE]
    own_ops = [op for op in graph if op["op_name"] != DELEGATE]
    producers = {index: op["index"] for op in own_ops for index in op["outputs"] if index >= 0}
    by_index = {op["index"]: op for op in own_ops}
    delegated = set()
    for delegate in delegates:
        boundary = set(delegate["inputs"])
        pending = [index for index in delegate["outputs"] if index in producers]
        while pending:
            op_index = producers[pending.pop()]
            if op_index in delegated:
                continue
            delegated.add(op_index)
            pending.extend(i for i in by_index[op_index]["inputs"] if i >= 0 and i not in boundary and i in producers)
    left_out = collections.Counter(op["op_name"] for op in own_ops if op["index"] not in delegated)
    return {
        "partitions": len(delegates),
        "delegated_ops": len(delegated),
        "ops": len(own_ops),
        "left_out": dict(left_out.most_common()),
    }


def graph_counts(model: bytes) -> dict:
    """QUANTIZE / DEQUANTIZE counts and the op types with a float32 output (the float islands)."""
    model_ops = list_ops(model)
    names = collections.Counter(op.name for op in model_ops)
    float_ops = collections.Counter(
        op.name for op in model_ops if "float32" in op.output_dtypes and op.name != "DEQUANTIZE"
    )
    return {
        "quantize": names["QUANTIZE"],
        "dequantize": names["DEQUANTIZE"],
        "float_op_types": dict(float_ops.most_common()),
    }


def interleaved_p50(models: dict[str, bytes], example: dict, runs: int, rounds: int) -> dict:
    """Median over rounds of each model's p50 (ms) at each thread count; each round alternates the models."""
    per_round = collections.defaultdict(list)
    for threads in THREADS:
        interpreters = {name: LiteRTModel(content, num_threads=threads) for name, content in models.items()}
        for _ in range(rounds):
            for name, p50 in timed_p50(interpreters, example, runs).items():
                per_round[name, threads].append(p50)
    return {key: statistics.median(values) for key, values in per_round.items()}


def run_models(run_dir: Path, prefix: str, convert: bool = True) -> tuple[dict[str, bytes], dict]:
    """A run's int8 conversions in each of `VARIANTS` (and its float32 ones for the float run), and one input."""
    run = load_run(run_dir)
    sample = manifest_inputs(run, run.config.data, CALIBRATION_ROWS)
    example = {name: value[:1] for name, value in sample.items()}
    models = {}
    if not convert:
        return models, example
    for suffix, (tracing, keep_float) in VARIANTS.items():
        if prefix == "ptq" and suffix in FLOAT_GRAPH_VARIANTS:
            logging.info("converting %s: float32%s", run_dir, suffix)
            with tracing():
                models[f"float32{suffix}"] = convert_model(run.model)
        logging.info("converting %s: %s-int8%s", run_dir, prefix, suffix)
        with tracing():
            models[f"{prefix}-int8{suffix}"] = convert_model(
                run.model, quantize="int8", representative_inputs=[sample], keep_float=keep_float
            )
    return models, example


def model_bytes(path: Path) -> bytes:
    return (path / "model.tflite" if path.is_dir() else path).read_bytes()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a float run folder (with its training manifest)")
    parser.add_argument("--qat-run", type=Path, help="its QAT run (mmkeras qat)")
    parser.add_argument("--model", action="append", default=[], help="NAME=PATH of another .tflite or bundle")
    parser.add_argument(
        "--convert-none", action="store_true", help="time only the --model files (one needs the name float32)"
    )
    parser.add_argument("--workdir", type=Path, help="keep the converted .tflite models here")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per model, thread count and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    models, example = run_models(args.run, "ptq", convert=not args.convert_none)
    if args.qat_run and not args.convert_none:
        models.update(run_models(args.qat_run, "qat")[0])
    for entry in args.model:
        name, _, path = entry.partition("=")
        models[name] = model_bytes(Path(path))
    if "float32" not in models:
        parser.error("--convert-none needs a --model float32=PATH to compare with")
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        for name, content in models.items():
            (args.workdir / f"{name}.tflite").write_bytes(content)
    logging.info("timing %d models, %d rounds", len(models), args.rounds)
    latency = interleaved_p50(models, example, args.runs, args.rounds)
    result = {"rounds": args.rounds, "runs": args.runs, "models": {}}
    for name, content in models.items():
        result["models"][name] = {
            "size_bytes": len(content),
            **xnnpack_partitions(content),
            **graph_counts(content),
            **{f"p50_ms_{t}t": round(latency[name, t], 4) for t in THREADS},
            **{f"vs_float32_{t}t": round(latency[name, t] / latency["float32", t], 3) for t in THREADS},
        }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
