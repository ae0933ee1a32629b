"""LiteRT conversion: a Keras model to .tflite bytes, and a run folder to a bundle.

How a model is converted (`convert_model`):

- The device signature has a **static batch of 1** and the model's named
  inputs: a dynamic batch adds SHAPE / REDUCE_PROD / PACK ops that split the
  graph into many XNNPACK partitions (measured: 42 partitions -> 6).
- The model goes through `keras.export.ExportArchive` and a SavedModel to
  `tf.lite.TFLiteConverter.from_saved_model`. `from_concrete_functions` on a
  tf.function that calls the model was tried first: TensorFlow's tracking does
  not see Keras 3 variables there, so the weights stay resource variables
  (VAR_HANDLE / READ_VARIABLE ops) that are neither folded nor quantized.
  `ExportArchive` tracks them and the SavedModel path freezes them into
  constants (the same path as `model.export(format="litert")`, which however
  adds SELECT_TF_OPS and names the output `output_0`; here it is `logits`).
- Only `TFLITE_BUILTINS` ops are allowed: a bundle must run with the plain
  LiteRT runtime, so a model that needs TensorFlow (Flex) or custom ops is
  refused with `UnsupportedOpsError` naming them.

Quantization modes:

- `none`: float32.
- `float16`: float16 weights, dequantized to float32 at load; compute stays float32.
- `dynamic`: dynamic-range quantization: int8 weights of the large matmuls and
  convolutions, activations quantized on the fly; no calibration data.
  Grouped convolutions keep float32 weights (`float_grouped_convolutions`):
  XNNPACK has no hybrid grouped convolution, and the builtin one made an
  edge-sized model 2-4x slower than float (0.83x with them float).
- `int8`: full-integer post-training quantization calibrated on
  `representative_inputs`. Inputs and outputs stay float32 (and token ids
  int32): the graph quantizes the image right after the input and dequantizes
  the logits, so the device feeds the same tensors as for the float model.
  Only `TFLITE_BUILTINS` is requested here too: `TFLITE_BUILTINS_INT8` gave
  the identical model on a keras-hub BERT + ViT (the converter does not enforce
  it; the LayerNorms' NEG stayed float with QUANTIZE / DEQUANTIZE around it),
  so the op dtypes are what to check: `op_summary` counts them.
  Some op types stay float in an int8 export (`FLOAT_OPS_IN_INT8`, through
  the converter's QuantizationDebugger denylist): XNNPACK has no int8 kernel
  for them, so in int8 each falls back to a slow builtin kernel and splits
  XNNPACK's graph with QUANTIZE / DEQUANTIZE around it. The set was chosen
  by measured ablation (`benchmarks/int8_op_profile.py`, docs/design.md#int8-latency-on-xnnpack):
  HARD_SWISH (MobileNetV3), the attention matmuls and softmax (BATCH_MATMUL,
  SOFTMAX), the layer-norm variance (SQUARED_DIFFERENCE), and the attention
  mask's path (SELECT_V2, TRANSPOSE), whose -1e9 fill would otherwise
  set the int8 scale of the scores. A QAT graph is quantized by its
  fake-quant ops, which the denylist does not reach: there only the ops
  without fake quantization stay float (SQUARED_DIFFERENCE, and HARD_SWISH
  and the attention, which the QAT transform leaves alone unless
  `QuantizerSettings.integer_only`).
  For a QAT run (`mmkeras qat`) the converter keeps the ranges the
  fake-quant ops learned and calibrates only the tensors without one
  (residual adds, pooling, masking inside blocks). The other modes on a QAT
  run keep the fake quantization as QUANTIZE/DEQUANTIZE pairs around float
  ops: a QAT run is meant for `int8`.

Every export reports (in bundle.json's `conversion` and to the user) the op
types, how many compute ops (FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D,
BATCH_MATMUL) run in int8, with int8 weights on float activations (`hybrid`,
dynamic range) or in float, the size, and the parity with the Keras model.
"""

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from ai_edge_litert.schema_py_generated import BuiltinOperator

