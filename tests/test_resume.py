"""Exact resume: SIGKILL a real `mmkeras train`, rerun with --resume, get the uninterrupted run's weights."""

import json

import numpy as np
import pytest

from mmkeras.cli.app import main
from mmkeras.config import RunConfig
from mmkeras.data.manifest import read_manifest
from mmkeras.data.rows_fingerprint import rows_record
from mmkeras.errors import UserError
from mmkeras.training.checkpoints import Checkpoints, TrainingState, checkpoint_to_resume
from tests.helpers.training_runs import (
    finish,
    kill_at_first_checkpoint,
    max_difference,
    run,
    run_weights,
    start,
    stop,
    train_args,
    write_data,
)

# 2 updates per epoch, a checkpoint after each: the kill lands mid-epoch or at an epoch boundary.
RESUME_SETTINGS = {"epochs": 3, "checkpoint_steps": 1, "dropout": 0.1}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("data"), **RESUME_SETTINGS)


@pytest.mark.distributed
def test_killed_run_resumes_to_the_uninterrupted_weights(data, tmp_path):
    uninterrupted = tmp_path / "uninterrupted"
    expected = run(train_args(data, uninterrupted, "--deterministic"))
    interrupted = tmp_path / "interrupted"
    kill_at_first_checkpoint(train_args(data, interrupted, "--deterministic"), interrupted)
    resumed = start(train_args(data, interrupted, "--deterministic", "--resume"))
    try:
        code, out, err = finish(resumed, timeout=240)
    finally:
        stop([resumed])
    assert code == 0, err[-3000:]
    assert "resuming from ckpt-" in err
    metrics = json.loads(out)
    assert metrics["epochs_completed"] == expected["epochs_completed"] == 3
    assert metrics["val_loss"] == pytest.approx(expected["val_loss"], abs=1e-6)
    assert max_difference(run_weights(interrupted), run_weights(uninterrupted)) < 1e-6
    assert not (interrupted / "checkpoints").exists()  # a finished run keeps no checkpoints


def fake_checkpoint(run_dir, config: RunConfig, epoch: int, value: float):
    state = TrainingState(epoch=epoch, config=config.to_dict())
    Checkpoints(run_dir, writer=True).save(state, {"model": [np.full(3, value)], "optimizer": []})


def test_a_corrupt_checkpoint_falls_back_to_the_previous_one(tmp_path):
    config = RunConfig(data="train.csv", out=str(tmp_path))
    fake_checkpoint(tmp_path, config, epoch=1, value=1.0)
    fake_checkpoint(tmp_path, config, epoch=2, value=2.0)
    checkpoints = Checkpoints(tmp_path, writer=True)
    assert checkpoints.latest().state.epoch == 2
    newest = checkpoints.latest().path / "variables.npz"
    newest.write_bytes(newest.read_bytes()[:-20])  # truncated
    (checkpoints.folder / ".partial-ckpt-0003-000000").mkdir()  # a save that never finished
    fallback = checkpoints.latest()
    assert fallback.state.epoch == 1 and fallback.values["model"][0].tolist() == [1.0, 1.0, 1.0]


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    config = RunConfig(data="train.csv", out=str(tmp_path))
    for epoch in range(1, 5):
        fake_checkpoint(tmp_path, config, epoch=epoch, value=epoch)
    assert sorted(path.name for path in (tmp_path / "checkpoints").iterdir()) == [
        "ckpt-0003-000000",
        "ckpt-0004-000000",
    ]


def test_resume_without_a_checkpoint_is_a_user_error(data, tmp_path, capsys):
    code = main(train_args(data, tmp_path / "empty", "--resume"))
    assert code == 2
    assert "no checkpoint to continue from" in capsys.readouterr().err


def test_resume_with_other_settings_is_a_user_error(data, tmp_path, capsys):
    out = tmp_path / "run"
    flags = train_args(data, out)
    config = RunConfig.from_yaml(data["config"]).replace(
        data=str(data["train"]), val=str(data["val"]), out=str(out), epochs=5
    )
    older = config.to_dict()
    del older["aux_loss_weight"]  # and written before this setting existed: not a change (its default)
    Checkpoints(out, writer=True).save(TrainingState(epoch=1, config=older), {"model": [], "optimizer": []})
    code = main([*flags, "--resume"])
    assert code == 2
    assert "changed: epochs 5 -> 3\n" in capsys.readouterr().err


