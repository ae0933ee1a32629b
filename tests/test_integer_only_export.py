"""`export --integer-only`: every op integer, uint8 image and logits described in bundle.json, the runtime
quantizing and dequantizing them; a model that keeps a float op is refused in one line naming it and its layer."""

import csv
import json

import keras
import numpy as np
import pytest

from mmkeras.data.manifest import read_manifest
from mmkeras.errors import UserError
from mmkeras.export.conversion_report import quality_warning
from mmkeras.export.converter import export_bundle
from mmkeras.export.integer_only import FloatOpsError, check_integer_only, float_ops
from mmkeras.models import build_model
from mmkeras.runtime.interpreter import list_ops
from mmkeras.runtime.predictor import Predictor
from mmkeras.runtime.test_vectors import verify_bundle
from tests.helpers.cli import SAMPLES, run_cli
from tests.helpers.tiny_runs import SEQUENCE_LENGTH, int8_tensor_scales, save_tiny_run

# The integer-only bundle against the Keras model on the session's 2-epoch samples run (`samples_run`), 32
# validation rows. That run is near chance (float accuracy 0.16), its logits close to ties, so labels flip
# easily: measured agreement 29 of 32 (the default int8 bundle 31 of 32), max logit difference 0.63.
# A runtime that fed unscaled pixels or read the int8 logits raw would be near chance (about 1 in 6).
INTEGER_ONLY_AGREEMENT = 28 / 32
INTEGER_ONLY_LOGIT_ERROR = 1.0


def test_integer_only_is_refused_without_int8_or_with_keep_float(tmp_path):
    with pytest.raises(UserError, match="--integer-only needs --quantize int8"):
        export_bundle(tmp_path / "no-run", tmp_path / "bundle", quantize="dynamic", integer_only=True)
    with pytest.raises(UserError, match="no --keep-float"):
        export_bundle(tmp_path / "no-run", tmp_path / "bundle", quantize="int8", keep_float=["GELU"],
                      integer_only=True)
    assert not (tmp_path / "bundle").exists()


def test_the_loss_warning_of_an_integer_only_bundle_names_the_integer_only_remedies():
    report = {"quantize": "int8", "qat": False, "integer_only": True, "ops": {"by_type": {"CONV_2D": 4}},
              "parity": {"rows": 100, "source": "validation", "label_agreement": 0.9, "float_accuracy": 0.8,
                         "accuracy": 0.75, "accuracy_drop": 0.05}}
    assert quality_warning(report).endswith(
        "try: mmkeras qat --integer-only, then export --integer-only; export without --integer-only (then --keep-float)"
    )
    assert quality_warning({**report, "qat": True}).endswith("try: export without --integer-only (then --keep-float)")


@pytest.fixture(scope="module")
def integer_only_tiny_bundle(tmp_path_factory):
    """`export_bundle(..., quantize="int8", integer_only=True)` of an untrained tiny run: (run, bundle, report)."""
    folder = tmp_path_factory.mktemp("integer_only")
    run_dir = save_tiny_run(folder / "run")
    bundle = folder / "bundle"
    report = export_bundle(run_dir, bundle, quantize="int8", integer_only=True, calibration_rows=16)
    return run_dir, bundle, report


@pytest.mark.slow
def test_an_integer_only_bundle_has_no_float_op_and_uint8_image_and_logits(integer_only_tiny_bundle):
    _, bundle, report = integer_only_tiny_bundle
    model = (bundle / "model.tflite").read_bytes()
    assert float_ops(model) == {}
    assert all(dtype != "float32" for op in list_ops(model) for dtype in op.output_dtypes)
    assert report["integer_only"] and report["ops"]["compute_ops"]["int8_fraction"] == 1.0
    values = json.loads((bundle / "bundle.json").read_text())
    tensors = {tensor["name"]: tensor for tensor in [*values["inputs"], values["output"]]}
    for name in ("image", "modality_mask", "logits"):
        assert tensors[name]["dtype"] == "uint8" and tensors[name]["quantization"]["scale"] > 0, tensors[name]
    # The image's range is 0..255: the uint8 input is the pixel itself.
    assert tensors["image"]["quantization"] == {"scale": 1.0, "zero_point": 0}
    assert tensors["token_ids"]["dtype"] == "int32" and tensors["token_ids"]["quantization"] is None
    # No -1e9 of a masked softmax in a calibrated range (it gave the scores a scale of ~3.9e6).
    assert max(int8_tensor_scales(model).values()) < 100
    # The test vectors the export recorded hold for the runtime (logits within one step of the int8 output).
    assert verify_bundle(bundle)["passed"]


