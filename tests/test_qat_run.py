"""QAT end to end in Python: fine-tune a tiny float run, reload the QAT run exactly, export int8."""

import dataclasses
import json
from pathlib import Path

import keras
import numpy as np
import pytest

from mmkeras.config import RunConfig
from mmkeras.data.manifest import read_manifest
from mmkeras.errors import UserError
from mmkeras.evaluation.evaluate import evaluate
from mmkeras.export.conversion_report import COMPUTE_OPS, describe_report
from mmkeras.export.converter import BUILTIN_OP_NAMES, export_bundle
from mmkeras.models import build_model
from mmkeras.models.text_backbones import freeze_pooler
from mmkeras.quantization.qat_settings import QATSettings, QuantizerSettings
from mmkeras.quantization.qat_training import qat_finetune
from mmkeras.quantization.qat_transform import activation_quantizers, calibrate_ranges, quantize_model
from mmkeras.quantization.run_loading import load_run
from mmkeras.runs import QAT_WEIGHTS_FILE, QUANTIZATION_FILE, save_run
from mmkeras.runtime.bundle import read_bundle
from mmkeras.runtime.interpreter import list_ops
from mmkeras.runtime.predictor import Predictor
from tests.helpers.cli import write_subset
from tests.helpers.tiny_runs import int8_tensor_scales, layer_norm_tail_dtypes

pytestmark = pytest.mark.slow  # QAT fine-tuning and an int8 export, shared by most tests

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
SEQUENCE_LENGTH = 16


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    return write_subset(SAMPLES / "train.csv", folder / "train.csv", 64), write_subset(
        SAMPLES / "val.csv", folder / "val.csv", 16
    )


@pytest.fixture(scope="module")
def float_run(data, tmp_path_factory):
    """A float run of a random tiny BERT + MobileNet model (QAT fine-tunes it from scratch-like weights)."""
    train, val = data
    manifest = read_manifest(train)
    labels = manifest.labels()
    model, preprocessor = build_model(
        "tiny", "tiny-mobilenet", num_classes=len(labels), texts=[row.text for row in manifest.rows if row.text],
        sequence_length=SEQUENCE_LENGTH, seed=0,
    )
    run_dir = tmp_path_factory.mktemp("runs") / "float"
    config = RunConfig(data=str(train), val=str(val), out=str(run_dir), sequence_length=SEQUENCE_LENGTH, seed=3)
    save_run(run_dir, model=model, preprocessor=preprocessor, labels=labels, config=config)
    return run_dir


@pytest.fixture(scope="module")
def qat_run(float_run, data):
    train, val = data
    out = float_run.parent / "qat"
    settings = QATSettings(epochs=3, learning_rate=3e-3, batch_size=16, calibration_batches=2)
    return out, qat_finetune(float_run, train, out, val=val, settings=settings).metrics


@pytest.fixture(scope="module")
def int8_bundle(qat_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "int8"
    return out, export_bundle(qat_run[0], out, quantize="int8")


def test_qat_training_lowers_the_loss_and_writes_a_qat_run(qat_run, data):
    run_dir, metrics = qat_run
    assert metrics["epochs_completed"] == 3 and len(metrics["epoch_seconds"]) == 3
    assert metrics["loss"] < metrics["initial_loss"]
    # The same measure as `initial_loss` (inference mode, all training rows), on the reloaded QAT run.
    run = load_run(run_dir)
    manifest = read_manifest(data[0])
    inputs = run.preprocessor([row.text for row in manifest.rows], [row.image for row in manifest.rows])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
        manifest.encode_labels(run.labels), run.model(inputs, training=False)
    )
    assert float(loss) < metrics["initial_loss"]
    assert metrics["final_loss"] == pytest.approx(float(loss), abs=1e-3)  # like with like: what the summary shows
    assert len(json.loads((run_dir / "history.json").read_text())["val_accuracy"]) == 3  # validation each epoch
    assert 0.0 <= metrics["val_accuracy"] <= 1.0
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics
    quantization = json.loads((run_dir / QUANTIZATION_FILE).read_text())
    assert quantization["settings"] == dataclasses.asdict(QuantizerSettings())
    assert quantization["settings"]["float_attention"] is True
    assert (run_dir / QAT_WEIGHTS_FILE).is_file()