from mmkeras.data.manifest import Manifest, read_manifest
from mmkeras.errors import UserError
from mmkeras.evaluation.multilabel_evaluate import run_thresholds
from mmkeras.folder_lock import folder_lock
from mmkeras.framework_logs import native_stderr_silenced
from mmkeras.models.dual_encoder import is_dual_encoder
from mmkeras.export.bundle_thresholds import retuned_thresholds
from mmkeras.export.bundle_writer import check_replaceable, tensor_entry, write_bundle_json
from mmkeras.export.conversion_report import float_op_types, op_summary, parity_report
from mmkeras.export.hybrid_weights import float_grouped_convolutions
from mmkeras.quantization.qat_transform import check_calibrated, is_quantized
from mmkeras.runs import load_run
from mmkeras.runtime.bundle import (
    INPUT_NAMES,
    MODEL_FILE,
    OUTPUT_NAME,
    QUANTIZATION_MODES,
    UNFINISHED_MARKER,
    read_bundle,
)
from mmkeras.runtime.interpreter import LiteRTModel, list_ops
from mmkeras.runtime.test_vectors import examples_from_manifest, write_test_vectors

logger = logging.getLogger("mmkeras")

SIGNATURE_KEY = "serving_default"
BUILTIN_OP_NAMES = frozenset(name for name in vars(BuiltinOperator) if name.isupper()) - {"CUSTOM"}
# int8 calibration: at most this many manifest rows, drawn with this seed.
CALIBRATION_ROWS = 200
CALIBRATION_SEED = 0
# Rows on which the exported model is compared with the Keras model.
PARITY_ROWS = 32
# Op types that stay float in an int8 export, measured on the edge-sized model (benchmarks/int8_op_profile.py):
# XNNPACK runs them only in float, so in int8 each falls back to a builtin kernel between QUANTIZE / DEQUANTIZE.
# HARD_SWISH: conv 1x1 + hard-swish x4 at 112x112x48, 9.9 ms all-int8 vs 1.4 ms with HARD_SWISH float.
# BATCH_MATMUL + SOFTMAX (attention) + SQUARED_DIFFERENCE (layer-norm variance): post-training int8 went from
# 1.42x to 0.78x the float32 latency; either of BATCH_MATMUL or SQUARED_DIFFERENCE alone gained little (1.08-1.15x).
# SELECT_V2 + TRANSPOSE (the attention mask's path): a masked softmax fills masked scores with -1e9 (SELECT_V2);
# calibrated, that tensor's int8 scale is ~3.9e6, and SELECT_V2 shares it with the scores and the TRANSPOSE
# before them, so every score rounds to one value (samples run, post-training int8: 0.647 test accuracy, 1.000
# with these float; float-attention QAT-int8: 0.633 and 1.000; no latency cost measured on the edge model).
FLOAT_OPS_IN_INT8 = ("BATCH_MATMUL", "HARD_SWISH", "SELECT_V2", "SOFTMAX", "SQUARED_DIFFERENCE", "TRANSPOSE")
# A bundle folder's permissions before the umask (mkdtemp's own are 0o700).
_FOLDER_MODE = 0o777 & ~os.umask(os.umask(0))


class UnsupportedOpsError(UserError):
    """The model needs ops that LiteRT's builtin kernels lack (Flex / custom ops).

    Args:
        ops: the op names, as the converter reports them.

    Example:
    >>> UnsupportedOpsError(["MatrixDeterminant", "Cumprod"]).ops
    ['Cumprod', 'MatrixDeterminant']
    """

    def __init__(self, ops: list[str]):
        self.ops = sorted(set(ops))
        super().__init__(
            f"cannot export: the model uses op(s) that LiteRT builtins lack: {', '.join(self.ops)} "
            "(they would need the TensorFlow Flex runtime or custom kernels on the device); "
            "replace the layer or backbone that uses them"
        )


def device_signature(model: keras.Model) -> dict[str, tf.TensorSpec]:
    """The model's named inputs with a batch of 1 and every other dimension static."""
    if not isinstance(model.input, dict):
        raise ValueError(f"expected a model with named (dict) inputs, got {type(model.input).__name__}")
    signature = {}
    for name, tensor in model.input.items():
        shape = (1, *tensor.shape[1:])
        if None in shape:
            raise ValueError(f"input {name!r} needs a static shape for the device, got {tensor.shape}")
        signature[name] = tf.TensorSpec(shape, tensor.dtype, name=name)
    return signature