@pytest.mark.slow
def test_a_model_that_keeps_a_float_op_is_refused_naming_the_op_and_its_layer(integer_only_tiny_bundle, tmp_path):
    """A default int8 export keeps the attention's softmax float: `check_integer_only` names it and where."""
    run_dir, _, _ = integer_only_tiny_bundle
    export_bundle(run_dir, tmp_path / "int8", quantize="int8", calibration_rows=8)
    with pytest.raises(FloatOpsError) as raised:
        check_integer_only((tmp_path / "int8" / "model.tflite").read_bytes())
    message = str(raised.value)
    assert message.startswith("--integer-only: ops still produce float32: ") and "\n" not in message
    assert "SOFTMAX x4 (in fusion/" in message and "nothing written" in message


@pytest.mark.slow
def test_export_refuses_a_run_whose_model_keeps_a_float_op_in_one_line_and_writes_nothing(tmp_path, capsys):
    """A sine after the logits: LiteRT has no int8 SIN, so the converter leaves it float between DEQUANTIZE and
    QUANTIZE; the one error line names both and where they are (after the `logits` layer)."""
    model, preprocessor = build_model(num_classes=len(read_manifest(SAMPLES / "train.csv").labels()),
                                      texts=["a red circle"], sequence_length=SEQUENCE_LENGTH, seed=0)
    run_dir = save_tiny_run(tmp_path / "run", keras.Model(model.input, keras.ops.sin(model.output)), preprocessor)
    code, _, err = run_cli(capsys, "export", run_dir, "--out", tmp_path / "bundle", "--quantize", "int8",
                           "--integer-only", "--calibration-rows", "8")
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(error_lines) == 1, err
    assert error_lines[0].startswith("error: --integer-only: ops still produce float32: ")
    assert "SIN x1 (after logits)" in error_lines[0] and "nothing written" in error_lines[0]
    assert "Traceback" not in err and not (tmp_path / "bundle").exists()


@pytest.mark.slow
def test_the_integer_only_bundle_predicts_the_keras_models_labels(samples_run, tmp_path, capsys):
    """Runtime parity: `mmkeras predict` with the integer-only bundle against the Keras model, same rows."""
    from mmkeras.quantization.run_loading import load_run

    bundle = tmp_path / "bundle"
    code, out, err = run_cli(capsys, "export", samples_run["run"], "--out", bundle, "--quantize", "int8",
                             "--integer-only")
    assert code == 0, err
    assert "integer-only: image uint8 (scale 1, zero point 0), modality_mask uint8" in out  # what the device feeds
    code, _, err = run_cli(capsys, "predict", bundle, "--data", samples_run["val"], "--out", tmp_path / "p.csv")
    assert code == 0, err
    with (tmp_path / "p.csv").open(newline="", encoding="utf-8") as handle:
        predicted = [row["prediction"] for row in csv.DictReader(handle)]
    run = load_run(samples_run["run"])
    with samples_run["val"].open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    inputs = run.preprocessor([row["text"] for row in rows], [row["image"] or None for row in rows])
    keras_logits = run.model.predict(inputs, verbose=0)
    keras_labels = [run.labels[index] for index in np.argmax(keras_logits, axis=-1)]
    agreement = np.mean([a == b for a, b in zip(predicted, keras_labels)])
    assert len(predicted) == len(rows) and agreement >= INTEGER_ONLY_AGREEMENT, agreement
    # The runtime quantized the image and modality mask and dequantized the int8 logits.
    bundle_logits = Predictor(bundle).predict_inputs(inputs)
    assert np.abs(bundle_logits - keras_logits).max() < INTEGER_ONLY_LOGIT_ERROR
    code, out, err = run_cli(capsys, "evaluate", bundle, "--data", samples_run["val"], "--json")
    assert code == 0, err
    keras_accuracy = np.mean([label == row["label"] for label, row in zip(keras_labels, rows)])
    assert abs(json.loads(out)["accuracy"] - keras_accuracy) <= 1 - INTEGER_ONLY_AGREEMENT


@pytest.mark.slow
def test_qat_integer_only_then_an_integer_only_export(samples_run, tmp_path, capsys):
    """`qat --integer-only` fake-quantizes the attention too; its integer-only export has no float op."""
    qat_dir, bundle = tmp_path / "qat", tmp_path / "bundle"
    code, _, err = run_cli(capsys, "qat", samples_run["run"], "--data", samples_run["train"], "--out", qat_dir,
                           "--epochs", "1", "--integer-only")
    assert code == 0, err
    settings = json.loads((qat_dir / "quantization.json").read_text())["settings"]
    assert settings["integer_only"] is True
    code, _, err = run_cli(capsys, "export", qat_dir, "--out", bundle, "--quantize", "int8", "--integer-only",
                           "--json")
    assert code == 0, err
    conversion = json.loads((bundle / "bundle.json").read_text())["conversion"]
    assert conversion["qat"] and conversion["integer_only"]
    assert "float32" not in conversion["ops"]["by_output_dtype"]
    assert max(int8_tensor_scales((bundle / "model.tflite").read_bytes()).values()) < 100
