"""LiteRT conversion and bundle export of a tiny `build_model` model.

One run folder (random tiny BERT + ViT, cross-attention fusion, the samples'
labels) is exported once in each quantization mode; the tests share those
bundles because every conversion costs seconds.
"""

import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmkeras import compat
from mmkeras.data.manifest import read_manifest
from mmkeras.errors import UserError
from mmkeras.export import converter
from mmkeras.export.conversion_report import COMPUTE_OPS, op_summary
from mmkeras.export.converter import export_bundle, manifest_sample
from mmkeras.export.litert_conversion import UnsupportedOpsError, check_builtin_only, convert_model
from mmkeras.models import build_model
from mmkeras.quantization.run_loading import load_run
from mmkeras.runtime.bundle import INPUT_NAMES, read_bundle
from mmkeras.runtime.interpreter import list_ops, load_interpreter
from mmkeras.runtime.predictor import Predictor
from tests.helpers.cli import SAMPLES
from tests.helpers.tiny_runs import SEQUENCE_LENGTH, int8_tensor_scales, layer_norm_tail_dtypes, save_tiny_run

pytestmark = pytest.mark.slow  # four exports of one run, and more conversions in the tests



@keras.saving.register_keras_serializable(package="mmkeras_tests")
class RunningProduct(keras.layers.Layer):
    """Cumulative product: TensorFlow's Cumprod has no LiteRT builtin kernel (Flex only)."""

    def call(self, inputs):
        return keras.ops.cumprod(inputs, axis=-1)


def flex_model(preprocessor, num_classes: int) -> keras.Model:
    """The contract's four inputs -> Dense -> RunningProduct (a Flex op)."""
    height, width = preprocessor.image_size
    inputs = {
        "token_ids": keras.Input((SEQUENCE_LENGTH,), dtype="int32", name="token_ids"),
        "padding_mask": keras.Input((SEQUENCE_LENGTH,), dtype="int32", name="padding_mask"),
        "image": keras.Input((height, width, 3), name="image"),
        "modality_mask": keras.Input((2,), name="modality_mask"),
    }
    features = keras.layers.GlobalAveragePooling2D()(inputs["image"])
    logits = keras.layers.Dense(num_classes)(keras.layers.Concatenate()([features, inputs["modality_mask"]]))
    return keras.Model(inputs, RunningProduct()(logits))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return save_tiny_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def run(run_dir):
    return load_run(run_dir)


@pytest.fixture(scope="module")
def rows(run):
    """Validation rows plus a text-only and an image-only row."""
    val = read_manifest(SAMPLES / "val.csv").rows[:10]
    texts = [row.text for row in val] + [val[0].text, None]
    images = [row.image for row in val] + [None, val[1].image]
    return run.preprocessor(texts, images)


@pytest.fixture(scope="module")
def bundles(run_dir, tmp_path_factory):
    """mode -> (bundle folder, export report), one export per quantization mode."""
    root = tmp_path_factory.mktemp("bundles")
    return {
        mode: (root / mode, export_bundle(run_dir, root / mode, quantize=mode))
        for mode in ("none", "float16", "dynamic", "int8")
    }


def keras_logits(run, inputs):
    return keras.ops.convert_to_numpy(run.model(inputs, training=False))


def test_float_bundle_matches_keras_including_missing_modalities(bundles, run, rows):
    assert rows["modality_mask"][-2].tolist() == [1.0, 0.0] and rows["modality_mask"][-1].tolist() == [0.0, 1.0]
    bundle_dir, report = bundles["none"]
    litert = Predictor(bundle_dir).predict_inputs(rows)
    assert litert.shape == (len(rows["image"]), len(run.labels))
    assert np.max(np.abs(litert - keras_logits(run, rows))) <= 1e-4
    assert report["parity"]["rows"] == converter.PARITY_ROWS
    assert report["parity"]["max_abs_logit_diff"] <= 1e-4
    assert report["parity"]["label_agreement"] == 1.0


