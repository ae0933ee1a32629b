"""Every export mode of one run, side by side in one process: accuracy, agreement with Keras, size, latency.

Prints one JSON object on stdout (progress on stderr). Uses only the public
API (`export_bundle`, `evaluate`, `benchmark_bundle`), like a user would.

    python benchmarks/export_modes.py --run runs/samples --test samples/test.csv
"""

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

from mmkeras.evaluation.evaluate import evaluate
from mmkeras.export.converter import export_bundle
from mmkeras.runtime.benchmark import benchmark_bundle
from mmkeras.runtime.bundle import QUANTIZATION_MODES

# `export --quantize int8 --integer-only`: every op int8, uint8 image and logits.
INTEGER_ONLY_MODE = "int8_integer_only"
MODES = (*QUANTIZATION_MODES, INTEGER_ONLY_MODE)


def measure_mode(run: Path, test: Path, bundle: Path, mode: str, runs: int) -> dict:
    integer_only = mode == INTEGER_ONLY_MODE
    report = export_bundle(run, bundle, quantize="int8" if integer_only else mode, integer_only=integer_only)
    figures = evaluate(bundle, test)
    return {
        "size_bytes": report["size_bytes"],
        "compute_ops": report["ops"]["compute_ops"],
        "float_ops": report["ops"]["float_ops"],
        "op_output_dtypes": report["ops"]["by_output_dtype"],
        "parity_vs_keras": report.get("parity"),
        "test_accuracy": figures["accuracy"],
        "test_macro_f1": figures["macro_f1"],
        "latency_p50_ms": {
            threads: benchmark_bundle(bundle, threads=threads, runs=runs)["latency_ms"]["p50"] for threads in (1, 2)
        },
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a run folder")
    parser.add_argument("--test", type=Path, required=True, help="a labelled test manifest")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per latency figure")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    keras_figures = evaluate(args.run, args.test)
    result = {"run": str(args.run), "test": str(args.test), "keras_test_accuracy": keras_figures["accuracy"]}
    with tempfile.TemporaryDirectory() as workdir:
        for mode in MODES:
            logging.info("export mode %s", mode)
            result[mode] = measure_mode(args.run, args.test, Path(workdir) / mode, mode, args.runs)
    float_size = result["none"]["size_bytes"]
    for mode in MODES:
        result[mode]["size_vs_float32"] = round(result[mode]["size_bytes"] / float_size, 3)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
