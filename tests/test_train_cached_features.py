"""`mmkeras train --freeze both --cache-features`: the head trains on cached tokens, the full model is saved."""

import json
from pathlib import Path

import pytest

from tests.helpers.cli import SAMPLES, run_cli, write_subset
from tests.helpers.training_runs import SimulatedCrash, crashing_at_checkpoint


@pytest.fixture
def data(tmp_path):
    return {
        "train": write_subset(SAMPLES / "train.csv", tmp_path / "train.csv", 64),
        "val": write_subset(SAMPLES / "val.csv", tmp_path / "val.csv", 32),
    }


def train(capsys, data, out: Path, *flags):
    code, stdout, stderr = run_cli(
        capsys, "train", "--data", data["train"], "--val", data["val"], "--out", out,
        "--epochs", "2", "--batch-size", "16", "--seed", "0", "--json", *flags,
    )
    assert code == 0, stderr
    return json.loads(stdout)


@pytest.mark.slow
def test_cached_head_training_saves_a_full_model_with_the_same_figures(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MMKERAS_CACHE_DIR", str(tmp_path / "cache"))
    metrics = train(capsys, data, tmp_path / "run", "--freeze", "both", "--cache-features")
    assert len(list((tmp_path / "cache").glob("*/meta.json"))) == 2  # train and val
    assert metrics["trainable_params"] < metrics["total_params"] / 2  # backbones frozen
    code, out, _ = run_cli(capsys, "evaluate", tmp_path / "run", "--data", data["val"], "--json")
    assert code == 0
    assert json.loads(out)["accuracy"] == pytest.approx(metrics["val_accuracy"])


def test_cache_features_with_nothing_frozen_or_lora_is_a_user_error(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MMKERAS_CACHE_DIR", str(tmp_path / "cache"))
    for flags in (["--cache-features"], ["--cache-features", "--freeze", "both", "--lora-rank", "2"]):
        code, _, err = run_cli(
            capsys, "train", "--data", data["train"], "--out", tmp_path / "run", "--epochs", "1", *flags
        )
        assert code == 2 and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "model.keras").exists()


def test_a_run_with_another_backbone_keeps_the_first_runs_cache_and_cache_clear_removes_them(data, tmp_path, capsys):
    cache_dir = tmp_path / "cache"
    train(capsys, data, tmp_path / "cnn", "--freeze", "both", "--cache-features", "--cache-dir", cache_dir)
    first = sorted(cache_dir.glob("*/meta.json"))
    train(capsys, data, tmp_path / "vit", "--freeze", "both", "--cache-features", "--cache-dir", cache_dir,
          "--vision-backbone", "tiny-vit")
    assert set(first) < set(cache_dir.glob("*/meta.json")) and len(list(cache_dir.glob("*/meta.json"))) == 4
    code, out, _ = run_cli(capsys, "cache", "list", "--cache-dir", cache_dir, "--json")
    listed = json.loads(out)
    assert code == 0 and len(listed["caches"]) == 4 and all(entry["complete"] for entry in listed["caches"])
    code, out, _ = run_cli(capsys, "cache", "clear", "--cache-dir", cache_dir, "--older-than", "1", "--json")
    assert code == 0 and json.loads(out)["removed"] == []  # all used today
    code, out, _ = run_cli(capsys, "cache", "clear", "--cache-dir", cache_dir, "--json")
    assert code == 0 and len(json.loads(out)["removed"]) == 4 and not list(cache_dir.iterdir())


@pytest.mark.slow
def test_a_crashed_cached_run_resumes_mid_epoch_to_the_uninterrupted_weights(data, tmp_path, monkeypatch):
    import numpy as np
    from tensorflow.python.framework import config as tf_config

    from mmkeras.config import RunConfig
    from mmkeras.training.trainer import train

    monkeypatch.setenv("MMKERAS_CACHE_DIR", str(tmp_path / "cache"))
    config = RunConfig(
        data=str(data["train"]), val=str(data["val"]), epochs=2, batch_size=16, seed=0, deterministic=True,
        freeze="both", cache_features=True, checkpoint_steps=3,
    )
    try:
        whole = train(config.replace(out=str(tmp_path / "whole")))
        # the third checkpoint is mid-way through epoch 2
        with crashing_at_checkpoint(monkeypatch, 3), pytest.raises(SimulatedCrash):
            train(config.replace(out=str(tmp_path / "crashed")))
        resumed = train(config.replace(out=str(tmp_path / "crashed")), resume=True)
    finally:
        # --deterministic turns op determinism on for the whole process; only TF's internal API turns it off.
        tf_config.disable_op_determinism()
    for expected, actual in zip(whole.model.get_weights(), resumed.model.get_weights(), strict=True):
        np.testing.assert_allclose(actual, expected, atol=1e-6)
    assert resumed.metrics["epochs_completed"] == 2
