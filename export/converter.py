"""`export_bundle`: a run folder to a bundle folder (an align run to a dual-encoder bundle).

How a model becomes LiteRT bytes, and what each quantization mode does, is
`mmkeras.export.litert_conversion`.

Every export reports (in bundle.json's `conversion` and to the user) the op
types, how many compute ops (FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D,
BATCH_MATMUL) run in int8, with int8 weights on float activations (`hybrid`,
dynamic range) or in float, the size, and the parity with the Keras model.
"""

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from mmkeras.errors import UserError
from mmkeras.evaluation.report import record_bundle
from mmkeras.export.bundle_thresholds import retuned_thresholds
from mmkeras.export.bundle_writer import check_replaceable, tensor_entry, write_bundle_json
from mmkeras.export.conversion_report import (
    float_layer_norm_tails,
    float_op_types,
    op_summary,
    parity_report,
    quality_warning,
)
from mmkeras.export.dual_encoder_export import export_dual_encoder
from mmkeras.export.integer_only import check_integer_only
from mmkeras.export.litert_conversion import (
    BUILTIN_OP_NAMES,
    CALIBRATION_ROWS,
    FLOAT_OPS_IN_INT8,
    PARITY_ROWS,
    convert_model,
    manifest_inputs,
    manifest_rows,
)
from mmkeras.folder_lock import folder_lock
from mmkeras.models.dual_encoder import is_dual_encoder
from mmkeras.quantization.run_loading import load_run
from mmkeras.runtime.bundle import CALIBRATED_MODES, INPUT_NAMES, MODEL_FILE, QUANTIZATION_MODES, read_bundle
from mmkeras.runtime.interpreter import LiteRTModel
from mmkeras.runtime.test_vectors import examples_from_manifest, write_test_vectors
from mmkeras.staged_folder import remove_stale_staging, staged_folder
from mmkeras.tasks.registry import get_task

logger = logging.getLogger("mmkeras")


def export_bundle(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    quantize: str = "none",
    calibration_data: str | Path | None = None,
    keep_float: Iterable[str] = (),
    calibration_rows: int = CALIBRATION_ROWS,
    integer_only: bool = False,
) -> dict:
    """Convert a run folder to a bundle folder (see `mmkeras.runtime.bundle`).

    The bundle is written into a temporary sibling folder, loaded back with the
    device runtime and compared with the Keras model, and only then renamed
    into place, replacing an existing bundle: a failed export leaves `out_dir`
    as it was. Only a bundle (a folder holding nothing but bundle files) or an
    empty folder is replaced; `out_dir` is locked while the export writes it
    (`folder_lock`), and the staging folders a killed export left beside it
    are removed.

    Args:
        run_dir: a run folder written by training (or a QAT run from `mmkeras qat`).
        out_dir: the bundle folder to write (or replace).
        quantize: `none`, `float16`, `dynamic`, `int8` or `int16x8`.
        calibration_data: for int8 and int16x8, a manifest whose rows calibrate the
            activation ranges; by default the run's training manifest.
        keep_float: for int8: op types left float besides
            `FLOAT_OPS_IN_INT8` (selective quantization). The report's
            `kept_float` lists those of both that the model has and that
            stayed float (a QAT run's fake-quantized ops stay int8), and
            `kept_float_layer_norm_tails` how many layer norms kept their
            tail float (picked by name: `layer_norm_tail_names`).
        calibration_rows: calibrate on all the calibration manifest's rows
            up to this many (a seeded sample of that many when it has more).
        integer_only: for int8: a model for integer-only accelerators
            (`convert_model(integer_only=True)`): every op int8, uint8 image,
            modality mask and logits whose scale and zero point bundle.json's
            tensor entries hold; a model that still has float ops is refused
            (`FloatOpsError`, nothing written).

    Returns:
        The conversion report, also stored as bundle.json's `conversion`
        (plus `path` here): `quantize`, `qat` (a QAT run), `size_bytes`,
        `ops` (`op_summary`), `calibration_rows` (int8, int16x8), `integer_only` and `parity`
        (`source`: `validation` rows of the run's validation manifest, else
        `calibration` rows; `rows`, `max_abs_logit_diff`, `label_agreement`
        against the Keras model, and on labelled rows `float_accuracy`,
        `accuracy` and `accuracy_drop`), or `None` when no manifest can be
        read; `warning`: the line logged when the bundle loses accuracy
        (`quality_warning`), else `None`;
        for a multilabel run `thresholds_tuned_rows`: the validation rows a
        quantized bundle's thresholds were re-tuned on (`retuned_thresholds`;
        `None`: the run's thresholds).

    Example:
    >>> report = export_bundle("runs/demo", "bundles/demo", quantize="int8")  # doctest: +SKIP
    >>> report["parity"]["label_agreement"]  # doctest: +SKIP
    1.0
    """
    if quantize not in QUANTIZATION_MODES:
        raise UserError(f"quantize must be one of {', '.join(QUANTIZATION_MODES)}, got {quantize!r}")
    if calibration_rows < 1:
        raise UserError(f"calibration_rows must be at least 1, got {calibration_rows}")
    if integer_only and (quantize != "int8" or keep_float):
        raise UserError("--integer-only needs --quantize int8 and no --keep-float")
    if keep_float and quantize != "int8":
        raise UserError(f"--keep-float is for --quantize int8 (a {quantize} export quantizes every op or none)")
    unknown = sorted(set(keep_float) - BUILTIN_OP_NAMES)
    if unknown:
        raise UserError(f"not LiteRT builtin op types: {', '.join(unknown)} (e.g. BATCH_MATMUL, SOFTMAX, MUL)")
    out_dir = Path(out_dir)
    check_replaceable(out_dir)
    with folder_lock(out_dir):
        check_replaceable(out_dir)  # again: another export may have written it while this one waited
        remove_stale_staging(out_dir)
        report = _export_locked(
            Path(run_dir), out_dir, quantize, calibration_data, keep_float, calibration_rows, integer_only
        )
    if report.get("warning"):
        logger.warning("warning: %s", report["warning"])
    record_bundle(out_dir)  # the run's report and `compare` list it wherever it was written
    return report


