"""Training on cached features, and QAT of such a run, over 2 mirrored replicas equals one process.

`--freeze both --cache-features` trains the head on batches read from the feature cache
(`CachedFeatures.dataset`), and `mmkeras qat` of that run on the calibrated backbones' cached fake-quantized
features (`quantized_head_data`). Those batches come from a `numpy_function`, with no `batch` op whose size
tf.distribute can read, so each global batch is split by TensorFlow's fallback (`_LegacyRebatchDataset`, not
the `rebatch` the uncached pipeline gets); these tests hold the
2-replica runs to the single process's steps, weights, losses and (QAT) ranges, and check that the features are
computed once per process under the same key (not per replica, not again). Measured differences:
docs/design.md#cached-features-under-several-replicas.
"""

import re

import numpy as np
import pytest

from mmkeras.export.converter import export_bundle
from mmkeras.runtime.interpreter import list_ops
from tests.helpers.training_runs import (
    QAT_RELATIVE_TOLERANCE,
    QAT_WEIGHT_TOLERANCE,
    TOLERANCE,
    TWO_LOGICAL_CPUS,
    max_difference,
    qat_state,
    run_logged,
    run_weights,
    train_args,
    write_data,
)

pytestmark = pytest.mark.distributed  # every test runs 2 replicas in a child process

# 16 training rows in global batches of 5: 5 + 5 + 5 + 1, i.e. 3 + 2 rows per replica, then 1 + 0 (one replica's
# share of the last batch is empty). SGD, not the default AdamW: its update is proportional to the gradient, so
# every replica reading the whole global batch (2x the gradient) puts the weights 1.5e-2 away; AdamW, whose update
# divides by the gradient's size, only 7.4e-4 (docs/design.md#cached-features-under-several-replicas).
CACHED_RUN = {"batch_size": 5, "optimizer": "sgd", "freeze": "both", "cache_features": True}
QAT_FLAGS = ("--epochs", "2", "--batch-size", "5", "--calibration-batches", "1", "--learning-rate", "3e-3")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("data"), **CACHED_RUN)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """The single-process runs' feature cache (float run and QAT), which the float run's config records."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def single(data, cache_dir, tmp_path_factory):
    """One process, one replica: the reference float run, which computes the training and validation features."""
    out = tmp_path_factory.mktemp("single") / "run"
    metrics, log = run_logged(train_args(data, out, "--strategy", "one", "--cache-dir", cache_dir))
    return {"out": out, "metrics": metrics, "log": log, "weights": run_weights(out)}


def updates(log: str) -> list[str]:
    """The progress line that ends each epoch ("epoch 1/2: 4/4"): the number of steps each epoch took."""
    return re.findall(r"epoch \d+/\d+: (\d+)/\1 ", log)


def computed(log: str) -> list[str]:
    """How many rows each feature cache computed by this process held, in order."""
    return re.findall(r"features of (\d+) rows cached in", log)


def cache_files(folder) -> dict:
    """Every file of every cache in `folder` but `meta.json` (which records when it was written): its bytes."""
    return {path.relative_to(folder): path.read_bytes() for path in folder.glob("*/*.npy")}


def test_cached_training_over_two_logical_cpus_matches_a_single_process(data, single, cache_dir, tmp_path):
    own_cache = tmp_path / "cache"
    metrics, log = run_logged(
        train_args(data, tmp_path / "run", "--strategy", "mirrored", "--cache-dir", own_cache), prelude=TWO_LOGICAL_CPUS
    )
    assert "2 replica(s)" in log
    # Computed once per dataset in this process (not per replica), into the same keys and bytes as one replica's.
    assert computed(log) == computed(single["log"]) == ["16", "8"]
    assert cache_files(own_cache) == cache_files(cache_dir)
    assert updates(log) == updates(single["log"]) == ["4", "4"]
    assert metrics["epochs_completed"] == single["metrics"]["epochs_completed"] == 2
    assert max_difference(run_weights(tmp_path / "run"), single["weights"]) < TOLERANCE
    for key in ("loss", "val_loss"):
        assert abs(metrics[key] - single["metrics"][key]) < TOLERANCE


def qat_args(float_run, data, out, strategy: str) -> list[str]:
    return [
        "qat", str(float_run), "--data", str(data["train"]), "--val", str(data["val"]), "--out", str(out),
        *QAT_FLAGS, "--strategy", strategy, "--json",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def single_qat(data, single, cache_dir, tmp_path_factory):
    """One process's QAT of the single float run: it caches the fake-quantized features beside the float ones."""
    out = tmp_path_factory.mktemp("single_qat") / "qat"
    metrics, log = run_logged(qat_args(single["out"], data, out, "one"), timeout=180)
    assert computed(log) == ["16", "8"] and len(list(cache_dir.iterdir())) == 4
    weights, ranges = qat_state(out)
    return {"metrics": metrics, "log": log, "weights": weights, "ranges": ranges}


def test_cached_qat_over_two_logical_cpus_matches_a_single_process_and_exports_int8(
    data, single, single_qat, cache_dir, tmp_path
):
    out = tmp_path / "qat"
    metrics, log = run_logged(qat_args(single["out"], data, out, "mirrored"), timeout=180, prelude=TWO_LOGICAL_CPUS)
    # The 2-replica process calibrated to the same ranges bit for bit, so it found the single process's
    # quantized features under their key instead of computing new ones.
    assert "2 replica(s)" in log and computed(log) == [] and len(list(cache_dir.iterdir())) == 4
    assert log.count("reusing the cached features") == 2
    assert updates(log) == updates(single_qat["log"]) == ["4", "4"]
    weights, ranges = qat_state(out)
    scale = np.max(np.abs(single_qat["ranges"]))
    assert np.max(np.abs(ranges - single_qat["ranges"])) < QAT_RELATIVE_TOLERANCE * scale
    assert max_difference(weights, single_qat["weights"]) < QAT_WEIGHT_TOLERANCE
    for key in ("initial_loss", "loss", "val_loss", "final_loss"):
        expected = single_qat["metrics"][key]
        assert abs(metrics[key] - expected) < QAT_RELATIVE_TOLERANCE * abs(expected)
    report = export_bundle(out, tmp_path / "int8", quantize="int8")
    compute = [op for op in list_ops(tmp_path / "int8" / "model.tflite") if op.name in ("FULLY_CONNECTED", "CONV_2D")]
    assert report["qat"] and compute and all(op.output_dtypes == ("int8",) for op in compute)
