"""Which op types should run in int8? A per-op-type latency profile of float vs int8, by ablation.

LiteRT's Python interpreter has no per-op profiler, so the time an op type
costs in int8 is measured by leaving it float: for every op type that the
int8 model quantizes, the run is converted again with that type on the
QuantizationDebugger denylist, and all these models are timed interleaved
with the float32 model (batch 1, XNNPACK, 1 thread). Then, greedily, the type
whose float copy saves the most is kept float until int8 is no slower than
float32 or nothing helps any more. Prints one JSON object: the float and full
int8 latency, each op type's saving (`split_ms`: full int8 minus int8 with that
type float; positive = the type is slower in int8), the chosen float types, the
final latency and the label agreement with float32 on the run's manifest rows.

    python benchmarks/qat_int8.py --edge --workdir /tmp/edge      # makes /tmp/edge/float_run
    python benchmarks/int8_op_profile.py --run /tmp/edge/float_run --workdir /tmp/edge-profile
"""

import argparse
import collections
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from mmkeras.export.litert_conversion import CALIBRATION_ROWS, FLOAT_OPS_IN_INT8, convert_model, manifest_inputs
from mmkeras.quantization.run_loading import load_run
from mmkeras.runtime.interpreter import LiteRTModel, list_ops

# Op types that are data movement or quantization bookkeeping: keeping them float decides nothing.
NOT_CANDIDATES = {"QUANTIZE", "DEQUANTIZE", "RESHAPE", "GATHER", "CONCATENATION", "PACK", "SHAPE", "STRIDED_SLICE"}


def timed_p50(models: dict[str, LiteRTModel], inputs: dict, runs: int) -> dict[str, float]:
    """p50 latency (ms) of each model, run i of every model before run i + 1 of any."""
    samples = collections.defaultdict(list)
    for round_number in range(runs + 5):
        for name, model in models.items():
            started = time.perf_counter()
            model(inputs)
            if round_number >= 5:
                samples[name].append((time.perf_counter() - started) * 1000.0)
    return {name: float(np.median(values)) for name, values in samples.items()}


def int8_model(run, sample, keep_float: tuple[str, ...]) -> bytes:
    """The PTQ int8 conversion with `keep_float` op types (and mmkeras' own float ops) left float."""
    return convert_model(
        run.model, quantize="int8", representative_inputs=[sample], keep_float=(*FLOAT_OPS_IN_INT8, *keep_float)
    )


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a float run folder (with its training manifest)")
    parser.add_argument("--workdir", type=Path, required=True, help="where the .tflite models are kept")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per latency figure")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    args.workdir.mkdir(parents=True, exist_ok=True)
    run = load_run(args.run)
    sample = manifest_inputs(run, run.config.data, CALIBRATION_ROWS)
    example = {name: value[:1] for name, value in sample.items()}
    models = {"float32": convert_model(run.model), "int8": int8_model(run, sample, ())}
    candidates = sorted(
        {op.name for op in list_ops(models["int8"]) if "int8" in op.output_dtypes} - NOT_CANDIDATES
    )
    for op_type in candidates:
        logging.info("int8 with %s float", op_type)
        models[f"int8-{op_type}-float"] = int8_model(run, sample, (op_type,))
    for name, content in models.items():
        (args.workdir / f"{name}.tflite").write_bytes(content)
    interpreters = {name: LiteRTModel(content, num_threads=1) for name, content in models.items()}
    latency = timed_p50(interpreters, example, args.runs)
    split = {op_type: latency["int8"] - latency[f"int8-{op_type}-float"] for op_type in candidates}
    kept_float, current = [], latency["int8"]
    for op_type in sorted(split, key=split.get, reverse=True):
        if current <= latency["float32"] or split[op_type] <= 0:
            break
        trial = int8_model(run, sample, (*kept_float, op_type))
        trial_latency = timed_p50({"float32": interpreters["float32"], "trial": LiteRTModel(trial, num_threads=1)},
                                  example, args.runs)
        latency["float32"] = trial_latency["float32"]  # the machine's state now, for a fair comparison
        if trial_latency["trial"] < current:
            kept_float.append(op_type)
            current = trial_latency["trial"]
            models["selective"] = trial
    selective = models.get("selective", models["int8"])
    float_logits = interpreters["float32"](sample)
    selective_logits = LiteRTModel(selective, num_threads=1)(sample)
    result = {
        "op_types_int8": candidates,
        "p50_ms": {"float32": latency["float32"], "int8": latency["int8"], "selective-int8": current},
        "split_ms": {op_type: round(saving, 4) for op_type, saving in sorted(split.items(), key=lambda x: -x[1])},
        "kept_float": kept_float,
        "selective_vs_float": current / latency["float32"],
        "selective_size_bytes": len(selective),
        "float32_size_bytes": len(models["float32"]),
        "label_agreement_with_float32": float(np.mean(selective_logits.argmax(1) == float_logits.argmax(1))),
        "rows": len(sample["image"]),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
