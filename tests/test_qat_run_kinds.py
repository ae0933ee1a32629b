"""QAT, then int8 export and evaluation, for the kinds of run `mmkeras train` makes beyond the plain one."""

import dataclasses
import json
import logging
from pathlib import Path

import keras
import numpy as np
import pytest

from mmkeras.config import RunConfig
from mmkeras.data.feature_cache_folders import list_caches
from mmkeras.data.manifest import read_manifest
from mmkeras.evaluation.evaluate import evaluate
from mmkeras.export.converter import export_bundle
from mmkeras.models import build_model
from mmkeras.models.backbone_split import split_at_frozen_backbones
from mmkeras.models.builder import FROZEN_BACKBONES
from mmkeras.models.modality_dropout import ModalityDropout
from mmkeras.quantization.qat_settings import QATSettings, QuantizerSettings
from mmkeras.quantization.qat_training import qat_finetune
from mmkeras.quantization.qat_transform import UnknownLayerError, calibrate_ranges, quantize_model
from mmkeras.quantization.run_loading import load_run
from mmkeras.runs import QUANTIZATION_FILE, save_run
from mmkeras.runtime.interpreter import list_ops
from mmkeras.runtime.predictor import Predictor
from mmkeras.training.feature_cache import CachedFeatures
from mmkeras.training.trainer import train
from tests.helpers.cli import write_subset
from tests.helpers.hugging_face_folders import write_text_folder
from tests.helpers.training_runs import SimulatedCrash, crashing_at_checkpoint

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
SEQUENCE_LENGTH = 16


def float_run(folder: Path, data) -> Path:
    train, val = data
    manifest = read_manifest(train)
    labels = manifest.labels()
    model, preprocessor = build_model(
        "tiny", "tiny", num_classes=len(labels), texts=[row.text for row in manifest.rows if row.text],
        sequence_length=SEQUENCE_LENGTH, seed=0,
    )
    config = RunConfig(data=str(train), val=str(val), out=str(folder), sequence_length=SEQUENCE_LENGTH, seed=3)
    save_run(folder, model=model, preprocessor=preprocessor, labels=labels, config=config)
    return folder


# `--modality-balance` (one with `--modality-dropout` too) and `--lora-rank` (on a pretrained text backbone: LoRA
# adapts only those); frozen backbones with cached features: the tests below; multilabel runs:
# tests/test_multilabel.py.
RUN_KINDS = {
    "aux-with-modality-dropout": {"modality_balance": "aux", "modality_dropout": 0.3},
    "adaptive": {"modality_balance": "adaptive"},
    "lora": {"lora_rank": 2, "text_backbone": "bert"},
}


def trained_run(tmp_path, data, kind):
    settings = dict(RUN_KINDS[kind])
    if settings.get("text_backbone") == "bert":
        write_text_folder("bert", tmp_path / "bert")
        settings["text_backbone"] = str(tmp_path / "bert")
    config = RunConfig(data=str(data[0]), val=str(data[1]), out=str(tmp_path / "float"), epochs=1, batch_size=8,
                       sequence_length=SEQUENCE_LENGTH, seed=3, **settings)
    return train(config)


def backbone_weights(run_dir: Path, backbone: str) -> dict[str, np.ndarray]:
    return {weight.path: np.asarray(weight) for weight in load_run(run_dir).model.get_layer(backbone).weights}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(RUN_KINDS))