@pytest.mark.parametrize("mode, min_agreement", [("float16", 1.0), ("dynamic", 0.9), ("int8", 0.8)])
def test_quantized_bundles_run_and_stay_close(bundles, run, rows, mode, min_agreement):
    bundle_dir, report = bundles[mode]
    litert = Predictor(bundle_dir).predict_inputs(rows)
    expected = keras_logits(run, rows)
    assert litert.shape == expected.shape
    assert np.all(np.isfinite(litert))
    assert np.mean(litert.argmax(axis=1) == expected.argmax(axis=1)) >= min_agreement
    # Quantization really happened: the weights shrank.
    assert report["size_bytes"] < 0.7 * bundles["none"][1]["size_bytes"]
    assert report["quantize"] == mode


def test_quantization_modes_leave_the_expected_op_dtypes(bundles):
    def ops(mode):
        return list_ops(bundles[mode][0] / "model.tflite")

    float16_weights = [op for op in ops("float16") if op.name == "DEQUANTIZE" and op.input_dtypes == ("float16",)]
    assert float16_weights
    dynamic_matmuls = [op for op in ops("dynamic") if op.name == "FULLY_CONNECTED"]
    assert any("int8" in op.input_dtypes and op.output_dtypes == ("float32",) for op in dynamic_matmuls)
    int8_matmuls = [op for op in ops("int8") if op.name == "FULLY_CONNECTED"]
    assert int8_matmuls and all(op.output_dtypes == ("int8",) for op in int8_matmuls)
    summary = bundles["int8"][1]["ops"]
    assert summary["by_output_dtype"]["int8"] > summary["total"] / 2
    assert sum(summary["by_type"].values()) == summary["total"] == len(ops("int8"))


def test_bundle_json_describes_the_model(bundles, run):
    bundle_dir, _ = bundles["int8"]
    bundle = read_bundle(bundle_dir)
    assert [tensor["name"] for tensor in bundle["inputs"]] == list(INPUT_NAMES)
    shapes = {tensor["name"]: tensor["shape"] for tensor in bundle["inputs"]}
    assert shapes == {
        "token_ids": [1, SEQUENCE_LENGTH],
        "padding_mask": [1, SEQUENCE_LENGTH],
        "image": [1, *run.preprocessor.image_size, 3],
        "modality_mask": [1, 2],
    }
    # int8 keeps float inputs and outputs: nothing for the device to quantize.
    assert [tensor["dtype"] for tensor in bundle["inputs"]] == ["int32", "int32", "float32", "float32"]
    assert all(tensor["quantization"] is None for tensor in bundle["inputs"])
    logits = {"name": "logits", "shape": [1, len(run.labels)], "dtype": "float32", "quantization": None}
    assert bundle["output"] == logits
    assert bundle["labels"] == run.labels
    assert bundle["quantization"] == "int8"
    assert bundle["preprocessing"] == run.preprocessor.get_config()
    assert Path(bundle["source_run"]) == Path(run.path).resolve()


def test_int8_calibration_sample_is_seeded_and_bounded(run):
    first = manifest_sample(run, None, required=True)
    again = manifest_sample(run, None, required=True)
    assert len(first["image"]) == converter.CALIBRATION_ROWS < len(read_manifest(SAMPLES / "train.csv").rows)
    assert all(np.array_equal(first[name], again[name]) for name in INPUT_NAMES)
    given = manifest_sample(run, SAMPLES / "val.csv", required=True)
    assert len(given["image"]) == len(read_manifest(SAMPLES / "val.csv").rows)


def test_int8_without_any_manifest_is_a_user_error(run, tmp_path):
    moved = tmp_path / "run"
    shutil.copytree(run.path, moved)
    (moved / "config.yaml").write_text(f"data: {tmp_path / 'gone.csv'}\nsequence_length: {SEQUENCE_LENGTH}\n")
    with pytest.raises(UserError, match="--calibration-data"):
        export_bundle(moved, tmp_path / "bundle", quantize="int8")
    with pytest.raises(UserError, match="missing.csv"):
        export_bundle(moved, tmp_path / "bundle", quantize="int8", calibration_data=tmp_path / "missing.csv")
    assert not (tmp_path / "bundle").exists()


