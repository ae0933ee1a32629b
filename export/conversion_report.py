"""The conversion report of an export: op precision, float islands, size and parity.

Stored in bundle.json under `conversion`, printed by `mmkeras export`
(`describe_report`) and returned by `export_bundle`.

Example:
>>> op_summary(tflite_bytes)["compute_ops"]["int8_fraction"]  # doctest: +SKIP
1.0
"""

import collections

import numpy as np

from mmkeras.runtime.bundle import CALIBRATED_MODES, read_bundle
from mmkeras.runtime.interpreter import list_ops

# The ops that do a model's arithmetic: the int8 share of these is reported.
COMPUTE_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "BATCH_MATMUL")
# A quantized bundle is warned about when it loses more accuracy than this on labelled rows, or, without
# labels, when it gives the float model's label on fewer rows than this.
ACCURACY_DROP_LIMIT = 0.01
AGREEMENT_LIMIT = 0.97
# Rows per Keras call in the parity check (a real backbone's activations on 256 rows at once take gigabytes).
PARITY_BATCH = 32


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
            **{precision: compute[precision] for precision in ("int8", "int16x8", "hybrid", "float")},
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
    """`int8`, `int16x8` (int16 activations), `hybrid` or `float`: how a compute op (`COMPUTE_OPS`) runs."""
    if op.output_dtypes[:1] == ("int8",):
        return "int8"
    if op.output_dtypes[:1] == ("int16",):
        return "int16x8"
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


def float_layer_norm_tails(tflite_model: bytes) -> int:
    """How many layer norms kept their tail (`variance + epsilon`, RSQRT) float: the model's float RSQRT ops.

    The default int8 export keeps them float by tensor name, not by op type
    (`litert_conversion.layer_norm_tail_names`), so `float_op_types` does not
    list them; in any other mode the count means nothing.
    """
    return sum(op.name == "RSQRT" and op.output_dtypes == ("float32",) for op in list_ops(tflite_model))


def parity_report(model, litert_model, sample: dict[str, np.ndarray], labels: np.ndarray | None = None) -> dict:
    """How far the exported model's logits (`litert_model`, a `LiteRTModel`) are from the Keras model's on `sample`.

    With `labels` (class indices of the rows) also the accuracy of both and
    `accuracy_drop` (float minus exported).
    """
    rows = len(next(iter(sample.values())))
    # `predict_on_batch`, a compiled call: eager calls of EfficientNet-Lite0 at 224 made the export peak at 4.53 GB
    # RSS against 1.72 GB (docs/design.md#efficientnet-lite0-measured-as-a-user-would).
    batches = ({name: value[start : start + PARITY_BATCH] for name, value in sample.items()}
               for start in range(0, rows, PARITY_BATCH))
    expected = np.concatenate([np.asarray(model.predict_on_batch(batch)) for batch in batches])
    actual = litert_model(sample)
    report = {
        "rows": rows,
        "max_abs_logit_diff": float(np.max(np.abs(actual - expected))),
        "label_agreement": float(np.mean(actual.argmax(axis=1) == expected.argmax(axis=1))),
    }
    if labels is not None:
        float_correct = int(np.sum(expected.argmax(axis=1) == labels))
        correct = int(np.sum(actual.argmax(axis=1) == labels))
        # From the counts: 0.88 - 0.87 is 0.010000000000000009, over ACCURACY_DROP_LIMIT for one row in 100.
        report.update(float_accuracy=float_correct / rows, accuracy=correct / rows,
                      accuracy_drop=(float_correct - correct) / rows)
    return report


