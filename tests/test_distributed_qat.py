"""QAT fine-tuning under tf.distribute, or killed and resumed, equals single uninterrupted QAT: weights and ranges.

The fake quantizers' ranges follow the min/max of each training batch; with
N replicas each sees 1/N of the global batch, so these tests fail unless the
replicas combine their min/max into the global batch's (`fake_quant._global_min_max`).
"""

import json

import numpy as np
import pytest

from mmkeras.config import RunConfig
from mmkeras.data.manifest import read_manifest
from mmkeras.models import build_model
from mmkeras.runs import save_run
from tests.helpers.training_runs import (
    QAT_RELATIVE_TOLERANCE,
    QAT_WEIGHT_TOLERANCE,
    TWO_LOGICAL_CPUS,
    finish,
    finish_workers,
    kill_at_first_checkpoint,
    max_difference,
    qat_state,
    run_logged,
    start,
    stop,
    tf_configs,
    write_data,
)

pytestmark = pytest.mark.distributed  # every test runs several processes or replicas, or kills one

SEQUENCE_LENGTH = 16
# 16 training rows in global batches of 6: 6 + 6 + 4 (3 + 3 and 2 + 2 rows per replica).
QAT_FLAGS = ("--epochs", "2", "--batch-size", "6", "--calibration-batches", "1", "--learning-rate", "3e-3")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def float_run(data, tmp_path_factory):
    """A float run of a tiny BERT + ViT + cross-attention model, no dropout, the ViT frozen.

    Per-channel weight quantizers put one kernel element per output channel exactly on its range's
    edge, where the straight-through gradient is kept or cut by the last bit of the range, so a
    replica's other summation order moves trained convolution kernels apart (4e-5 after 6 updates
    with the tiny CNN, measured, with right ranges). The frozen ViT (its patch embedding is a
    convolution) still runs and updates its activation ranges.
    """
    manifest = read_manifest(data["train"])
    labels = manifest.labels()
    model, preprocessor = build_model(
        num_classes=len(labels), texts=[row.text for row in manifest.rows if row.text],
        vision_backbone="tiny-vit", sequence_length=SEQUENCE_LENGTH, fusion_dim=32, dropout=0.0, seed=0,
    )  # fmt: skip
    model.get_layer("vision_backbone").trainable = False
    run_dir = tmp_path_factory.mktemp("runs") / "float"
    config = RunConfig(
        data=str(data["train"]), vision_backbone="tiny-vit", sequence_length=SEQUENCE_LENGTH, fusion_dim=32,
        dropout=0.0, freeze="vision", seed=3,
    )
    save_run(run_dir, model=model, preprocessor=preprocessor, labels=labels, config=config)
    return run_dir


def qat_args(float_run, data, out, strategy: str) -> list[str]:
    return [
        "qat", str(float_run), "--data", str(data["train"]), "--val", str(data["val"]), "--out", str(out),
        *QAT_FLAGS, "--strategy", strategy, "--json",
    ]  # fmt: skip


def run_qat(args, **kwargs) -> tuple[dict, str]:
    """`mmkeras qat ARGS` in a child process (backbone dropout off): its JSON result and its log."""
    return run_logged(args, timeout=180, **kwargs)


@pytest.fixture(scope="module")
def single(float_run, data, tmp_path_factory):
    """One process, one replica: the reference QAT run."""
    out = tmp_path_factory.mktemp("single") / "qat"
    metrics, _ = run_qat(qat_args(float_run, data, out, "one"))
    weights, ranges = qat_state(out)
    return {"metrics": metrics, "weights": weights, "ranges": ranges}


def assert_same_qat(out, metrics, single):
    weights, ranges = qat_state(out)
    # The ranges moved away from the calibration batch during training, far more than the tolerance.
    assert np.all(ranges[:, 1] >= ranges[:, 0]) and np.max(np.abs(ranges)) > 0.1
    assert np.max(np.abs(ranges - single["ranges"])) < QAT_RELATIVE_TOLERANCE * np.max(np.abs(single["ranges"]))
    assert max_difference(weights, single["weights"]) < QAT_WEIGHT_TOLERANCE
    for key in ("initial_loss", "loss", "val_loss"):
        assert abs(metrics[key] - single["metrics"][key]) < QAT_RELATIVE_TOLERANCE * abs(single["metrics"][key])


def test_mirrored_qat_over_two_logical_cpus_matches_a_single_process(float_run, data, single, tmp_path):
    out = tmp_path / "qat"
    metrics, err = run_qat(qat_args(float_run, data, out, "mirrored"), prelude=TWO_LOGICAL_CPUS)
    assert "2 replica(s)" in err
    assert_same_qat(out, metrics, single)


def test_two_worker_qat_matches_a_single_process(float_run, data, single, tmp_path):
    out = tmp_path / "qat"
    workers = [
        start(qat_args(float_run, data, out, "multi-worker"), env={"TF_CONFIG": config}) for config in tf_configs(2)
    ]
    (_, chief_out, chief_err), (_, other_out, _) = finish_workers(workers)
    assert other_out == "" and "2 replica(s)" in chief_err  # only the chief prints the result
    assert_same_qat(out, json.loads(chief_out), single)


def test_killed_qat_resumes_to_the_uninterrupted_weights(float_run, data, single, tmp_path):
    out = tmp_path / "qat"
    # 3 updates per epoch, a checkpoint after each: the kill lands mid-epoch or at an epoch boundary.
    args = [*qat_args(float_run, data, out, "one"), "--checkpoint-steps", "1"]
    kill_at_first_checkpoint(args, out)
    other_settings = start([*args, "--epochs", "3", "--calibration-batches", "2", "--resume"])
    try:
        code, _, err = finish(other_settings, timeout=120)
    finally:
        stop([other_settings])
    assert code == 2 and "changed: calibration_batches 1 -> 2, epochs 2 -> 3" in err
    metrics, err = run_qat([*args, "--resume"])
    assert "resuming from ckpt-" in err
    assert_same_qat(out, metrics, single)
    assert not (out / "checkpoints").exists()  # a finished run keeps no checkpoints