def test_a_model_needing_flex_ops_is_refused_naming_them(run):
    with pytest.raises(UnsupportedOpsError, match="Cumprod") as caught:
        convert_model(flex_model(run.preprocessor, len(run.labels)))
    assert caught.value.ops == ["Cumprod"]
    assert isinstance(caught.value, UserError)


def test_a_flex_or_empty_conversion_result_is_refused():
    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    def running_product(values):
        return tf.math.cumprod(values, axis=-1)

    flex_converter = tf.lite.TFLiteConverter.from_concrete_functions([running_product.get_concrete_function()])
    flex_converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    with pytest.raises(UnsupportedOpsError, match="FlexCumprod"):
        check_builtin_only(flex_converter.convert())
    with pytest.raises(RuntimeError, match="empty"):
        check_builtin_only(b"")


def folder_snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_failed_conversion_keeps_the_existing_bundle(bundles, run, tmp_path):
    flex_run = save_tiny_run(tmp_path / "flex_run", flex_model(run.preprocessor, len(run.labels)), run.preprocessor)
    out_dir = tmp_path / "bundles" / "current"
    shutil.copytree(bundles["none"][0], out_dir)
    before = folder_snapshot(out_dir)
    with pytest.raises(UnsupportedOpsError):
        export_bundle(flex_run, out_dir)
    assert folder_snapshot(out_dir) == before
    assert [path.name for path in out_dir.parent.iterdir()] == ["current"]


@pytest.mark.parametrize("existing", [False, True])
def test_failure_after_writing_leaves_no_partial_bundle(bundles, run_dir, tmp_path, monkeypatch, existing):
    float_model = (bundles["none"][0] / "model.tflite").read_bytes()
    monkeypatch.setattr(converter, "convert_model", lambda model, **settings: float_model)
    written = []

    def fail_parity(*arguments):
        written.extend(path.name for path in tmp_path.glob(".bundle.partial-*/*"))
        raise RuntimeError("interrupted")

    monkeypatch.setattr(converter, "parity_report", fail_parity)
    out_dir = tmp_path / "bundle"
    if existing:
        shutil.copytree(bundles["dynamic"][0], out_dir)
    before = folder_snapshot(out_dir) if existing else None
    with pytest.raises(RuntimeError, match="interrupted"):
        export_bundle(run_dir, out_dir)
    bundle_files = ["bundle.json", "model.tflite", "preprocessor.json", "tokenizer.json"]
    assert sorted(written) == [".export-unfinished", *bundle_files]
    assert [path.name for path in tmp_path.iterdir()] == (["bundle"] if existing else [])
    assert (folder_snapshot(out_dir) if existing else None) == before


def test_export_replaces_an_existing_bundle_completely(bundles, run_dir, tmp_path, monkeypatch):
    float_model = (bundles["none"][0] / "model.tflite").read_bytes()
    monkeypatch.setattr(converter, "convert_model", lambda model, **settings: float_model)
    out_dir = tmp_path / "bundle"
    shutil.copytree(bundles["int8"][0], out_dir)
    (out_dir / "notes.txt").write_text("the user's, kept beside the bundle")
    with pytest.raises(UserError, match="the bundle folder also holds notes.txt, which replacing it would delete"):
        export_bundle(run_dir, out_dir, quantize="none")
    (out_dir / "notes.txt").unlink()
    report = export_bundle(run_dir, out_dir, quantize="none")
    assert read_bundle(out_dir)["quantization"] == "none"
    assert (out_dir / "model.tflite").read_bytes() == float_model
    assert sorted(path.name for path in out_dir.iterdir()) == [
        "bundle.json", "model.tflite", "preprocessor.json", "test_vectors", "test_vectors.json", "tokenizer.json"
    ]
    assert [path.name for path in tmp_path.iterdir()] == ["bundle"]
    assert report["path"] == str(out_dir) and report["size_bytes"] == len(float_model)


