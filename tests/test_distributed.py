"""Distributed training equals single-process training: 2 workers on 127.0.0.1, and 2 mirrored logical CPUs."""

import json

import pytest
from training_runs import finish, max_difference, run, run_weights, start, stop, tf_configs, train_args, write_data

TOLERANCE = 1e-5
TWO_LOGICAL_CPUS = """
import tensorflow as tf
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
)
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def single(data, tmp_path_factory):
    """One process, one replica: the reference run."""
    out = tmp_path_factory.mktemp("single") / "run"
    metrics = run(train_args(data, out, "--strategy", "one"))
    return {"out": out, "metrics": metrics, "weights": run_weights(out)}


def test_two_workers_match_a_single_process(data, single, tmp_path):
    out = tmp_path / "run"
    workers = [
        start(train_args(data, out, "--strategy", "multi-worker"), env={"TF_CONFIG": config})
        for config in tf_configs(2)
    ]
    try:
        results = [finish(worker, timeout=300) for worker in workers]
    finally:
        stop(workers)
    for code, _, err in results:
        assert code == 0, err[-3000:]
    (_, chief_out, chief_err), (_, other_out, other_err) = results
    assert other_out == ""  # only the chief prints the result ...
    assert "epoch 1/2" in chief_err and "epoch 1/2" not in other_err  # ... and logs progress
    metrics = json.loads(chief_out)
    assert metrics["epochs_completed"] == 2
    assert abs(metrics["val_loss"] - single["metrics"]["val_loss"]) < TOLERANCE
    assert max_difference(run_weights(out), single["weights"]) < TOLERANCE


def test_mirrored_over_two_logical_cpus_matches_a_single_process(data, single, tmp_path):
    out = tmp_path / "run"
    metrics = run(train_args(data, out, "--strategy", "mirrored"), prelude=TWO_LOGICAL_CPUS)
    assert max_difference(run_weights(out), single["weights"]) < TOLERANCE
    assert abs(metrics["val_loss"] - single["metrics"]["val_loss"]) < TOLERANCE
