"""The CLI contract end to end on tiny backbones: train -> evaluate -> export -> predict -> benchmark -> report."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from mmkeras.quantization.run_loading import load_run
from tests.helpers.cli import WITHOUT_TENSORFLOW, run_cli

TRAIN_JSON_KEYS = {
    "loss",
    "val_loss",
    "val_accuracy",
    "epochs_completed",
    "epoch_seconds",
    "trainable_params",
    "total_params",
    "bad_rows_skipped",
}


@pytest.fixture
def data(samples_run):
    """96 training and 32 validation rows of the samples (tests/conftest.py), under `train`, `val` and `folder`."""
    return samples_run


@pytest.fixture
def trained(samples_run):
    """The session's run trained on `data` (2 epochs, batch 16, seed 1)."""
    return samples_run["run"]


@pytest.mark.slow
def test_train_prints_one_json_object_and_writes_the_run(data, tmp_path, capsys):
    code, out, _ = run_cli(
        capsys, "train", "--data", data["train"], "--val", data["val"], "--out", tmp_path / "r",
        "--epochs", "1", "--batch-size", "32", "--fusion", "concat", "--json",
    )
    assert code == 0
    metrics = json.loads(out)  # exactly one JSON object on stdout
    assert TRAIN_JSON_KEYS <= set(metrics)
    assert metrics["epochs_completed"] == 1 and len(metrics["epoch_seconds"]) == 1
    assert 0 < metrics["trainable_params"] <= metrics["total_params"]
    for name in ("model.keras", "labels.json", "preprocessor.json", "tokenizer.json", "config.yaml", "history.json"):
        assert (tmp_path / "r" / name).is_file()
    assert "fusion: concat" in (tmp_path / "r" / "config.yaml").read_text()


@pytest.mark.slow
def test_yaml_config_is_overridden_by_flags(data, tmp_path, capsys, monkeypatch):
    config = tmp_path / "run.yaml"
    config.write_text("epochs: 3\nfusion: gated\nbatch_size: 64\n")
    monkeypatch.chdir(data["folder"])
    code, out, _ = run_cli(
        capsys, "train", "--config", config, "--data", "train.csv", "--out", tmp_path / "r", "--epochs", "1", "--json"
    )
    assert code == 0
    assert json.loads(out)["epochs_completed"] == 1
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert (saved["fusion"], saved["batch_size"], saved["epochs"]) == ("gated", 64, 1)
    # Saved absolute, so export and qat find the training manifest from any folder.
    assert saved["data"] == str(data["train"])


@pytest.fixture
def bundle(samples_bundle):
    """The session run's float32 bundle (`export --quantize none`, the default)."""
    return samples_bundle["bundle"]


@pytest.mark.slow
def test_a_mixed_precision_run_saves_and_exports_the_float32_model(data, tmp_path, capsys):
    run_dir, bundle_dir = tmp_path / "run", tmp_path / "bundle"
    code, _, err = run_cli(
        capsys, "train", "--data", data["train"], "--out", run_dir, "--epochs", "1", "--batch-size", "32",
        "--mixed-precision", "bfloat16", "--json",
    )
    assert code == 0, err
    model = load_run(run_dir).model
    assert {layer.dtype_policy.name for layer in model._flatten_layers()} == {"float32"}
    # Saved as trained, the model had reduced-precision ops LiteRT lacks (AddV2, MatMul, ... in float16),
    # and export failed.
    code, _, err = run_cli(capsys, "export", run_dir, "--out", bundle_dir, "--quantize", "none")
    assert code == 0, err
    figures = []
    for target in (run_dir, bundle_dir):
        code, out, _ = run_cli(capsys, "evaluate", target, "--data", data["val"], "--json")
        figures.append(json.loads(out)["accuracy"])
    assert figures[0] == figures[1]


def test_float_bundle_matches_the_keras_model(trained, bundle, data, capsys):
    assert {"model.tflite", "bundle.json", "tokenizer.json"} <= {p.name for p in bundle.iterdir()}

    code, out, _ = run_cli(capsys, "evaluate", trained, "--data", data["val"], "--json")
    assert code == 0
    run_figures = json.loads(out)
    code, out, _ = run_cli(capsys, "evaluate", bundle, "--data", data["val"], "--json")
    assert code == 0
    bundle_figures = json.loads(out)
    assert run_figures["n"] == bundle_figures["n"] == 32
    assert bundle_figures["accuracy"] == run_figures["accuracy"]
    assert bundle_figures["confusion_matrix"] == run_figures["confusion_matrix"]
    assert set(bundle_figures["modality_ablation"]) == {"text_only", "image_only"}

    with data["val"].open(newline="", encoding="utf-8") as handle:
        first = next(csv.DictReader(handle))
    code, out, _ = run_cli(capsys, "predict", bundle, "--text", first["text"], "--image", first["image"], "--json")
    assert code == 0
    prediction = json.loads(out)
    labels = json.loads((trained / "labels.json").read_text())
    assert prediction["label"] in labels
    assert set(prediction["scores"]) == set(labels)
    assert np.isclose(sum(prediction["scores"].values()), 1.0, atol=1e-4)

    code, out, _ = run_cli(capsys, "benchmark", bundle, "--threads", "1", "--runs", "5", "--json")
    assert code == 0
    figures = json.loads(out)
    assert figures["threads"] == 1
    assert 0 < figures["latency_ms"]["p50"] <= figures["latency_ms"]["p99"]
    assert figures["model_size_bytes"] == (bundle / "model.tflite").stat().st_size