def _export_locked(
    run_dir: Path, out_dir: Path, quantize: str, calibration_data, keep_float, calibration_rows: int,
    integer_only: bool = False,
) -> dict:
    logger.info("loading %s", run_dir)
    run = load_run(run_dir)
    if is_dual_encoder(run.model):
        return export_dual_encoder(
            run, out_dir, quantize=quantize, calibration_data=calibration_data, integer_only=integer_only
        )
    sample = None
    if quantize in CALIBRATED_MODES:
        sample = manifest_sample(run, calibration_data, required=True, max_rows=calibration_rows)
    parity_inputs, parity_labels, parity_source = parity_sample(run, calibration_data)
    requested_float = {*FLOAT_OPS_IN_INT8, *keep_float} if quantize == "int8" and not integer_only else set()
    tflite_model = convert_model(
        run.model, quantize=quantize, representative_inputs=[sample] if quantize in CALIBRATED_MODES else None,
        keep_float=requested_float, integer_only=integer_only,
    )
    if integer_only:
        check_integer_only(tflite_model)
    kept_float = float_op_types(tflite_model, requested_float) if quantize == "int8" else []
    layer_norm_tails = float_layer_norm_tails(tflite_model) if requested_float else 0
    with staged_folder(out_dir) as staging:  # until renamed into place, no reader takes it for a bundle
        bundle_fields = write_bundle_files(staging, tflite_model, run, quantize)
        read_bundle(staging, unfinished_ok=True)  # the exporter's own check that what it wrote reads back
        parity = None
        if parity_inputs is not None:
            rows = len(parity_inputs["image"])
            logger.info("checking the bundle against the Keras model on %d %s rows", rows, parity_source)
            litert_model = LiteRTModel(staging / MODEL_FILE)
            parity = {"source": parity_source, **parity_report(run.model, litert_model, parity_inputs, parity_labels)}
        retuning = {}
        if bundle_fields["thresholds"] is not None:  # a quantized model's own scores set its thresholds
            retuning = {"thresholds_tuned_rows": None}
            retuned = retuned_thresholds(run, LiteRTModel(staging / MODEL_FILE)) if quantize != "none" else None
            if retuned is not None:
                bundle_fields["thresholds"], retuning["thresholds_tuned_rows"] = retuned
        report = {
            "quantize": quantize,
            "qat": run.quantization is not None,
            "size_bytes": len(tflite_model),
            "ops": op_summary(tflite_model),
            "calibration_rows": len(sample["image"]) if quantize in CALIBRATED_MODES else None,
            "integer_only": integer_only,
            "kept_float": kept_float,
            "kept_float_layer_norm_tails": layer_norm_tails,
            "parity": parity,
            **retuning,
        }
        report["warning"] = quality_warning(report)
        write_bundle_json(staging, **bundle_fields, conversion=report)
        examples = examples_from_manifest(
            test_vector_manifest(run, calibration_data), run.preprocessor.image_size, columns=run.config.columns
        )
        write_test_vectors(staging, examples, unfinished_ok=True)
    return {"path": str(out_dir), **report}