def quality_warning(report: dict) -> str | None:
    """One line when a quantized bundle loses accuracy, naming the remedies that apply; else `None`.

    The loss is the accuracy drop on labelled parity rows (more than
    `ACCURACY_DROP_LIMIT`), else a label agreement with the float model
    under `AGREEMENT_LIMIT`.

    Example:
    >>> quality_warning({"quantize": "int8", "qat": False, "ops": {"by_type": {"CONV_2D": 3}}, "parity": {
    ...     "rows": 100, "source": "validation", "label_agreement": 0.72,
    ...     "float_accuracy": 0.868, "accuracy": 0.786, "accuracy_drop": 0.082}})  # doctest: +NORMALIZE_WHITESPACE
    'the int8 bundle loses 8.2 points of accuracy on 100 validation rows (0.868 -> 0.786,
    label agreement 0.720 with the float model); try: mmkeras qat, then export int8; --quantize int16x8;
    --keep-float CONV_2D'
    """
    parity, mode = report["parity"], report["quantize"]
    if mode == "none" or parity is None:
        return None
    where = f"{parity['rows']} {parity['source']} rows"
    if "accuracy_drop" in parity:
        if parity["accuracy_drop"] <= ACCURACY_DROP_LIMIT:
            return None
        loss = (
            f"loses {100 * parity['accuracy_drop']:.1f} points of accuracy on {where} ({parity['float_accuracy']:.3f}"
            f" -> {parity['accuracy']:.3f}, label agreement {parity['label_agreement']:.3f} with the float model)"
        )
    elif parity["label_agreement"] < AGREEMENT_LIMIT:
        loss = f"gives the float model's label on only {parity['label_agreement']:.3f} of {where}"
    else:
        return None
    return f"the {mode} bundle {loss}; try: {'; '.join(remedies(report))}"


def remedies(report: dict) -> list[str]:
    """What can win the accuracy back, for the mode and the model of `report`."""
    mode = report["quantize"]
    if mode == "float16":
        return ["--quantize none"]
    if mode in ("dynamic", "int16x8"):
        return ["--quantize float16"]
    if report.get("integer_only"):  # --keep-float does not go with --integer-only
        qat = [] if report["qat"] else ["mmkeras qat --integer-only, then export --integer-only"]
        return [*qat, "export without --integer-only (then --keep-float)"]
    found = [] if report["qat"] else ["mmkeras qat, then export int8"]
    found.append("--quantize int16x8")
    compute = [name for name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") if name in report["ops"]["by_type"]]
    if compute:
        found.append(f"--keep-float {','.join(compute)}")
    return found


def describe_report(report: dict) -> str:
    """The conversion report in a few lines: size, compute-op precision, float islands, parity."""
    compute, parity = report["ops"]["compute_ops"], report["parity"]
    lines = [
        f"wrote {report['path']} ({report['quantize']}{', from a QAT run' if report['qat'] else ''}, "
        f"{report['size_bytes']} bytes, {report['ops']['total']} ops)",
        f"compute ops: {compute['int8']} int8, {compute['int16x8']} int16x8, {compute['hybrid']} hybrid, "
        f"{compute['float']} float "
        f"of {compute['total']}",
    ]
    if report["quantize"] in CALIBRATED_MODES and report["ops"]["float_ops"]:
        lines.append("float ops: " + ", ".join(f"{name} {count}" for name, count in report["ops"]["float_ops"].items()))
    if report.get("kept_float"):
        tails = report.get("kept_float_layer_norm_tails")
        tails = f"; the tail (variance + epsilon, RSQRT) of {tails} layer norms" if tails else ""
        lines.append("kept float by choice (selective quantization): " + ", ".join(report["kept_float"]) + tails)
    if report.get("integer_only"):
        lines.append(integer_io_line(report["path"]))
    if parity is None:
        lines.append("parity: not checked (no manifest to read)")
    else:
        accuracy = (
            f", accuracy {parity['accuracy']:.3f} (Keras {parity['float_accuracy']:.3f})"
            if "accuracy" in parity
            else ""
        )
        lines.append(
            f"parity on {parity['rows']} {parity['source']} rows: label agreement {parity['label_agreement']:.3f}, "
            f"max logit error {parity['max_abs_logit_diff']:.4f}{accuracy}"
        )
    return "\n".join(lines)


def integer_io_line(bundle_dir) -> str:
    """An integer-only bundle's quantized tensors with their dtype, scale and zero point, from its bundle.json.

    Example:
    >>> integer_io_line("bundles/edge")  # doctest: +SKIP
    'integer-only: image uint8 (scale 1, zero point 0), modality_mask uint8 (...), logits uint8 (...)'
    """
    bundle = read_bundle(bundle_dir)
    tensors = [tensor for tensor in [*bundle["inputs"], bundle["output"]] if tensor["quantization"]]
    return "integer-only: " + ", ".join(
        f"{tensor['name']} {tensor['dtype']} (scale {tensor['quantization']['scale']:.6g}, "
        f"zero point {tensor['quantization']['zero_point']})"
        for tensor in tensors
    )

