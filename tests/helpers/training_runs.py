"""Helpers for tests that run `mmkeras train` in child processes (distributed, resume)."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import yaml

from tests.helpers.cli import SAMPLES, write_subset

# Small enough for 2 cores: 16 rows, global batch 8 (2 updates per epoch), no dropout so replicas can agree.
TRAIN_ROWS, VAL_ROWS = 16, 8
RUN_SETTINGS = {"epochs": 2, "batch_size": 8, "seed": 3, "dropout": 0.0, "fusion_dim": 32, "sequence_length": 16}
ENTRY = "import sys; from mmkeras.cli.app import main; sys.exit(main())\n"
# The tiny BERT has dropout 0.1 built in (keras-hub's default; RunConfig.dropout reaches only the fusion).
# Dropout masks depend on the per-replica batch and on XLA, so runs that must agree to 1e-5 turn it off.
NO_BACKBONE_DROPOUT = """
import keras_hub
_bert_init = keras_hub.models.BertBackbone.__init__
def _bert_without_dropout(self, *args, **kwargs):
    _bert_init(self, *args, **{**kwargs, "dropout": 0.0})
keras_hub.models.BertBackbone.__init__ = _bert_without_dropout
"""

# Distributed float training equals one process within this (docs/design.md#distributed-training-loop).
TOLERANCE = 1e-5
# Distributed QAT against one process (tests/test_distributed_qat.py):
# Ranges and losses may differ by this fraction of their scale (the largest range; the loss itself). The order
# of a float32 sum depends on the strategy and on the CPU model (TensorFlow's oneDNN kernels are chosen for
# it), and the rounding it leaves grows with the size of what is summed, so the tolerance is relative: an
# absolute 1e-5 held on AMD EPYC (mirrored: within 8e-8 of the scale) and failed on an Intel Xeon (2.1e-5).
# Uncombined per-replica ranges put ranges 7.6e-3 and losses 9.5e-3 to 4.4e-2 of their scale away
# (docs/design.md#cpu-dependent-test-tolerances).
QAT_RELATIVE_TOLERANCE = 1e-4
# With the attention's queries float (`QuantizerSettings.float_attention`), the largest attention score of a
# batch sits exactly on the score quantizer's range edge, where the straight-through gradient is kept or cut by
# its last bit; a replica's other summation order moved one query kernel 1.2e-5 from the single process's (all
# other weights within 3.4e-6). Uncombined per-replica ranges move ranges, losses and weights far more.
QAT_WEIGHT_TOLERANCE = 3e-5

# MirroredStrategy over 2 replicas on a CPU: a child process's prelude (before TensorFlow starts).
TWO_LOGICAL_CPUS = """
import tensorflow as tf
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
)
"""


def write_data(folder: Path, **settings) -> dict:
    """Train/val manifests and a run.yaml (RUN_SETTINGS updated with `settings`) in `folder`."""
    config = folder / "run.yaml"
    config.write_text(yaml.safe_dump({**RUN_SETTINGS, **settings}))
    return {
        "train": write_subset(SAMPLES / "train.csv", folder / "train.csv", TRAIN_ROWS),
        "val": write_subset(SAMPLES / "val.csv", folder / "val.csv", VAL_ROWS),
        "config": config,
    }


def train_args(data: dict, out: Path, *extra) -> list[str]:
    return [
        "train",
        "--config",
        str(data["config"]),
        "--data",
        str(data["train"]),
        "--val",
        str(data["val"]),
        "--out",
        str(out),
        "--json",
        *map(str, extra),
    ]


def start(args: list[str], env: dict | None = None, prelude: str = "") -> subprocess.Popen:
    """`mmkeras ARGS` in a child process (backbone dropout off, `prelude` Python code first), output captured."""
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-c", NO_BACKBONE_DROPOUT + prelude + ENTRY, *args],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen, timeout: float) -> tuple[int, str, str]:
    """Wait for `process` (killed on timeout), then its exit code, stdout and stderr."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"timed out after {timeout}s; stderr:\n{err[-3000:]}") from None
    return process.returncode, out, err