@pytest.mark.parametrize(
    "command",
    [
        ["evaluate", "{bundle}", "--data", "{val}", "--json"],
        ["predict", "{bundle}", "--text", "a calm card", "--json"],
        ["benchmark", "{bundle}", "--runs", "3", "--json"],
        ["benchmark", "{bundle}", "{bundle}", "--data", "{val}", "--threads", "1", "--runs", "2", "--json"],
    ],
)
def test_device_commands_run_without_tensorflow(bundle, data, command):
    argv = [part.format(bundle=bundle, val=data["val"]) for part in command]
    completed = subprocess.run(
        [sys.executable, "-c", WITHOUT_TENSORFLOW, *argv], capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr
    assert isinstance(json.loads(completed.stdout), dict)


def test_report_writes_html(trained, tmp_path, capsys):
    code, _, _ = run_cli(capsys, "report", trained, "--out", tmp_path / "report.html")
    assert code == 0
    assert "data:image/png;base64" in (tmp_path / "report.html").read_text()


@pytest.mark.parametrize(
    "manifest_text, expected",
    [
        ("text,image,label\nhello,missing.png,a\nbye,,b\n", "line 2: cannot read image"),
        ("text,label\nhello,a\n", "image"),
        ("text,image,label\nhi,,a\n,,b\n", "line 3"),
        ("text,image,label\nhi,,a\nho,,a\n", "at least 2 labels"),
    ],
)
def test_bad_training_data_is_one_line_and_exit_2(tmp_path, capsys, manifest_text, expected):
    manifest = tmp_path / "train.csv"
    manifest.write_text(manifest_text)
    code, out, err = run_cli(capsys, "train", "--data", manifest, "--out", tmp_path / "r", "--epochs", "1")
    assert code == 2
    assert out == ""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and str(manifest) in lines[0] and expected in lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "r" / "model.keras").exists()


def test_unknown_validation_label_names_file_and_line(data, tmp_path, capsys):
    val = tmp_path / "val.csv"
    rows = data["val"].read_text().splitlines()
    rows[3] = rows[3].rsplit(",", 1)[0] + ",no_such_label"
    val.write_text("\n".join(rows) + "\n")
    code, _, err = run_cli(capsys, "train", "--data", data["train"], "--val", val, "--out", tmp_path / "r")
    assert code == 2
    assert f"{val}: line 4: unknown label 'no_such_label'" in err


def test_bad_flag_is_exit_2(capsys):
    code, _, err = run_cli(capsys, "train", "--fusion", "bogus")
    assert code == 2 and err.count("\n") == 1


def test_console_script_runs_help():
    result = subprocess.run(
        [sys.executable, "-m", "mmkeras.cli.app", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0
    for command in ("train", "evaluate", "export", "predict", "benchmark", "report"):
        assert command in result.stdout


QAT_JSON_KEYS = {"initial_loss", "loss", "val_loss", "val_accuracy", "epochs_completed", "epoch_seconds"}


@pytest.mark.slow
def test_qat_then_int8_export_then_evaluate(trained, data, tmp_path, capsys):
    qat_dir, bundle_dir = tmp_path / "qat", tmp_path / "int8"
    code, out, _ = run_cli(
        capsys, "qat", trained, "--data", data["train"], "--val", data["val"], "--out", qat_dir,
        "--epochs", "1", "--batch-size", "32", "--json",
    )  # fmt: skip
    assert code == 0
    metrics = json.loads(out)
    assert QAT_JSON_KEYS <= set(metrics) and metrics["epochs_completed"] == 1
    assert (qat_dir / "quantization.json").is_file() and (qat_dir / "qat.weights.h5").is_file()
    code, out, _ = run_cli(
        capsys, "export", qat_dir, "--out", bundle_dir, "--quantize", "int8", "--calibration-data", data["val"]
    )
    assert code == 0
    assert "from a QAT run" in out and "parity on" in out  # the conversion report, shown to the user
    conversion = json.loads((bundle_dir / "bundle.json").read_text())["conversion"]
    assert conversion["qat"] and conversion["calibration_rows"] == 32
    # Every compute op int8 but the attention matmuls, which QAT and the export leave float.
    assert conversion["ops"]["compute_ops"]["int8_fraction"] >= 0.75 and "BATCH_MATMUL" in conversion["kept_float"]
    for target in (qat_dir, bundle_dir):
        code, out, _ = run_cli(capsys, "evaluate", target, "--data", data["val"], "--json")
        assert code == 0 and json.loads(out)["n"] == 32


def test_qat_with_a_bad_strategy_is_exit_2_like_train(tmp_path, capsys):
    for command in (["train", "--data", tmp_path / "t.csv"], ["qat", tmp_path / "run", "--data", tmp_path / "t.csv"]):
        code, out, err = run_cli(capsys, *command, "--out", tmp_path / "q", "--strategy", "tpu-pod")
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and "--strategy" in err and "tpu-pod" in err


def test_qat_with_a_missing_run_is_exit_2(data, tmp_path, capsys):
    code, _, err = run_cli(capsys, "qat", tmp_path / "nope", "--data", data["train"], "--out", tmp_path / "q")
    assert code == 2
    assert err.count("\n") == 1 and "not a run folder" in err
