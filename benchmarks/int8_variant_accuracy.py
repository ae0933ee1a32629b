"""Test accuracy of the int8 export variants of `int8_partition_profile.py`, post-training and QAT, on one task.

For a float run and its QAT run (`mmkeras qat`), every variant of
`int8_partition_profile.VARIANTS` (the default int8 export, the model traced
with `integer_only_graph`'s layer norm and masked softmax, the same with an
arithmetic mask, the default before its layer norms' tail went float) is exported with `export_bundle` as a user's
`export --quantize int8` would be, the variant's tracing in place and its
float set in place of `FLOAT_OPS_IN_INT8`, and evaluated on the test
manifest. Prints one JSON object: the Keras accuracies, and per bundle the
test accuracy, the report's `kept_float` and its parity with Keras.

    python benchmarks/int8_variant_accuracy.py --run runs/samples --qat-run runs/samples-qat --test samples/test.csv
"""

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from unittest import mock

from mmkeras.evaluation.evaluate import evaluate
from mmkeras.export import converter

sys.path.insert(0, str(Path(__file__).parent))
from int8_partition_profile import VARIANTS  # noqa: E402


def variant_bundle_figures(run: Path, out: Path, test: Path, suffix: str) -> dict:
    """Export `run` as int8 in the variant `suffix` and evaluate the bundle on `test`."""
    tracing, keep_float = VARIANTS[suffix]
    with tracing(), mock.patch.object(converter, "FLOAT_OPS_IN_INT8", keep_float):
        report = converter.export_bundle(run, out, quantize="int8")
    return {
        "accuracy": evaluate(out, test, save_results=False)["accuracy"],
        "kept_float": report["kept_float"],
        "parity": report["parity"],
        "size_bytes": report["size_bytes"],
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a float run folder")
    parser.add_argument("--qat-run", type=Path, required=True, help="its QAT run")
    parser.add_argument("--test", type=Path, required=True, help="a labelled test manifest")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    result = {
        "keras_float": evaluate(args.run, args.test, save_results=False)["accuracy"],
        "keras_qat": evaluate(args.qat_run, args.test, save_results=False)["accuracy"],
    }
    with tempfile.TemporaryDirectory(prefix="int8-variants-") as workdir:
        for suffix in VARIANTS:
            for kind, run in (("ptq", args.run), ("qat", args.qat_run)):
                name = f"{kind}-int8{suffix}"
                logging.info("exporting and evaluating %s", name)
                result[name] = variant_bundle_figures(run, Path(workdir) / name, args.test, suffix)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