@pytest.mark.parametrize("settings, saved_settings", [
    (QuantizerSettings(), {"num_bits": 8, "ema_decay": 0.99, "integer_only": False, "float_attention": True}),
    # written before float_attention existed: the whole attention fake-quantized
    (QuantizerSettings(float_attention=False), {"num_bits": 8, "ema_decay": 0.99, "integer_only": False}),
    # written before integer_only existed: hard-swish fake-quantized too
    (QuantizerSettings(integer_only=True), {"num_bits": 8, "ema_decay": 0.99}),
])
def test_a_qat_run_reloads_exactly(float_run, data, tmp_path, settings, saved_settings):
    run = load_run(float_run)
    qat_model = quantize_model(run.model, settings)
    inputs = run.preprocessor(["a red circle", None], [None, SAMPLES / read_manifest(data[0]).rows[0].image])
    calibrate_ranges(qat_model, [inputs])
    qat_model.get_layer("logits").kernel.assign(qat_model.get_layer("logits").kernel * 1.5)  # not the float weights
    save_run(
        tmp_path / "qat", model=qat_model, preprocessor=run.preprocessor, labels=run.labels, config=run.config,
        quantization={"settings": saved_settings}, float_model_file=run.float_model_file,
    )
    reloaded = load_run(tmp_path / "qat")
    assert reloaded.quantization["settings"]["num_bits"] == 8
    expected = keras.ops.convert_to_numpy(qat_model(inputs, training=False))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(reloaded.model(inputs, training=False)), expected)
    ranges = [(q.range_min.numpy(), q.range_max.numpy()) for q in activation_quantizers(qat_model)]
    assert ranges == [(q.range_min.numpy(), q.range_max.numpy()) for q in activation_quantizers(reloaded.model)]


def test_int8_export_of_a_qat_run_is_integer_and_builtin_only(int8_bundle):
    bundle_dir, report = int8_bundle
    ops = list_ops(bundle_dir / "model.tflite")
    assert all(op.name in BUILTIN_OP_NAMES for op in ops)  # no Flex, no custom op
    compute = [op for op in ops if op.name in COMPUTE_OPS]
    int8 = [op for op in compute if op.output_dtypes == ("int8",)]
    assert {"FULLY_CONNECTED", "CONV_2D"} <= {op.name for op in int8}
    assert all(op in int8 for op in compute if op.name != "BATCH_MATMUL")
    assert report["qat"] is True
    assert report["ops"]["compute_ops"]["int8"] == len(int8)


def test_int8_export_of_a_qat_run_keeps_attention_hard_swish_and_layer_norm_variance_float(int8_bundle):
    # None has fake quantization, so the export's float op types reach them as in a post-training int8 export.
    bundle_dir, report = int8_bundle
    outputs = {}
    for op in list_ops(bundle_dir / "model.tflite"):
        outputs.setdefault(op.name, set()).update(op.output_dtypes)
    assert outputs["BATCH_MATMUL"] == outputs["HARD_SWISH"] == outputs["SOFTMAX"] == {"float32"}
    assert report["kept_float"] == ["BATCH_MATMUL", "HARD_SWISH", "SOFTMAX", "SQUARED_DIFFERENCE"]


def test_int8_export_of_a_qat_run_keeps_each_layer_norm_tail_float(int8_bundle):
    # Neither `variance + epsilon` nor its RSQRT has fake quantization; XNNPACK takes neither in int8.
    tails = layer_norm_tail_dtypes(int8_bundle[0] / "model.tflite")
    assert tails and set(tails) == {("float32", "float32")}
    report = int8_bundle[1]
    assert report["kept_float_layer_norm_tails"] == len(tails)  # each tail: its ADD and RSQRT
    assert f"; the tail (variance + epsilon, RSQRT) of {len(tails)} layer norms" in describe_report(report)


def test_int8_export_of_a_qat_run_with_padding_keeps_the_attention_mask_path_float(int8_bundle):
    # Masked attention scores are -1e9 (Keras' masked softmax). Calibrated in int8, their scale became
    # ~1e9 / 255, shared with the scores themselves, and every real score rounded to one value.
    bundle_dir, _ = int8_bundle
    assert "float32" in {dtype for op in list_ops(bundle_dir / "model.tflite") if op.name == "SELECT_V2"
                         for dtype in op.output_dtypes}
    scales = int8_tensor_scales(bundle_dir / "model.tflite")
    assert scales and max(scales.values()) < 100.0, max(scales.items(), key=lambda item: item[1])