def test_export_refuses_to_replace_a_folder_that_is_not_a_bundle(run_dir, tmp_path):
    out_dir = tmp_path / "photos"
    out_dir.mkdir()
    (out_dir / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(UserError, match="not replacing"):
        export_bundle(run_dir, out_dir)
    assert (out_dir / "holiday.jpg").read_bytes() == b"precious"


def test_unknown_quantization_mode_is_a_user_error(run_dir, tmp_path):
    with pytest.raises(UserError, match="quantize must be one of"):
        export_bundle(run_dir, tmp_path / "bundle", quantize="int4")


def test_op_listing_names_ops_and_tensor_dtypes(bundles):
    model_bytes = (bundles["none"][0] / "model.tflite").read_bytes()
    ops = list_ops(model_bytes)
    assert [op.index for op in ops] == list(range(len(ops)))
    gather = next(op for op in ops if op.name == "GATHER")  # the token embedding lookup
    assert "int32" in gather.input_dtypes and gather.output_dtypes == ("float32",)
    assert op_summary(model_bytes)["by_type"]["FULLY_CONNECTED"] == sum(op.name == "FULLY_CONNECTED" for op in ops)


def test_conversion_report_counts_compute_ops_by_precision_and_is_stored(bundles):
    compute = {mode: report["ops"]["compute_ops"] for mode, (_, report) in bundles.items()}
    assert compute["none"]["float"] == compute["none"]["total"] > 0 and compute["none"]["int8_fraction"] == 0
    assert compute["float16"]["float"] == compute["float16"]["total"]
    assert compute["dynamic"]["hybrid"] > 0 and compute["dynamic"]["int8"] == 0
    # The attention matmuls stay float (`FLOAT_OPS_IN_INT8`); every other compute op is int8.
    matmuls = bundles["int8"][1]["ops"]["by_type"]["BATCH_MATMUL"]
    assert compute["int8"]["float"] == matmuls > 0 and compute["int8"]["int8"] == compute["int8"]["total"] - matmuls
    for mode, (bundle_dir, _) in bundles.items():
        conversion = read_bundle(bundle_dir)["conversion"]
        assert conversion["quantize"] == mode and conversion["qat"] is False
        assert conversion["ops"]["compute_ops"] == compute[mode]
        assert conversion["parity"]["source"] == "calibration"


def test_dynamic_keeps_grouped_convolution_weights_float():
    # XNNPACK has no hybrid grouped convolution (keras-hub MobileNet's depthwise stages); the builtin one is slow.
    texts = ["a red circle", "a blue square"]
    model, _ = build_model("tiny", "tiny-mobilenet", num_classes=2, texts=texts, sequence_length=8, seed=0)
    interpreter = load_interpreter(convert_model(model, quantize="dynamic"), default_delegates=False)
    tensors = {details["index"]: details for details in interpreter.get_tensor_details()}
    weights = {"grouped": set(), "ordinary": set()}
    for op in compat.litert_ops_details(interpreter):
        if op["op_name"] == "CONV_2D":
            activations, kernel = (tensors[index] for index in op["inputs"][:2])
            kind = "grouped" if kernel["shape"][-1] != activations["shape"][-1] else "ordinary"
            weights[kind].add(np.dtype(kernel["dtype"]).name)
    assert weights == {"grouped": {"float32"}, "ordinary": {"int8", "float32"}}  # small kernels stay float anyway


def test_int8_keeps_hard_swish_float_for_xnnpack(tmp_path):
    # XNNPACK has no int8 HARD_SWISH (the builtin int8 kernel is many times slower than float).
    texts = ["a red circle", "a blue square"]
    model, preprocessor = build_model("tiny", "tiny-mobilenet", num_classes=2, texts=texts, sequence_length=8, seed=0)
    inputs = preprocessor(texts, [None, None])
    ops = list_ops(convert_model(model, quantize="int8", representative_inputs=[inputs]))
    hard_swish = [op for op in ops if op.name == "HARD_SWISH"]
    assert hard_swish and all(op.output_dtypes == ("float32",) for op in hard_swish)
    compute = [op for op in ops if op.name in COMPUTE_OPS and op.name != "BATCH_MATMUL"]  # attention stays float
    assert compute and all(op.output_dtypes == ("int8",) for op in compute)


def op_dtypes(model, op_type) -> set[str]:
    return {dtype for op in list_ops(model) if op.name == op_type for dtype in op.output_dtypes}


def test_post_training_int8_keeps_the_attention_mask_path_float(bundles):
    # Keras' masked softmax fills masked scores with -1e9; calibrated, that tensor's int8 scale was ~3.9e6,
    # shared with the scores (SELECT_V2, TRANSPOSE), and every real score rounded to one value.
    int8_model = bundles["int8"][0] / "model.tflite"
    assert op_dtypes(int8_model, "SELECT_V2") == {"float32"}
    assert {"SELECT_V2", "TRANSPOSE"} <= set(bundles["int8"][1]["kept_float"])
    scales = int8_tensor_scales(int8_model)
    assert scales and max(scales.values()) < 100.0, max(scales.items(), key=lambda item: item[1])


def test_int8_keeps_attention_and_layer_norm_variance_float_by_default_and_reports_them(bundles):
    # Chosen by measured ablation: XNNPACK runs these only in float.
    int8_model = bundles["int8"][0] / "model.tflite"
    for op_type in ("BATCH_MATMUL", "SOFTMAX", "SQUARED_DIFFERENCE"):
        assert op_dtypes(int8_model, op_type) == {"float32"}, op_type
        assert op_type in bundles["int8"][1]["kept_float"]
    assert set(bundles["int8"][1]["kept_float"]) <= set(converter.FLOAT_OPS_IN_INT8)
    assert op_dtypes(int8_model, "FULLY_CONNECTED") == {"int8"}
    assert bundles["none"][1]["kept_float"] == []


def test_int8_keeps_each_layer_norm_tail_float_and_every_matmul_and_convolution_int8(bundles):
    # XNNPACK takes neither an int8 `variance + epsilon` ADD nor an int8 RSQRT: each split its graph (the edge
    # model's partitions 20 -> 14). The bundle's agreement with Keras: test_quantized_bundles_run_and_stay_close.
    int8_model = bundles["int8"][0] / "model.tflite"
    tails = layer_norm_tail_dtypes(int8_model)
    assert tails and set(tails) == {("float32", "float32")}
    assert op_dtypes(int8_model, "ADD") >= {"int8", "float32"}  # by name, not by type: the residual adds stay int8
    assert op_dtypes(int8_model, "FULLY_CONNECTED") == op_dtypes(int8_model, "CONV_2D") == {"int8"}
    assert bundles["int8"][1]["parity"]["label_agreement"] >= 0.8


def test_int8_keeps_the_chosen_op_types_float_and_reports_them(run_dir, bundles, tmp_path):
    report = export_bundle(run_dir, tmp_path / "selective", quantize="int8", keep_float=["GELU"])
    assert report["kept_float"] == sorted({"GELU", *bundles["int8"][1]["kept_float"]})
    assert op_dtypes(bundles["int8"][0] / "model.tflite", "GELU") == {"int8"}
    assert op_dtypes(tmp_path / "selective" / "model.tflite", "GELU") == {"float32"}


def test_an_unknown_op_type_to_keep_float_is_a_user_error(run_dir, tmp_path):
    with pytest.raises(UserError, match="not LiteRT builtin op types: BATCHMATMUL"):
        export_bundle(run_dir, tmp_path / "bundle", quantize="int8", keep_float=["BATCHMATMUL"])