def convert_model(
    model: keras.Model,
    *,
    quantize: str = "none",
    representative_inputs: Iterable[dict[str, np.ndarray]] | None = None,
    keep_float: Iterable[str] = FLOAT_OPS_IN_INT8,
) -> bytes:
    """Convert a Keras model with named inputs to LiteRT flatbuffer bytes.

    Args:
        model: a Keras model taking a dict of named inputs with static shapes
            (apart from the batch) and returning one tensor (the logits).
        quantize: `none`, `float16`, `dynamic` or `int8` (see the module docstring).
        representative_inputs: for `int8` only: an iterable of input dicts
            (batches, each array [N, ...]) to calibrate activation ranges on.
        keep_float: for `int8` only: op types (`BATCH_MATMUL`, ...) left
            float (selective quantization), chosen where int8 is slower on
            the target (`benchmarks/int8_op_profile.py`); in a QAT graph only
            ops without fake quantization stay float.

    Raises:
        UnsupportedOpsError: the model needs Flex or custom ops.

    Example:
    >>> tflite_bytes = convert_model(model, quantize="dynamic")  # doctest: +SKIP
    """
    if quantize not in QUANTIZATION_MODES:
        raise UserError(f"quantize must be one of {', '.join(QUANTIZATION_MODES)}, got {quantize!r}")
    if (quantize == "int8") != (representative_inputs is not None):
        raise ValueError("representative_inputs are needed for int8, and only for int8")
    signature = device_signature(model)
    if is_quantized(model):
        check_calibrated(model)
    logger.info("converting to LiteRT (%s)", quantize)
    with tempfile.TemporaryDirectory(prefix="mmkeras-export-") as saved_model_dir:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            SIGNATURE_KEY,
            lambda inputs: {OUTPUT_NAME: model(inputs, training=False)},
            input_signature=[signature],
        )
        archive.write_out(saved_model_dir, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=[SIGNATURE_KEY])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantize == "int8":
            examples = list(split_examples(representative_inputs, signature))
            logger.info("int8: calibrating activation ranges on %d rows", len(examples))
            converter.representative_dataset = lambda: iter(examples)
        try:
            with native_stderr_silenced():  # the converter prints its settings from C++
                tflite_model = converter.convert()
                # In a QAT graph the denylist reaches only ops without fake quantization (the others stay int8).
                keep_float = tuple(keep_float) if quantize == "int8" else ()
                if keep_float and any(op.name in keep_float for op in list_ops(tflite_model)):
                    tflite_model = convert_keeping_float(converter, keep_float)
        except Exception as error:
            unsupported = ops_needing_flex_or_custom(error)
            if unsupported:
                raise UnsupportedOpsError(unsupported) from None
            raise
    check_builtin_only(tflite_model)
    if quantize == "dynamic":
        tflite_model = float_grouped_convolutions(tflite_model)
    return tflite_model


def convert_keeping_float(converter, op_names) -> bytes:
    """The int8 conversion again, with the ops named `op_names` left float (selective quantization)."""
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter,
        debug_dataset=converter.representative_dataset,
        debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(op_names)),
    )
    return debugger.get_nondebug_quantized_model()


def split_examples(
    batches: Iterable[dict[str, np.ndarray]], signature: dict[str, tf.TensorSpec]
) -> Iterator[dict[str, np.ndarray]]:
    """Batch-1 examples in the signature's dtypes, as the converter's calibration wants them."""
    for batch in batches:
        size = len(next(iter(batch.values())))
        for index in range(size):
            yield {
                name: np.asarray(batch[name][index : index + 1], dtype=spec.dtype.as_numpy_dtype)
                for name, spec in signature.items()
            }


def ops_needing_flex_or_custom(error: Exception) -> list[str]:
    """Names of the ops a converter error says need Flex or custom kernels (empty for other errors)."""
    names = []
    for data in getattr(error, "errors", ()):
        code = type(data).ErrorCode.Name(data.error_code)
        if code in ("ERROR_NEEDS_FLEX_OPS", "ERROR_NEEDS_CUSTOM_OPS"):
            names.append(data.operator.name.removeprefix("tf."))
    return names