def stop(processes: list[subprocess.Popen]):
    """Kill the children still running (by their handles) and reap them."""
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.communicate()


def run(args: list[str], timeout: float = 120, **kwargs) -> dict:
    """Run `mmkeras ARGS --json` to the end and return its JSON result."""
    return run_logged(args, timeout, **kwargs)[0]


def run_logged(args: list[str], timeout: float = 120, **kwargs) -> tuple[dict, str]:
    """Run `mmkeras ARGS --json` to the end: its JSON result and its log (stderr)."""
    process = start(args, **kwargs)
    try:
        code, out, err = finish(process, timeout)
    finally:
        stop([process])
    assert code == 0, err[-3000:]
    return json.loads(out), err


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tf_configs(workers: int) -> list[str]:
    """TF_CONFIG values for `workers` local workers (worker 0 is the chief)."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(workers)]}
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}) for index in range(workers)]


def run_weights(run_dir: Path) -> list[np.ndarray]:
    import mmkeras.models  # noqa: F401  (registers the custom layers)

    return keras.models.load_model(run_dir / "model.keras", compile=False).get_weights()


def qat_state(run_dir: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """Every weight of a QAT run's model, and its activation ranges as rows of (min, max)."""
    from mmkeras.quantization.qat_transform import activation_quantizers
    from mmkeras.quantization.run_loading import load_run

    model = load_run(run_dir).model
    ranges = [(q.range_min.numpy(), q.range_max.numpy()) for q in activation_quantizers(model)]
    return model.get_weights(), np.asarray(ranges, np.float64)


def max_difference(first: list[np.ndarray], second: list[np.ndarray]) -> float:
    assert [a.shape for a in first] == [b.shape for b in second]
    return max(float(np.max(np.abs(a.astype(np.float64) - b))) for a, b in zip(first, second) if a.size)


def wait_for_checkpoint(run_dir: Path, process: subprocess.Popen, timeout: float = 240.0):
    """Return once `run_dir` holds a checkpoint (fail if `process` ends first or on timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if list((run_dir / "checkpoints").glob("ckpt-*")):
            return
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint appeared (exit code {process.poll()})")


def kill_at_first_checkpoint(args: list[str], run_dir: Path):
    """Start `mmkeras ARGS`, SIGKILL it once `run_dir` holds a checkpoint, and check it left no finished run."""
    process = start(args)
    try:
        wait_for_checkpoint(run_dir, process)
        process.kill()  # SIGKILL: no cleanup, no final save
        code, _, _ = finish(process, timeout=30)
    finally:
        stop([process])
    assert code == -9 and not (run_dir / "model.keras").exists()


def finish_workers(workers) -> list[tuple[int, str, str]]:
    """Wait for every worker (300 s each), end them all whatever happens, and check that each succeeded."""
    try:
        results = [finish(worker, timeout=300) for worker in workers]
    finally:
        stop(workers)
    for code, _, err in results:
        assert code == 0, err[-3000:]
    return results


class SimulatedCrash(Exception):
    """A process dying mid-run: `crashing_at_checkpoint` raises it."""


@contextlib.contextmanager
def crashing_at_checkpoint(monkeypatch, number: int):
    """Within the block, the `number`-th checkpoint is written, then `SimulatedCrash` raised: a crash right after it."""
    from mmkeras.training.checkpoints import Checkpoints

    save = Checkpoints.save
    saves = []

    def save_then_crash(self, *args, **kwargs):
        save(self, *args, **kwargs)
        saves.append(1)
        if len(saves) == number:
            raise SimulatedCrash

    monkeypatch.setattr(Checkpoints, "save", save_then_crash)
    try:
        yield
    finally:
        monkeypatch.setattr(Checkpoints, "save", save)
