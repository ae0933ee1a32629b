"""Post-training int8 accuracy of one run against its float Keras model, for several calibration row counts.

For each `--rows N`: calibrate on N rows of the run's training manifest (all
of them up to N, as `export --calibration-rows N`), convert with the export's
settings, and measure on `--test`: the int8 model's accuracy, the Keras
model's, their label agreement and the largest logit difference; also the
conversion time and the op types. Prints one JSON object on stdout.

    # a run of a real pretrained backbone on the photo task (benchmarks/photo_task.py)
    python benchmarks/ptq_calibration_rows.py --run runs/effnet --test /tmp/photo-task/test.csv --rows 200 600
"""

import argparse
import collections
import json
import time

import numpy as np

from mmkeras.export.converter import known_labels
from mmkeras.export.litert_conversion import (
    FLOAT_OPS_IN_INT8,
    convert_model,
    manifest_rows,
)
from mmkeras.quantization.run_loading import load_run
from mmkeras.runtime.interpreter import LiteRTModel, list_ops

KERAS_BATCH = 32


def labelled_inputs(run, path, max_rows):
    rows = manifest_rows(run, path, max_rows)
    return run.preprocessor([row.text for row in rows], [row.image for row in rows]), known_labels(run, rows)


def keras_logits(model, inputs):
    rows = len(inputs["image"])
    return np.concatenate([
        np.asarray(model({name: value[start : start + KERAS_BATCH] for name, value in inputs.items()}, training=False))
        for start in range(0, rows, KERAS_BATCH)
    ])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--rows", type=int, nargs="+", default=[200])
    args = parser.parse_args()
    run = load_run(args.run)
    test, labels = labelled_inputs(run, args.test, 100_000)
    expected = keras_logits(run.model, test)
    results = {"test_rows": len(labels), "keras_accuracy": float(np.mean(expected.argmax(1) == labels)), "int8": []}
    for rows in args.rows:
        calibration, _ = labelled_inputs(run, run.config.data, rows)
        started = time.perf_counter()
        tflite_model = convert_model(
            run.model, quantize="int8", representative_inputs=[calibration], keep_float=FLOAT_OPS_IN_INT8
        )
        seconds = time.perf_counter() - started
        actual = LiteRTModel(tflite_model)(test)
        results["int8"].append({
            "calibration_rows": len(calibration["image"]),
            "accuracy": float(np.mean(actual.argmax(1) == labels)),
            "label_agreement": float(np.mean(actual.argmax(1) == expected.argmax(1))),
            "max_abs_logit_diff": float(np.abs(actual - expected).max()),
            "convert_seconds": round(seconds, 1),
            "op_types": dict(collections.Counter(op.name for op in list_ops(tflite_model)).most_common()),
        })
    print(json.dumps(results))


if __name__ == "__main__":
    main()
