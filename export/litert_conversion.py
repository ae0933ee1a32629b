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
  set the int8 scale of the scores. With them, each layer norm's
  `variance + epsilon` ADD and its RSQRT stay float, found by graph pattern
  (`layer_norm_tail_names`; by type, every ADD would be float). A QAT graph
  is quantized by its fake-quant ops, which the denylist does not reach:
  there only the ops without fake quantization stay float
  (SQUARED_DIFFERENCE and the layer norms' tail, and HARD_SWISH and the
  attention, which the QAT transform leaves alone unless
  `QuantizerSettings.integer_only`).
  For a QAT run (`mmkeras qat`) the converter keeps the ranges the
  fake-quant ops learned and calibrates only the tensors without one
  (residual adds, pooling, masking inside blocks). The other modes on a QAT
  run keep the fake quantization as QUANTIZE/DEQUANTIZE pairs around float
  ops: a QAT run is meant for `int8`.
- `int8` with `integer_only` (`export --integer-only`): no op type kept
  float, the model traced with integer-friendly layer norms and masked
  softmaxes (`mmkeras.export.integer_only_graph`), `TFLITE_BUILTINS_INT8`
  only, and uint8 image, modality mask and logits (`INTEGER_IO_TYPE`), for
  integer-only accelerators (docs/design.md#integer-only-export-end-to-end).
- `int16x8`: TFLite's 16x8 mode: int16 activations and int8 weights, every
  op quantized, calibrated like `int8`; inputs and outputs float32. The model
  is traced with `int16x8_tracing` (the plain embedding GATHER, the layer
  norm and masked softmax of `integer_only_tracing`), the only way the
  converter takes an mmkeras model in this mode (docs/design.md#int16x8-export).
  XNNPACK has no int16 kernels: LiteRT's reference kernels run it, so it is
  for accuracy, and for accelerators with 16-bit activations, not for speed
  on a phone CPU.
"""

import contextlib
import logging
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from ai_edge_litert.schema_py_generated import BuiltinOperator

from mmkeras import compat
from mmkeras.data.manifest import Manifest, decoded_as, read_manifest
from mmkeras.errors import UserError
from mmkeras.export.hybrid_weights import float_grouped_convolutions
from mmkeras.export.int16x8_graph import int16x8_tracing
from mmkeras.export.integer_only_graph import integer_only_tracing
from mmkeras.framework_logs import native_stderr_silenced
from mmkeras.quantization.qat_settings import CALIBRATION_ROWS  # noqa: F401  (the default, for its importers)
from mmkeras.quantization.qat_transform import check_calibrated, is_quantized
from mmkeras.runtime.bundle import CALIBRATED_MODES, OUTPUT_NAME, QUANTIZATION_MODES
from mmkeras.runtime.interpreter import list_ops, load_interpreter

logger = logging.getLogger("mmkeras")

SIGNATURE_KEY = "serving_default"
BUILTIN_OP_NAMES = frozenset(name for name in vars(BuiltinOperator) if name.isupper()) - {"CUSTOM"}
# int8 calibration rows beyond `calibration_rows` (default CALIBRATION_ROWS) are a sample drawn with this seed.
CALIBRATION_SEED = 0
# Rows on which the exported model is compared with the Keras model (parity, and the accuracy check).
PARITY_ROWS = 256
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
# The dtype of an integer-only model's float inputs (image, modality mask) and of its logits. uint8, not int8:
# the browser runtime (LiteRT.js 2.5) has float32, int32 and uint8 tensors only ("Element type INT8 is not
# supported"), and the image's calibrated range is 0..255, so uint8 with scale 1 and zero point 0 is the raw
# pixel itself. The price: the converter adds a QUANTIZE (uint8 <-> int8, integer) at each of the three
# tensors (samples run: 222 ops, 219 with int8 I/O; docs/design.md#integer-only-export-end-to-end).
INTEGER_IO_TYPE = tf.uint8


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
    integer_only: bool = False,
) -> bytes:
    """Convert a Keras model with named inputs to LiteRT flatbuffer bytes.

    Args:
        model: a Keras model taking a dict of named inputs with static shapes
            (apart from the batch) and returning one tensor (the logits).
        quantize: `none`, `float16`, `dynamic`, `int8` or `int16x8` (see the
            module docstring).
        representative_inputs: for `int8` and `int16x8` only: an iterable of
            input dicts (batches, each array [N, ...]) to calibrate activation
            ranges on.
        keep_float: for `int8` only: op types (`BATCH_MATMUL`, ...) left
            float (selective quantization), chosen where int8 is slower on
            the target (`benchmarks/int8_op_profile.py`); in a QAT graph only
            ops without fake quantization stay float. When not empty, each
            layer norm's tail stays float too (`layer_norm_tail_names`).
        integer_only: for `int8` without `keep_float`: trace the model with
            integer-friendly layer norms and masked softmaxes
            (`integer_only_tracing`), allow only `TFLITE_BUILTINS_INT8`, and
            make the float inputs (image, modality mask) and the logits uint8
            tensors with a scale and zero point (`INTEGER_IO_TYPE`). The
            converter does not enforce the op set: `check_integer_only`
            checks the result.

    Raises:
        UnsupportedOpsError: the model needs Flex or custom ops.

    Example:
    >>> tflite_bytes = convert_model(model, quantize="dynamic")  # doctest: +SKIP
    """
    if quantize not in QUANTIZATION_MODES:
        raise UserError(f"quantize must be one of {', '.join(QUANTIZATION_MODES)}, got {quantize!r}")
    if (quantize in CALIBRATED_MODES) != (representative_inputs is not None):
        raise ValueError("representative_inputs are needed for int8 and int16x8, and only for them")
    if integer_only and (quantize != "int8" or tuple(keep_float)):
        raise ValueError("integer_only needs int8 and no keep_float")
    signature = device_signature(model)
    if is_quantized(model):
        check_calibrated(model)
    logger.info("converting to LiteRT (%s)", quantize)
    with tempfile.TemporaryDirectory(prefix="mmkeras-export-") as saved_model_dir:
        with tracing_for(quantize, integer_only):
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
        if integer_only:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = converter.inference_output_type = INTEGER_IO_TYPE
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantize == "int16x8":
            # The float builtins too: GREATER, CAST, SELECT_V2 and DIV have no 16x8 kernel and stay float.
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
                tf.lite.OpsSet.TFLITE_BUILTINS,
            ]
        if quantize in CALIBRATED_MODES:
            representative_inputs = list(representative_inputs)  # iterated again by a selective conversion
            rows = sum(len(next(iter(batch.values()))) for batch in representative_inputs)
            logger.info("%s: calibrating activation ranges on %d rows", quantize, rows)
            # Batch-1 examples made on each pass, not all kept: a real backbone's calibration rows are large.
            converter.representative_dataset = lambda: split_examples(representative_inputs, signature)
        try:
            with native_stderr_silenced():  # the converter prints its settings from C++
                # In a QAT graph the denylist reaches only ops without fake quantization (the others stay int8).
                keep_float = tuple(keep_float) if quantize == "int8" else ()
                tflite_model = convert_keeping_float(converter, keep_float) if keep_float else converter.convert()
        except Exception as error:
            unsupported = ops_needing_flex_or_custom(error)
            if unsupported:
                raise UnsupportedOpsError(unsupported) from None
            raise
    check_builtin_only(tflite_model)
    if quantize == "dynamic":
        tflite_model = float_grouped_convolutions(tflite_model)
    return tflite_model


def tracing_for(quantize: str, integer_only: bool):
    """The context the model is traced in for a conversion: Keras' own layers, or their integer-friendly forms."""
    if quantize == "int16x8":
        return int16x8_tracing()
    return integer_only_tracing() if integer_only else contextlib.nullcontext()


def convert_keeping_float(converter, op_types) -> bytes:
    """The int8 conversion with the ops of `op_types`, and each layer norm's tail, left float (selective quantization).

    One calibration: the converter's QuantizationDebugger calibrates the
    float graph once, the layer norms' tails are found in that calibrated
    graph (`layer_norm_tail_names`), and the quantizer runs on it again with
    them denylisted by output tensor name besides `op_types` by type
    (docs/design.md#int8-latency-on-xnnpack).
    """
    options = tf.lite.experimental.QuantizationDebugOptions
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter,
        debug_dataset=converter.representative_dataset,
        debug_options=options(denylisted_ops=list(op_types)),
    )
    tail = layer_norm_tail_names(debugger.calibrated_model)
    if tail:
        debugger.options = options(denylisted_ops=list(op_types), denylisted_nodes=tail)
    return debugger.get_nondebug_quantized_model()


def layer_norm_tail_names(tflite_model: bytes) -> list[str]:
    """Output tensor names of each RSQRT and of the ADD feeding it: a layer norm's `rsqrt(variance + epsilon)`.

    XNNPACK takes neither op in int8 (the ADD's operands have scales orders of
    magnitude apart: epsilon's ~4e-9 against the variance's ~4e-3), so each
    int8 one falls back to a builtin kernel and splits XNNPACK's graph; float
    they join the float SQUARED_DIFFERENCE before them (edge model: 20 -> 14
    partitions, PTQ and QAT int8 0.97x the latency of the int8 graph with
    them int8, accuracy equal). By name, not by type: the other ADDs
    (residuals) stay int8. An RSQRT fed by no ADD is listed alone.

    Example:
    >>> layer_norm_tail_names(tflite_bytes)[:2]  # doctest: +SKIP
    ['mmkeras_classifier_1/text_backbone_1/embeddings_layer_norm_1/add',
     'mmkeras_classifier_1/text_backbone_1/embeddings_layer_norm_1/Rsqrt']
    """
    interpreter = load_interpreter(tflite_model, default_delegates=False)
    names = {details["index"]: details["name"] for details in interpreter.get_tensor_details()}
    model_ops = compat.litert_ops_details(interpreter)
    producers = {index: op for op in model_ops for index in op["outputs"]}
    tail = []
    for op in model_ops:
        if op["op_name"] == "RSQRT":
            variance = producers.get(op["inputs"][0])
            if variance is not None and variance["op_name"] == "ADD":
                tail.append(names[variance["outputs"][0]])
            tail.append(names[op["outputs"][0]])
    return tail


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


def manifest_inputs(run, path: str | Path, max_rows: int) -> dict[str, np.ndarray]:
    """Model inputs for a seeded sample of at most `max_rows` of a manifest's rows."""
    rows = manifest_rows(run, path, max_rows)
    return run.preprocessor([row.text for row in rows], [row.image for row in rows])


def manifest_rows(run, path: str | Path, max_rows: int) -> list:
    """A seeded sample of at most `max_rows` of a manifest's rows, without those whose image does not read."""
    manifest = read_manifest(path, require_labels=False, columns=run.config.columns)
    rows = manifest.rows
    if len(rows) > max_rows:
        chosen = np.random.default_rng(CALIBRATION_SEED).choice(len(rows), max_rows, replace=False)
        rows = [rows[index] for index in sorted(chosen)]
    # Skipping (with a logged warning) like training's `--on-bad-row skip`: a
    # run trained that way must still export with its own manifest.
    sample, _ = Manifest(manifest.path, rows).validate_images(
        run.preprocessor.image_size, "skip", **decoded_as(run.preprocessor)
    )
    return sample.rows
