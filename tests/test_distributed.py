"""Distributed training equals single-process training: 2 workers on 127.0.0.1, and 2 mirrored logical CPUs."""

import json

import pytest

from mmkeras.cli.app import main
from tests.helpers.training_runs import (
    TOLERANCE,
    TWO_LOGICAL_CPUS,
    finish,
    finish_workers,
    max_difference,
    run,
    run_weights,
    start,
    stop,
    tf_configs,
    train_args,
    wait_for_checkpoint,
    write_data,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # A checkpoint after every update (numerically a no-op) so a lost worker can be caught mid-run.
    return write_data(tmp_path_factory.mktemp("data"), checkpoint_steps=1)


@pytest.fixture(scope="module")
def single(data, tmp_path_factory):
    """One process, one replica: the reference run."""
    out = tmp_path_factory.mktemp("single") / "run"
    metrics = run(train_args(data, out, "--strategy", "one"))
    return {"out": out, "metrics": metrics, "weights": run_weights(out)}


def start_workers(data, out, *extra) -> list:
    return [
        start(train_args(data, out, "--strategy", "multi-worker", *extra), env={"TF_CONFIG": config})
        for config in tf_configs(2)
    ]


@pytest.mark.distributed
def test_two_workers_match_a_single_process(data, single, tmp_path):
    out = tmp_path / "run"
    results = finish_workers(start_workers(data, out))
    (_, chief_out, chief_err), (_, other_out, other_err) = results
    assert other_out == ""  # only the chief prints the result ...
    assert "epoch 1/2" in chief_err and "epoch 1/2" not in other_err  # ... and logs progress
    metrics = json.loads(chief_out)
    assert metrics["epochs_completed"] == 2
    assert abs(metrics["val_loss"] - single["metrics"]["val_loss"]) < TOLERANCE
    assert max_difference(run_weights(out), single["weights"]) < TOLERANCE


@pytest.mark.distributed
def test_mirrored_over_two_logical_cpus_matches_a_single_process(data, single, tmp_path):
    out = tmp_path / "run"
    metrics = run(train_args(data, out, "--strategy", "mirrored"), prelude=TWO_LOGICAL_CPUS)
    assert max_difference(run_weights(out), single["weights"]) < TOLERANCE
    assert abs(metrics["val_loss"] - single["metrics"]["val_loss"]) < TOLERANCE


@pytest.mark.distributed
def test_a_lost_worker_stops_the_job_and_resume_continues_it(data, single, tmp_path):
    out = tmp_path / "run"
    workers = start_workers(data, out)
    try:
        wait_for_checkpoint(out, workers[0])
        workers[1].kill()
        code, _, err = finish(workers[0], timeout=120)
    finally:
        stop(workers)
    assert code == 2
    assert "lost contact with another worker" in err and "--resume" in err
    (_, chief_out, chief_err), _ = finish_workers(start_workers(data, out, "--resume"))
    assert "resuming from ckpt-" in chief_err
    assert json.loads(chief_out)["epochs_completed"] == 2
    assert max_difference(run_weights(out), single["weights"]) < TOLERANCE


@pytest.mark.parametrize(("tf_config", "message"), [(None, "needs the TF_CONFIG"), ('{"cluster": {}}', "not a valid")])
def test_multi_worker_without_a_valid_tf_config_is_a_user_error(
    data, tmp_path, monkeypatch, capsys, tf_config, message
):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    if tf_config:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    assert main(train_args(data, tmp_path / "run", "--strategy", "multi-worker")) == 2
    assert message in capsys.readouterr().err


def test_tpu_strategy_without_a_tpu_is_a_user_error(data, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TPU_NAME", raising=False)
    assert main(train_args(data, tmp_path / "run", "--strategy", "tpu")) == 2
    error = capsys.readouterr().err
    assert "--strategy tpu found no TPU (TPU_NAME='local')" in error
    assert "Traceback" not in error and not (tmp_path / "run").exists()