def test_a_checkpoint_of_an_older_mmkeras_resumes_with_the_defaults_of_settings_added_since(tmp_path):
    config = RunConfig(data="train.csv", out=str(tmp_path), modality_balance="aux")
    older = config.to_dict()
    del older["aux_loss_weight"]  # written before the setting existed (the weight was a constant 0.5)
    Checkpoints(tmp_path, writer=True).save(TrainingState(epoch=1, config=older), {"model": [], "optimizer": []})
    checkpoints, defaults = Checkpoints(tmp_path, writer=True), RunConfig().to_dict()
    assert checkpoint_to_resume(checkpoints, config.to_dict(), defaults).state.epoch == 1  # was: refused, None -> 0.5
    with pytest.raises(UserError, match="changed: aux_loss_weight 0.5 -> 2.0"):
        checkpoint_to_resume(checkpoints, config.replace(aux_loss_weight=2.0).to_dict(), defaults)


def edit_first_text(manifest):
    lines = manifest.read_text(encoding="utf-8").splitlines(keepends=True)
    manifest.write_text(lines[0] + "edited," + lines[1].split(",", 1)[1] + "".join(lines[2:]), encoding="utf-8")


@pytest.mark.distributed
def test_a_resume_on_changed_training_rows_is_refused_and_goes_on_once_they_are_restored(tmp_path, capsys):
    data, out = write_data(tmp_path, **RESUME_SETTINGS), tmp_path / "run"
    kill_at_first_checkpoint(train_args(data, out), out)
    original = data["train"].read_text(encoding="utf-8")
    edit_first_text(data["train"])
    assert main(train_args(data, out, "--resume")) == 2
    err = capsys.readouterr().err
    assert f"{data['train']}: --resume: the rows changed since the run began (a text, image or label differs)" in err
    data["train"].write_text(original, encoding="utf-8")
    # in a child process, as the killed run was (its backbone dropout off: the same variables)
    assert run(train_args(data, out, "--resume"), timeout=240)["epochs_completed"] == 3


def checkpoint_of_these_rows(data, out, rows: bool, **settings):
    """A fake checkpoint of `train_args(data, out)`'s settings and `settings`, with or without the rows' fingerprint."""
    config = RunConfig.from_yaml(data["config"]).replace(
        data=str(data["train"]), val=str(data["val"]), out=str(out), **settings
    )
    records = {"data": rows_record(read_manifest(data["train"])), "val": rows_record(read_manifest(data["val"]))}
    state = TrainingState(config=config.to_dict(), rows=records if rows else {})
    Checkpoints(out, writer=True).save(state, {"model": [np.zeros(3)], "optimizer": []})


@pytest.mark.slow
def test_a_resume_with_one_more_validation_row_names_the_validation_manifest(tmp_path, capsys):
    data, out = write_data(tmp_path, **RESUME_SETTINGS), tmp_path / "run"
    checkpoint_of_these_rows(data, out, rows=True)
    lines = data["val"].read_text(encoding="utf-8").splitlines(keepends=True)
    data["val"].write_text("".join(lines) + lines[1], encoding="utf-8")
    assert main(train_args(data, out, "--resume")) == 2
    assert f"{data['val']}: --resume: the rows changed since the run began (8 rows then, 9 now)" in (
        capsys.readouterr().err
    )


@pytest.mark.slow
def test_a_checkpoint_written_before_the_rows_were_kept_is_not_checked_against_them(tmp_path, capsys):
    data, out = write_data(tmp_path, **RESUME_SETTINGS), tmp_path / "run"
    checkpoint_of_these_rows(data, out, rows=False)
    edit_first_text(data["train"])
    assert main(train_args(data, out, "--resume")) == 2
    # past the rows: the fake checkpoint's variables are what stops it
    assert "the checkpoint's model variables do not fit this model" in capsys.readouterr().err


@pytest.mark.slow
def test_a_resume_on_changed_rows_is_refused_before_the_features_are_cached(tmp_path, capsys, monkeypatch):
    data, out = write_data(tmp_path, **RESUME_SETTINGS), tmp_path / "run"
    checkpoint_of_these_rows(data, out, rows=True, freeze="both", cache_features=True)
    edit_first_text(data["train"])

    def cached_epochs(*args, **kwargs):
        raise AssertionError("the features were cached before the rows were checked")

    monkeypatch.setattr("mmkeras.training.trainer.cached_epochs", cached_epochs)
    assert main(train_args(data, out, "--freeze", "both", "--cache-features", "--resume")) == 2
    assert f"{data['train']}: --resume: the rows changed since the run began" in capsys.readouterr().err