def test_every_kind_of_run_goes_through_qat_trains_what_the_float_run_trained_and_exports_int8(tmp_path, kind,
                                                                                              caplog):
    data = (write_subset(SAMPLES / "train.csv", tmp_path / "train.csv", 16),
            write_subset(SAMPLES / "val.csv", tmp_path / "val.csv", 8))
    float_result = trained_run(tmp_path, data, kind)
    with caplog.at_level(logging.INFO, logger="mmkeras"):
        qat_result = qat_finetune(tmp_path / "float", data[0], tmp_path / "qat", val=data[1],
                                  settings=QATSettings(epochs=1, batch_size=8, calibration_batches=1))
    # the balance heads are not rebuilt (docs/design.md#qat-of-every-kind-of-run), and the log says so
    assert ("QAT trains the plain model" in caplog.text) == ("modality_balance" in RUN_KINDS[kind])
    if "modality_dropout" in RUN_KINDS[kind]:  # a layer the QAT transform knows: no unknown layer to leave float
        assert any(isinstance(layer, ModalityDropout) for layer in load_run(tmp_path / "float").model.layers)
        assert json.loads((tmp_path / "qat" / QUANTIZATION_FILE).read_text())["unknown_layers"] == "error"
        assert 0.0 <= evaluate(tmp_path / "qat", data[1], save_results=False)["accuracy"] <= 1.0
    # LoRA: new adapters train, not every weight of the adapted backbone; frozen backbones stay frozen
    assert qat_result.metrics["trainable_params"] == float_result.metrics["trainable_params"]
    if kind == "lora":
        before = backbone_weights(tmp_path / "float", "text_backbone")
        after = backbone_weights(tmp_path / "qat", "text_backbone")
        changed = {path.split("/")[-2] for path in before if not np.array_equal(before[path], after[path])}
        assert "query" in changed and "key" not in changed  # keras-hub's LoRA adapts query and value
    report = export_bundle(tmp_path / "qat", tmp_path / "int8", quantize="int8")
    compute = [op for op in list_ops(tmp_path / "int8" / "model.tflite") if op.name in ("FULLY_CONNECTED", "CONV_2D")]
    assert report["qat"] and compute and all(op.output_dtypes == ("int8",) for op in compute)
    row = read_manifest(data[1]).rows[0]
    prediction = Predictor(tmp_path / "int8").predict(row.text, row.image)
    assert prediction.label in load_run(tmp_path / "float").labels
    assert sum(prediction.scores.values()) == pytest.approx(1.0, abs=1e-3)


def test_a_qat_run_made_with_unknown_layers_warn_loads_with_them_float(tmp_path):
    """keras' Identity is a type the QAT transform does not know: `warn` leaves it float, and loading agrees."""
    data = (write_subset(SAMPLES / "train.csv", tmp_path / "train.csv", 16),) * 2
    run = load_run(float_run(tmp_path / "float", data))
    features = keras.layers.GlobalAveragePooling2D()(run.model.input["image"])
    logits = keras.layers.Dense(len(run.labels))(keras.layers.Identity()(features))
    model = keras.Model(run.model.input, logits)
    with pytest.raises(UnknownLayerError, match="Identity"):
        quantize_model(model)
    qat_model = quantize_model(model, on_unknown="warn")
    rows = read_manifest(data[0]).rows[:4]
    calibrate_ranges(qat_model, [run.preprocessor([row.text for row in rows], [row.image for row in rows])])
    saved = {"settings": dataclasses.asdict(QuantizerSettings()), "unknown_layers": "warn"}
    save_run(tmp_path / "qat", model=qat_model, preprocessor=run.preprocessor, labels=run.labels, config=run.config,
             quantization=saved, float_model_file=save_float_model(model, tmp_path / "float.keras"))
    assert load_run(tmp_path / "qat").quantization["unknown_layers"] == "warn"
    # written before unknown_layers was recorded: such a run is refused, as the QAT run itself would have been
    (tmp_path / "qat" / QUANTIZATION_FILE).write_text(json.dumps({"settings": saved["settings"]}))
    with pytest.raises(UnknownLayerError):
        load_run(tmp_path / "qat")


