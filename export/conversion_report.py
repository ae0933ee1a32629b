"""The conversion report of an export: op precision, float islands, size and parity.

Stored in bundle.json under `conversion`, printed by `mmkeras export`
(`describe_report`) and returned by `export_bundle`.

Example:
>>> op_summary(tflite_bytes)["compute_ops"]["int8_fraction"]  # doctest: +SKIP
1.0
"""

import collections

import numpy as np

from mmkeras.runtime.interpreter import list_ops

# The ops that do a model's arithmetic: the int8 share of these is reported.
COMPUTE_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "BATCH_MATMUL")


def op_summary(tflite_model: bytes) -> dict:
    """Op counts by type and by output dtype, and the precision of the compute ops, for conversion reports.

    `compute_ops` counts the `COMPUTE_OPS` by precision: `int8` (int8
    activations and output), `hybrid` (int8 weights, float activations: the
    dynamic-range kernels) and `float`; `int8_fraction` is `int8 / total`.
    `float_ops` counts the other ops with a float output by type (the float
    islands of an int8 model).

    Example:
    >>> op_summary(tflite_bytes)["compute_ops"]  # doctest: +SKIP
    {'total': 36, 'int8': 36, 'hybrid': 0, 'float': 0, 'int8_fraction': 1.0}
    """
    ops = list_ops(tflite_model)
    compute = collections.Counter(compute_precision(op) for op in ops if op.name in COMPUTE_OPS)
    total = sum(compute.values())
    return {
        "total": len(ops),
        "by_type": dict(collections.Counter(op.name for op in ops).most_common()),
        "by_output_dtype": dict(collections.Counter(op.output_dtypes[0] for op in ops if op.output_dtypes)),
        "compute_ops": {
            "total": total,
            **{precision: compute[precision] for precision in ("int8", "hybrid", "float")},
            "int8_fraction": compute["int8"] / total if total else None,
        },
        "float_ops": dict(
            collections.Counter(
                op.name
                for op in ops
                if op.name not in COMPUTE_OPS and op.name != "DEQUANTIZE" and op.output_dtypes[:1] == ("float32",)
            ).most_common()
        ),
    }


def compute_precision(op) -> str:
    """`int8`, `hybrid` or `float`: how a compute op (`COMPUTE_OPS`) runs."""
    if op.output_dtypes[:1] == ("int8",):
        return "int8"
    return "hybrid" if "int8" in op.input_dtypes else "float"


def float_op_types(tflite_model: bytes, op_types) -> list[str]:
    """Those of `op_types` that the model has, all with float outputs (the op types an int8 export kept float).

    Example:
    >>> float_op_types(tflite_bytes, ["SOFTMAX", "HARD_SWISH"])  # doctest: +SKIP
    ['SOFTMAX']
    """
    outputs = collections.defaultdict(set)
    for op in list_ops(tflite_model):
        if op.name in op_types:
            outputs[op.name].update(op.output_dtypes)
    return sorted(name for name, dtypes in outputs.items() if dtypes == {"float32"})


def parity_report(model, litert_model, sample: dict[str, np.ndarray]) -> dict:
    """How far the exported model's logits (`litert_model`, a `LiteRTModel`) are from the Keras model's on `sample`."""
    expected = np.asarray(model(sample, training=False))
    actual = litert_model(sample)
    return {
        "rows": len(expected),
        "max_abs_logit_diff": float(np.max(np.abs(actual - expected))),
        "label_agreement": float(np.mean(actual.argmax(axis=1) == expected.argmax(axis=1))),
    }


def describe_report(report: dict) -> str:
    """The conversion report in a few lines: size, compute-op precision, float islands, parity."""
    compute, parity = report["ops"]["compute_ops"], report["parity"]
    lines = [
        f"wrote {report['path']} ({report['quantize']}{', from a QAT run' if report['qat'] else ''}, "
        f"{report['size_bytes']} bytes, {report['ops']['total']} ops)",
        f"compute ops: {compute['int8']} int8, {compute['hybrid']} hybrid, {compute['float']} float "
        f"of {compute['total']}",
    ]
    if report["quantize"] == "int8" and report["ops"]["float_ops"]:
        lines.append("float ops: " + ", ".join(f"{name} {count}" for name, count in report["ops"]["float_ops"].items()))
    if report.get("kept_float"):
        lines.append("kept float by choice (selective quantization): " + ", ".join(report["kept_float"]))
    if parity is None:
        lines.append("parity: not checked (no manifest to read)")
    else:
        lines.append(
            f"parity on {parity['rows']} {parity['source']} rows: label agreement {parity['label_agreement']:.3f}, "
            f"max logit error {parity['max_abs_logit_diff']:.4f}"
        )
    return "\n".join(lines)
