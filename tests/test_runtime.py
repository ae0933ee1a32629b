"""The device runtime: `Predictor`, the interpreter loader, and running without TensorFlow."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from mmkeras.data.manifest import read_manifest
from mmkeras.errors import UserError
from mmkeras.preprocessing.text_cleaning import InvalidTextError
from mmkeras.runtime.bundle import INPUT_NAMES
from mmkeras.runtime.interpreter import LiteRTModel, interpreter_module, usable_threads
from mmkeras.runtime.outputs import softmax
from mmkeras.runtime.predictor import Predictor
from tests.helpers.cli import SAMPLES

VAL_ROWS = read_manifest(SAMPLES / "val.csv").rows[:6]

# Runs in a fresh interpreter where importing tensorflow, keras or keras_hub fails.
NO_TENSORFLOW_SCRIPT = """
import json, sys

BLOCKED = ("tensorflow", "keras", "keras_hub")

class BlockTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked import of {name}")
        return None

sys.meta_path.insert(0, BlockTensorFlow())
from mmkeras.runtime.predictor import Predictor

prediction = Predictor(sys.argv[1]).predict(sys.argv[2], sys.argv[3])
loaded = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)
print(json.dumps({"label": prediction.label, "logits": prediction.logits.tolist(), "loaded": loaded}))
"""


@pytest.fixture(scope="module")
def bundle_dir(tiny_bundle):
    return tiny_bundle["bundle"]


@pytest.fixture(scope="module")
def predictor(bundle_dir):
    return Predictor(bundle_dir, num_threads=1)


def test_predict_gives_label_probabilities_and_logits(predictor):
    row = VAL_ROWS[0]
    prediction = predictor.predict(row.text, row.image)
    assert prediction.logits.shape == (len(predictor.labels),) and prediction.logits.dtype == np.float32
    assert list(prediction.scores) == predictor.labels
    assert sum(prediction.scores.values()) == pytest.approx(1.0)
    np.testing.assert_allclose(list(prediction.scores.values()), softmax(prediction.logits), rtol=1e-6)
    assert prediction.label == max(prediction.scores, key=prediction.scores.get)
    batch = predictor.preprocessor([row.text], [row.image])
    np.testing.assert_array_equal(prediction.logits, predictor.predict_inputs(batch)[0])


def test_missing_modalities(predictor):
    row = VAL_ROWS[0]
    both = predictor.predict(row.text, row.image).logits
    text_only = predictor.predict(row.text, None).logits
    image_only = predictor.predict(None, row.image).logits
    assert not np.allclose(text_only, both) and not np.allclose(image_only, both)
    # A blank text is a missing text.
    np.testing.assert_array_equal(predictor.predict("  ", row.image).logits, image_only)


def test_image_bytes_predict_like_the_file(predictor):
    row = VAL_ROWS[1]
    from_file = predictor.predict(row.text, row.image)
    from_bytes = predictor.predict(row.text, row.image.read_bytes())
    np.testing.assert_array_equal(from_bytes.logits, from_file.logits)


def test_unreadable_image_is_a_user_error(predictor, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(UserError, match="broken.png"):
        predictor.predict("a text", broken)


def test_predict_inputs_runs_a_batch_row_by_row(predictor):
    batch = predictor.preprocessor([row.text for row in VAL_ROWS], [row.image for row in VAL_ROWS])
    logits = predictor.predict_inputs(batch)
    assert logits.shape == (len(VAL_ROWS), len(predictor.labels))
    for index, row in enumerate(VAL_ROWS):
        np.testing.assert_array_equal(logits[index], predictor.predict(row.text, row.image).logits)


def test_inputs_are_matched_by_name_not_position(predictor):
    model = predictor.model
    positional = [details["name"] for details in model.interpreter.get_input_details()]
    # The .tflite orders its input tensors differently from the contract.
    assert [name for contract in INPUT_NAMES for name in positional if contract in name] != positional
    batch = predictor.preprocessor([VAL_ROWS[0].text], [VAL_ROWS[0].image])
    reordered = dict(reversed(list(batch.items())))
    np.testing.assert_array_equal(model(reordered), model(batch))


def test_missing_or_misshaped_inputs_are_named(predictor):
    batch = predictor.preprocessor([VAL_ROWS[0].text], [VAL_ROWS[0].image])
    with pytest.raises(ValueError, match="missing model input.*image"):
        predictor.predict_inputs({name: value for name, value in batch.items() if name != "image"})
    with pytest.raises(ValueError, match="'image' has shape"):
        predictor.predict_inputs({**batch, "image": np.zeros((1, 8, 8, 3), np.float32)})


def test_a_model_that_does_not_match_bundle_json_is_refused(bundle_dir, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    bundle = json.loads((copy / "bundle.json").read_text(encoding="utf-8"))
    bundle["labels"] = bundle["labels"][:-1]
    (copy / "bundle.json").write_text(json.dumps(bundle), encoding="utf-8")
    with pytest.raises(UserError, match="does not match bundle.json"):
        Predictor(copy)


def test_quantized_integer_inputs_and_outputs_are_converted():
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(4, 3)).astype(np.float32)

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32, name="features")])
    def linear(features):
        return {"scores": tf.matmul(features, weights) + 0.5}

    holder = tf.Module()
    holder.linear = linear
    converter = tf.lite.TFLiteConverter.from_concrete_functions([linear.get_concrete_function()], holder)
    calibration = rng.uniform(-1, 1, size=(64, 1, 4)).astype(np.float32)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ({"features": example} for example in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    model = LiteRTModel(converter.convert())
    assert model.input_details["features"]["dtype"] == np.int8 and model.output_details["dtype"] == np.int8
    features = calibration[:8, 0]
    scores = model({"features": features})
    assert scores.dtype == np.float32
    output_scale = model.output_details["quantization"][0]
    assert np.max(np.abs(scores - (features @ weights + 0.5))) <= 4 * output_scale


def test_interpreter_fallback_order(bundle_dir, predictor, monkeypatch):
    assert interpreter_module().__name__ == "ai_edge_litert.interpreter"
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    assert interpreter_module().__name__ == "tensorflow.lite.python.interpreter"
    row = VAL_ROWS[0]
    np.testing.assert_allclose(
        Predictor(bundle_dir).predict(row.text, row.image).logits,
        predictor.predict(row.text, row.image).logits,
        atol=1e-5,
    )
    monkeypatch.setitem(sys.modules, "tensorflow.lite.python.interpreter", None)
    with pytest.raises(ImportError, match="ai-edge-litert"):
        interpreter_module()


def test_runtime_predicts_without_tensorflow(bundle_dir, predictor):
    row = VAL_ROWS[2]
    completed = subprocess.run(
        [sys.executable, "-c", NO_TENSORFLOW_SCRIPT, str(bundle_dir), row.text, str(row.image)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["loaded"] == []
    expected = predictor.predict(row.text, row.image)
    assert result["label"] == expected.label
    np.testing.assert_allclose(result["logits"], expected.logits, atol=1e-6)


@pytest.mark.parametrize("text", ["\udcff\udcfe from argv", b"\xff\xfe", "lone \ud800"])
def test_a_text_that_is_not_utf8_is_a_typed_user_error(predictor, text):
    with pytest.raises(InvalidTextError, match="the text is not valid UTF-8"):
        predictor.predict(text, None)


def test_control_characters_predict_like_spaces(predictor):
    with_controls = predictor.predict("a\x00red\x1bcircle", None).logits
    assert np.array_equal(with_controls, predictor.predict("a red circle", None).logits)


def test_a_damaged_model_file_is_a_user_error_naming_it(bundle_dir, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    model = (copy / "model.tflite").read_bytes()
    (copy / "model.tflite").write_bytes(model[: len(model) // 2])
    with pytest.raises(UserError, match="model.tflite: the LiteRT interpreter cannot load this model: "):
        Predictor(copy)


def test_an_edited_preprocessor_that_no_longer_fits_the_model_is_refused(bundle_dir, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    settings = json.loads((copy / "preprocessor.json").read_text(encoding="utf-8"))
    settings["image_size"] = [4000, 4000]
    (copy / "preprocessor.json").write_text(json.dumps(settings), encoding="utf-8")
    with pytest.raises(UserError, match=r"preprocessor.json: the preprocessing gives image of shape \[4000, 4000, 3\]"):
        Predictor(copy)


def test_threads_are_capped_to_the_machine(monkeypatch, caplog):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert usable_threads(100_000) == 2 and usable_threads(2) == 2 and usable_threads(None) is None
    assert "100000 threads requested; this machine has 2 CPUs, using 2" in caplog.text