def save_float_model(model, path: Path) -> Path:
    model.save(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("freeze", ["both", "vision"])
def test_qat_of_a_cached_features_run_trains_the_head_on_fake_quantized_features_computed_once(tmp_path, freeze):
    data = (write_subset(SAMPLES / "train.csv", tmp_path / "train.csv", 32),
            write_subset(SAMPLES / "val.csv", tmp_path / "val.csv", 16))
    cache_dir = tmp_path / "cache"
    float_result = train(RunConfig(
        data=str(data[0]), val=str(data[1]), out=str(tmp_path / "float"), epochs=1, batch_size=8,
        sequence_length=SEQUENCE_LENGTH, seed=3, freeze=freeze, cache_features=True, cache_dir=str(cache_dir),
        cache_dtype="float32",  # exact, so that the cached tokens can be compared with the saved model's
    ))
    float_caches = {folder.name for folder in cache_dir.iterdir()}
    qat_result = qat_finetune(tmp_path / "float", data[0], tmp_path / "qat", val=data[1],
                              settings=QATSettings(epochs=2, batch_size=8, calibration_batches=2))
    # (a) two new caches beside the float run's two, for the training and the validation rows, marked quantized
    entries = {entry.key: entry for entry in list_caches(cache_dir)}
    quantized = {key: entry for key, entry in entries.items() if key not in float_caches}
    assert len(float_caches) == 2 and len(quantized) == 2
    assert all(entry.details["quantization"]["kind"] == "fake-quantized" for entry in quantized.values())
    assert not any("quantization" in entries[key].details for key in float_caches)
    # The saved QAT model's backbones give exactly the cached tokens: their activation ranges did not move
    # while the head trained (the backbones did not run), and the int8 export quantizes with these ranges.
    train_cache = next(key for key, entry in quantized.items() if entry.rows == 32)
    cached_inputs, _ = next(iter(CachedFeatures(cache_dir / train_cache).dataset(batch_size=32)))
    qat_run = load_run(tmp_path / "qat")
    rows = read_manifest(data[0]).rows
    inputs = qat_run.preprocessor([row.text for row in rows], [row.image for row in rows])
    split = split_at_frozen_backbones(qat_run.model, FROZEN_BACKBONES[freeze])
    tokens = keras.tree.flatten(split.feature_model.predict_on_batch(inputs))
    for actual, expected in zip(tokens, cached_inputs[: len(tokens)], strict=True):
        np.testing.assert_allclose(actual, expected.numpy(), atol=1e-5)
    # (c) what trains is what the float run trained
    assert qat_result.metrics["trainable_params"] == float_result.metrics["trainable_params"]
    assert qat_result.metrics["final_loss"] < qat_result.metrics["initial_loss"]
    # (b) the int8 bundle's predictions on the validation rows against the QAT Keras model's (the full model, the
    # head reassembled with its backbones): 13 of 16 agree here, 13-15 on both QAT paths of this barely trained
    # model, whose logits are near ties; agreement on trained runs: benchmarks/qat_cached_features.py
    report = export_bundle(tmp_path / "qat", tmp_path / "int8", quantize="int8")
    val_rows = read_manifest(data[1]).rows
    val_inputs = qat_run.preprocessor([row.text for row in val_rows], [row.image for row in val_rows])
    expected = keras.ops.convert_to_numpy(qat_run.model(val_inputs, training=False))
    actual = Predictor(tmp_path / "int8").predict_inputs(val_inputs)
    agreement = float(np.mean(actual.argmax(axis=1) == expected.argmax(axis=1)))
    assert report["qat"] and report["parity"]["label_agreement"] == agreement >= 0.75
    compute = [op for op in list_ops(tmp_path / "int8" / "model.tflite") if op.name in ("FULLY_CONNECTED", "CONV_2D")]
    assert compute and all(op.output_dtypes == ("int8",) for op in compute)


@pytest.mark.slow
def test_a_crashed_qat_of_a_cached_features_run_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch):
    """The resumed process calibrates as the first did, so it finds the same quantized cache, then takes the
    head's weights, ranges and optimizer state from the checkpoint."""
    from tensorflow.python.framework import config as tf_config

    data = (write_subset(SAMPLES / "train.csv", tmp_path / "train.csv", 32),
            write_subset(SAMPLES / "val.csv", tmp_path / "val.csv", 8))
    settings = QATSettings(epochs=2, batch_size=8, calibration_batches=2, checkpoint_steps=3)
    try:
        train(RunConfig(data=str(data[0]), val=str(data[1]), out=str(tmp_path / "float"), epochs=1, batch_size=8,
                        sequence_length=SEQUENCE_LENGTH, seed=3, deterministic=True, freeze="both",
                        cache_features=True, cache_dir=str(tmp_path / "cache")))
        whole = qat_finetune(tmp_path / "float", data[0], tmp_path / "whole", settings=settings)
        # the third checkpoint is mid-way through epoch 2
        with crashing_at_checkpoint(monkeypatch, 3), pytest.raises(SimulatedCrash):
            qat_finetune(tmp_path / "float", data[0], tmp_path / "crashed", settings=settings)
        resumed = qat_finetune(tmp_path / "float", data[0], tmp_path / "crashed", settings=settings, resume=True)
    finally:
        # --deterministic turns op determinism on for the whole process; only TF's internal API turns it off.
        tf_config.disable_op_determinism()
    assert len(list((tmp_path / "cache").iterdir())) == 4  # the float run's two, QAT's two: reused on resume
    for expected, actual in zip(whole.model.get_weights(), resumed.model.get_weights(), strict=True):
        np.testing.assert_allclose(actual, expected, atol=1e-6)
    assert resumed.metrics["epochs_completed"] == 2