def check_builtin_only(tflite_model: bytes):
    """Refuse an empty conversion result, or one with a Flex or custom op."""
    if not tflite_model:
        raise RuntimeError("the TFLite converter returned an empty model")
    foreign = [op.name for op in list_ops(tflite_model) if op.name not in BUILTIN_OP_NAMES]
    if foreign:
        raise UnsupportedOpsError(foreign)


def export_bundle(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    quantize: str = "none",
    calibration_data: str | Path | None = None,
    keep_float: Iterable[str] = (),
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
        quantize: `none`, `float16`, `dynamic` or `int8`.
        calibration_data: for int8, a manifest whose rows calibrate the
            activation ranges (a seeded sample of at most 200 rows); by
            default the run's training manifest.
        keep_float: for int8: op types left float besides
            `FLOAT_OPS_IN_INT8` (selective quantization). The report's
            `kept_float` lists those of both that the model has and that
            stayed float (a QAT run's fake-quantized ops stay int8).

    Returns:
        The conversion report, also stored as bundle.json's `conversion`
        (plus `path` here): `quantize`, `qat` (a QAT run), `size_bytes`,
        `ops` (`op_summary`), `calibration_rows` (int8) and `parity`
        (`source`: `validation` rows of the run's validation manifest, else
        `calibration` rows; `rows`, `max_abs_logit_diff`, `label_agreement`
        against the Keras model), or `None` when no manifest can be read;
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
    unknown = sorted(set(keep_float) - BUILTIN_OP_NAMES)
    if unknown:
        raise UserError(f"not LiteRT builtin op types: {', '.join(unknown)} (e.g. BATCH_MATMUL, SOFTMAX, MUL)")
    out_dir = Path(out_dir)
    check_replaceable(out_dir)
    with folder_lock(out_dir):
        check_replaceable(out_dir)  # again: another export may have written it while this one waited
        remove_stale_staging(out_dir)
        return _export_locked(Path(run_dir), out_dir, quantize, calibration_data, keep_float)


def _export_locked(run_dir: Path, out_dir: Path, quantize: str, calibration_data, keep_float) -> dict:
    logger.info("loading %s", run_dir)
    run = load_run(run_dir)
    if is_dual_encoder(run.model):
        from mmkeras.export.dual_encoder_export import export_dual_encoder

        return export_dual_encoder(run, out_dir, quantize=quantize, calibration_data=calibration_data)
    sample = manifest_sample(run, calibration_data, required=quantize == "int8")
    parity_inputs, parity_source = parity_sample(run, sample)
    requested_float = {*FLOAT_OPS_IN_INT8, *keep_float}
    tflite_model = convert_model(
        run.model, quantize=quantize, representative_inputs=[sample] if quantize == "int8" else None,
        keep_float=requested_float,
    )
    kept_float = float_op_types(tflite_model, requested_float) if quantize == "int8" else []
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=staging_prefix(out_dir, "partial"), dir=out_dir.parent))
    staging.chmod(_FOLDER_MODE)  # mkdtemp makes it private to the user; a bundle is an ordinary folder
    (staging / UNFINISHED_MARKER).touch()  # until renamed into place, no reader takes it for a bundle
    try:
        bundle_fields = write_bundle_files(staging, tflite_model, run, quantize)
        read_bundle(staging, unfinished_ok=True)  # the exporter's own check that what it wrote reads back
        parity = None
        if parity_inputs is not None:
            rows = len(parity_inputs["image"])
            logger.info("checking the bundle against the Keras model on %d %s rows", rows, parity_source)
            litert_model = LiteRTModel(staging / MODEL_FILE)
            parity = {"source": parity_source, **parity_report(run.model, litert_model, parity_inputs)}
        multilabel = {}
        if run.config.task == "multilabel":
            multilabel = {"thresholds_tuned_rows": None}
            retuned = retuned_thresholds(run, LiteRTModel(staging / MODEL_FILE)) if quantize != "none" else None
            if retuned is not None:
                bundle_fields["thresholds"], multilabel["thresholds_tuned_rows"] = retuned
        report = {
            "quantize": quantize,
            "qat": run.quantization is not None,
            "size_bytes": len(tflite_model),
            "ops": op_summary(tflite_model),
            "calibration_rows": len(sample["image"]) if quantize == "int8" else None,
            "kept_float": kept_float,
            "parity": parity,
            **multilabel,
        }
        write_bundle_json(staging, **bundle_fields, conversion=report)
        examples = examples_from_manifest(test_vector_manifest(run, calibration_data), run.preprocessor.image_size)
        write_test_vectors(staging, examples, unfinished_ok=True)
        (staging / UNFINISHED_MARKER).unlink()
        replace_folder(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"path": str(out_dir), **report}