def test_the_conversion_report_is_stored_in_the_bundle(int8_bundle, qat_run, data):
    bundle_dir, report = int8_bundle
    conversion = read_bundle(bundle_dir)["conversion"]
    assert conversion == json.loads(json.dumps({key: value for key, value in report.items() if key != "path"}))
    # Parity is measured on the run's validation rows (all 16 here): recompute it independently.
    run = load_run(qat_run[0])
    rows = read_manifest(data[1]).rows
    inputs = run.preprocessor([row.text for row in rows], [row.image for row in rows])
    expected = keras.ops.convert_to_numpy(run.model(inputs, training=False))
    actual = Predictor(bundle_dir).predict_inputs(inputs)
    parity = conversion["parity"]
    assert parity["source"] == "validation" and parity["rows"] == len(rows) == 16
    assert parity["label_agreement"] == float(np.mean(actual.argmax(axis=1) == expected.argmax(axis=1)))
    assert parity["max_abs_logit_diff"] == pytest.approx(float(np.max(np.abs(actual - expected))), rel=1e-4)


def test_runtime_runs_the_int8_bundle_with_float_inputs(int8_bundle, qat_run, data):
    bundle_dir, _ = int8_bundle
    bundle = read_bundle(bundle_dir)
    assert bundle["quantization"] == "int8" and bundle["output"]["dtype"] == "float32"
    row = read_manifest(data[1]).rows[0]
    prediction = Predictor(bundle_dir).predict(row.text, row.image)
    assert prediction.label in bundle["labels"]
    assert sum(prediction.scores.values()) == pytest.approx(1.0, abs=1e-5)


def test_evaluate_accepts_a_qat_run_and_its_int8_bundle(qat_run, int8_bundle, data):
    keras_figures = evaluate(qat_run[0], data[1])
    litert_figures = evaluate(int8_bundle[0], data[1])
    # Accepting a QAT run means evaluating the QAT (fake-quantized) model; how close int8 stays to
    # it is measured by the parity report and the benchmarks, not on 16 rows of a barely trained model.
    for figures in (keras_figures, litert_figures):
        assert figures["n"] == 16 and np.sum(figures["confusion_matrix"]) == 16


# "tiny" is keras-hub's VGGBackbone, whose own config drops name and trainable (mmkeras.models.vgg_backbone).
@pytest.mark.parametrize("vision", ["tiny-mobilenet", "tiny"])
def test_a_reloaded_run_keeps_its_frozen_backbone_frozen(data, tmp_path, vision):
    """QAT trains `load_run(...).model.trainable_variables`: a backbone frozen in training stays frozen."""
    manifest = read_manifest(data[0])
    model, preprocessor = build_model(
        "tiny", vision, num_classes=len(manifest.labels()), texts=["a red circle"],
        sequence_length=SEQUENCE_LENGTH, seed=0,
    )  # fmt: skip
    model.get_layer("vision_backbone").trainable = False
    expected = {variable.path for variable in model.trainable_variables}
    config = RunConfig(data=str(data[0]), sequence_length=SEQUENCE_LENGTH, vision_backbone=vision, freeze="vision")
    save_run(tmp_path / "run", model=model, preprocessor=preprocessor, labels=manifest.labels(), config=config)
    reloaded = load_run(tmp_path / "run").model
    freeze_pooler(reloaded.get_layer("text_backbone"))  # a flag .keras loses; QAT sets it again, too
    assert {variable.path for variable in reloaded.trainable_variables} == expected
    assert not reloaded.get_layer("vision_backbone").trainable_variables


def test_qat_refuses_to_overwrite_the_float_run(float_run, data):
    with pytest.raises(UserError, match="new folder"):
        qat_finetune(float_run, data[0], float_run)


def test_qat_refuses_an_unknown_strategy(float_run, data, tmp_path):
    with pytest.raises(UserError, match="strategy must be one of auto, one, mirrored, multi-worker"):
        qat_finetune(float_run, data[0], tmp_path / "qat", settings=QATSettings(strategy="tpu-pod"))
    assert not (tmp_path / "qat").exists()