def manifest_sample(
    run, calibration_data: str | Path | None, *, required: bool, max_rows: int = CALIBRATION_ROWS
) -> dict[str, np.ndarray] | None:
    """Model inputs for the calibration (or training) manifest's rows: all, or a seeded sample of `max_rows`.

    `None` when no calibration manifest is given, the run's training manifest is not there
    and `required` is false.
    """
    path = calibration_data if calibration_data is not None else run.config.data
    if calibration_data is None and (path is None or not Path(path).is_file()):
        if required:
            raise UserError(
                f"int8 export needs calibration rows, and the run's training manifest {path!r} is not there; "
                "give a manifest with --calibration-data",
                path=run.path,
            )
        return None
    return manifest_inputs(run, path, max_rows)


def parity_sample(run, calibration_data: str | Path | None):
    """`(inputs, labels, source)` for the parity check: the run's validation rows, else the calibration rows.

    At most `PARITY_ROWS` rows (a seeded sample); `labels` are their class
    indices when every row has one label of the run (`Task.class_indices`),
    else `None`; all three are `None` when there is no manifest to read.
    """
    if run.config.val and Path(run.config.val).is_file():
        path, source = run.config.val, "validation"
    else:
        path, source = calibration_data if calibration_data is not None else run.config.data, "calibration"
        if path is None or not Path(path).is_file():
            return None, None, None
    rows = manifest_rows(run, path, PARITY_ROWS)
    inputs = run.preprocessor([row.text for row in rows], [row.image for row in rows])
    return inputs, known_labels(run, rows), source


def known_labels(run, rows) -> np.ndarray | None:
    """The rows' class indices in the run's labels; `None` when a row has no known label, or a set of them."""
    return get_task(run.config.task).class_indices([row.label for row in rows], run.labels)


def test_vector_manifest(run, calibration_data: str | Path | None) -> str | Path | None:
    """Where the bundle's test vectors come from: the validation manifest, else the calibration or training one."""
    for path in (run.config.val, calibration_data, run.config.data):
        if path and Path(path).is_file():
            return path
    return None


def write_bundle_files(directory: Path, tflite_model: bytes, run, quantize: str) -> dict:
    """model.tflite, the preprocessor's files and bundle.json; tensor facts come from the model itself.

    Returns the `write_bundle_json` arguments, to write it again with the conversion report.
    """
    (directory / MODEL_FILE).write_bytes(tflite_model)
    run.preprocessor.save(directory)
    model = LiteRTModel(tflite_model)
    order = {name: position for position, name in enumerate(INPUT_NAMES)}
    names = sorted(model.input_details, key=lambda name: order.get(name, len(order)))
    fields = dict(
        inputs=[describe_tensor(name, model.input_details[name]) for name in names],
        output=describe_tensor(model.output_name, model.output_details),
        labels=run.labels,
        quantization=quantize,
        preprocessing=run.preprocessor.get_config(),
        source_run=str(Path(run.path).resolve()),
        task=run.config.task,
        thresholds=get_task(run.config.task).bundle_thresholds(run.path, run.labels),
    )
    write_bundle_json(directory, **fields)
    return fields


def describe_tensor(name: str, details: dict) -> dict:
    scale, zero_point = details["quantization"]
    quantization = (scale, zero_point) if scale else None
    return tensor_entry(name, details["shape"], np.dtype(details["dtype"]).name, quantization)
