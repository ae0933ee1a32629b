"""The masked softmax's fill margin of `export --integer-only`: float logits moved, and int8 parity, per margin.

For each margin, masked attention scores are set to `min(scores) - margin`
while the model is traced (`mmkeras.export.integer_only_graph.MASK_MARGIN`):
the float model's logits under that tracing against Keras' own (how far the
float results move), and the integer-only conversion against Keras (max
logit error, label agreement), on the run's validation rows (else its
training rows). Prints one JSON object on stdout (progress on stderr).

    python benchmarks/integer_only_mask_margin.py --run runs/samples --margins 8,16,32,104
"""

import argparse
import json
import logging
import sys

import keras
import numpy as np

from mmkeras.export import integer_only_graph
from mmkeras.export.litert_conversion import CALIBRATION_ROWS, convert_model, manifest_inputs
from mmkeras.quantization.run_loading import load_run
from mmkeras.runtime.interpreter import LiteRTModel

# Rows per eager Keras call.
BATCH = 50


def keras_logits(model, inputs: dict[str, np.ndarray]) -> np.ndarray:
    rows = len(inputs["image"])
    return np.concatenate([
        keras.ops.convert_to_numpy(model({name: value[start : start + BATCH] for name, value in inputs.items()},
                                         training=False))
        for start in range(0, rows, BATCH)
    ])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a run folder")
    parser.add_argument("--margins", default="8,16,32,104", help="comma-separated margins")
    parser.add_argument("--rows", type=int, default=256, help="validation rows compared")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    run = load_run(args.run)
    compared = manifest_inputs(run, run.config.val or run.config.data, args.rows)
    calibration = manifest_inputs(run, run.config.data, CALIBRATION_ROWS)
    reference = keras_logits(run.model, compared)
    result = {"run": str(args.run), "rows": len(reference), "margins": []}
    for margin in (float(value) for value in args.margins.split(",")):
        integer_only_graph.MASK_MARGIN = margin  # read by the traced masked softmax at each call
        with integer_only_graph.integer_only_tracing():
            traced = keras_logits(run.model, compared)
        tflite_model = convert_model(run.model, quantize="int8", representative_inputs=[calibration],
                                     keep_float=(), integer_only=True)
        converted = LiteRTModel(tflite_model)(compared)
        result["margins"].append({
            "margin": margin,
            "float_max_logit_diff": float(np.abs(traced - reference).max()),
            "integer_only_max_logit_diff": float(np.abs(converted - reference).max()),
            "integer_only_label_agreement": float(np.mean(converted.argmax(1) == reference.argmax(1))),
        })
        logging.info("margin %g done", margin)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