def manifest_sample(run, calibration_data: str | Path | None, *, required: bool) -> dict[str, np.ndarray] | None:
    """Model inputs for a seeded sample of the calibration (or training) manifest's rows.

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
    return manifest_inputs(run, path, CALIBRATION_ROWS)


def parity_sample(run, calibration_sample: dict[str, np.ndarray] | None):
    """`(inputs, source)` for the parity check: the run's validation rows, else the calibration rows."""
    if run.config.val and Path(run.config.val).is_file():
        return manifest_inputs(run, run.config.val, PARITY_ROWS), "validation"
    if calibration_sample is None:
        return None, None
    return {name: value[:PARITY_ROWS] for name, value in calibration_sample.items()}, "calibration"


def test_vector_manifest(run, calibration_data: str | Path | None) -> str | Path | None:
    """Where the bundle's test vectors come from: the validation manifest, else the calibration or training one."""
    for path in (run.config.val, calibration_data, run.config.data):
        if path and Path(path).is_file():
            return path
    return None


def manifest_inputs(run, path: str | Path, max_rows: int) -> dict[str, np.ndarray]:
    """Model inputs for a seeded sample of at most `max_rows` of a manifest's rows."""
    manifest = read_manifest(path, require_labels=False)
    rows = manifest.rows
    if len(rows) > max_rows:
        chosen = np.random.default_rng(CALIBRATION_SEED).choice(len(rows), max_rows, replace=False)
        rows = [rows[index] for index in sorted(chosen)]
    # Skipping (with a logged warning) like training's `--on-bad-row skip`: a
    # run trained that way must still export with its own manifest.
    sample, _ = Manifest(manifest.path, rows).validate_images(run.preprocessor.image_size, "skip")
    return run.preprocessor([row.text for row in sample.rows], [row.image for row in sample.rows])


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
        thresholds=run_thresholds(run.path, run.labels) if run.config.task == "multilabel" else None,
    )
    write_bundle_json(directory, **fields)
    return fields


def describe_tensor(name: str, details: dict) -> dict:
    scale, zero_point = details["quantization"]
    quantization = (scale, zero_point) if scale else None
    return tensor_entry(name, details["shape"], np.dtype(details["dtype"]).name, quantization)


def staging_prefix(out_dir: Path, kind: str) -> str:
    """The name prefix of the hidden folders beside `out_dir` that an export writes (`partial`) or retires (`old`)."""
    return f".{out_dir.name}.{kind}-"


def remove_stale_staging(out_dir: Path):
    """Remove what a killed export of `out_dir` left beside it (only called while holding `out_dir`'s lock)."""
    if not out_dir.parent.is_dir():
        return
    for kind in ("partial", "old"):
        for stale in out_dir.parent.glob(staging_prefix(out_dir, kind) + "*"):
            if stale.is_dir() and not stale.is_symlink():
                logger.info("removing %s, left by an interrupted export", stale)
                shutil.rmtree(stale)


def replace_folder(staging: Path, out_dir: Path):
    """Rename the finished `staging` folder to `out_dir`, replacing an old bundle there.

    Two renames on one filesystem: the old bundle is moved aside only once the
    new one is complete, and moved back if the second rename fails.
    """
    if not out_dir.exists():
        os.rename(staging, out_dir)
        return
    retired = Path(tempfile.mkdtemp(prefix=staging_prefix(out_dir, "old"), dir=out_dir.parent))
    os.rename(out_dir, retired)  # onto an empty folder: allowed by POSIX rename
    try:
        os.rename(staging, out_dir)
    except OSError:
        os.rename(retired, out_dir)
        raise
    shutil.rmtree(retired)
