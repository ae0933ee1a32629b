"""Checkpoints for exact resume: weights, optimizer state, data position, RNG and early-stopping state.

Why not `keras.callbacks.BackupAndRestore` or `tf.train.CheckpointManager`:
BackupAndRestore with step-level saving restarts the epoch from batch 0 with
later weights (not exact: docs/design.md#checkpoints-and-resume), and neither records the position in a
seeded epoch or the early-stopping state. A checkpoint here is a folder

```
RUN_DIR/checkpoints/ckpt-EEEE-BBBBBB/   (epoch EEEE, BBBBBB batches of it done)
  variables.npz   model variables (dropout seed-generator states included),
                  optimizer variables (step counter, moments), best weights
  state.json      position, history, early stopping, the run config, the
                  fingerprints of its rows, and the SHA-256 of variables.npz
```

written in a `.partial` folder and renamed into place, so a crash never
leaves half a checkpoint under a final name; one that still fails to load
(checksum, missing file) is skipped with a warning and the previous one is
used. The newest `KEEP` checkpoints are kept.
"""

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from mmkeras.atomic_files import write_json_atomically
from mmkeras.data.rows_fingerprint import rows_change
from mmkeras.errors import UserError

# The folder's name is part of the run folder's format (`mmkeras.runs.is_checkpoints_folder`).
from mmkeras.runs import CHECKPOINTS_DIR

VARIABLES_FILE = "variables.npz"
STATE_FILE = "state.json"
KEEP = 2
# Settings that may differ between a run and its resumption: checkpoints written before `resume` became an
# argument of the job (instead of a RunConfig field) hold it in their settings.
RESUMABLE_DIFFERENCES = ("resume",)

logger = logging.getLogger("mmkeras")


@dataclasses.dataclass
class TrainingState:
    """Where a run is, beyond its variables.

    Args:
        epoch: the epoch being trained (0-based); equals the number of
            completed epochs at an epoch boundary.
        batch: batches of `epoch` already trained on.
        totals: loss sum, correct predictions and examples of `epoch` so far.
        history: per-epoch metrics of the completed epochs.
        epoch_seconds: wall time of each completed epoch.
        best_val_loss: the lowest validation loss so far, or `None`.
        epochs_without_improvement: epochs since `best_val_loss` improved.
        best_epoch: the epoch (1-based) of `best_val_loss`, whose weights are kept.
        stopped_early: early stopping ended the run.
        config: the run config (as a dict) the run was started with.
        rows: `{"data": rows_record, "val": rows_record}` of the manifests
            the run was started on (`mmkeras.data.rows_fingerprint`); `{}` in
            a checkpoint written before it was kept.
    """

    epoch: int = 0
    batch: int = 0
    totals: list = dataclasses.field(default_factory=lambda: [0.0, 0.0, 0.0])
    history: dict = dataclasses.field(default_factory=dict)
    epoch_seconds: list = dataclasses.field(default_factory=list)
    best_val_loss: float | None = None
    epochs_without_improvement: int = 0
    best_epoch: int | None = None
    stopped_early: bool = False
    config: dict = dataclasses.field(default_factory=dict)
    rows: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Checkpoint:
    """A loaded checkpoint: the state and the variable values by group (`model`, `optimizer`, `best`)."""

    path: Path
    state: TrainingState
    values: dict[str, list[np.ndarray]]


class Checkpoints:
    """The checkpoints of one run folder.

    Args:
        run_dir: the run folder; checkpoints live in `run_dir/checkpoints`.
        writer: whether this process writes (only the chief does under
            multi-worker training; every worker reads).

    Example:
    >>> checkpoints = Checkpoints("runs/demo", writer=True)                # doctest: +SKIP
    >>> checkpoints.save(state, {"model": model.variables,
    ...                          "optimizer": optimizer.variables})        # doctest: +SKIP
    >>> checkpoints.latest().state.epoch                                   # doctest: +SKIP
    1
    """

    def __init__(self, run_dir, *, writer: bool):
        self.folder = Path(run_dir) / CHECKPOINTS_DIR
        self.writer = writer

    def save(self, state: TrainingState, groups: dict[str, list]):
        """Write a checkpoint of `state` and the variables (or arrays) in `groups`, atomically."""
        if not self.writer:
            return
        name = f"ckpt-{state.epoch:04d}-{state.batch:06d}"
        partial = self.folder / f".partial-{name}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        arrays = {
            f"{group}/{index}": _to_array(value)
            for group, values in groups.items()
            for index, value in enumerate(values)
        }
        with open(partial / VARIABLES_FILE, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        record = {**dataclasses.asdict(state), "sha256": _sha256(partial / VARIABLES_FILE)}
        write_json_atomically(partial / STATE_FILE, record)
        final = self.folder / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        for old in self._names()[:-KEEP]:
            shutil.rmtree(self.folder / old, ignore_errors=True)

    def latest(self) -> Checkpoint | None:
        """The newest checkpoint that loads intact, or `None`; broken ones are skipped with a warning."""
        for name in reversed(self._names()):
            try:
                return _load(self.folder / name)
            except (OSError, ValueError, KeyError, TypeError) as error:
                logger.warning("skipping checkpoint %s: %s", self.folder / name, error)
        return None

    def clear(self):
        """Remove all checkpoints (a fresh run, or a finished one)."""
        if self.writer:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _names(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(path.name for path in self.folder.glob("ckpt-*") if path.is_dir())


def check_same_config(checkpoint: Checkpoint, config: dict, defaults: dict | None = None):
    """`UserError` when `config` differs from the checkpointed run's in anything but `--resume`.

    A setting the checkpoint lacks was added to mmkeras after it was written:
    it counts as its value in `defaults`, since a new setting's default is
    what the version before it did (`aux_loss_weight` 0.5 was a constant).
    """
    saved = {**(defaults or {}), **checkpoint.state.config}
    saved = {key: value for key, value in saved.items() if key not in RESUMABLE_DIFFERENCES}
    current = {key: value for key, value in config.items() if key not in RESUMABLE_DIFFERENCES}
    changed = sorted(key for key in saved.keys() | current.keys() if saved.get(key) != current.get(key))
    if changed:
        details = ", ".join(f"{key} {saved.get(key)!r} -> {current.get(key)!r}" for key in changed)
        raise UserError(
            f"--resume needs the same settings as the interrupted run; changed: {details}", path=checkpoint.path
        )


def check_same_rows(checkpoint: Checkpoint, rows: dict, files: dict):
    """`UserError` naming the manifest whose rows changed since the checkpointed run began.

    Args:
        checkpoint: the checkpoint `--resume` continues from.
        rows: `{"data": rows_record, "val": rows_record}` of this process's
            manifests (a key is missing where there is no such manifest).
        files: `{"data": path, "val": path}`, the manifests named in the error.

    A checkpoint written before the rows were kept has none, and resumes.
    """
    for key, saved in checkpoint.state.rows.items():
        change = rows_change(saved, rows[key]) if key in rows else "the run had one, this one has none"
        if change:
            raise UserError(
                f"--resume: the rows changed since the run began ({change}); restore the file, "
                "or train again without --resume",
                path=files.get(key) or checkpoint.path,
            )


def checkpoint_to_resume(checkpoints: Checkpoints, config: dict, defaults: dict | None = None) -> Checkpoint:
    """The checkpoint `--resume` continues from: the newest intact one, which must have the same settings.

    Args:
        checkpoints: the run folder's checkpoints.
        config: the settings of this process (as saved in `TrainingState.config`).
        defaults: each setting's default, for those a checkpoint of an
            older mmkeras lacks (`check_same_config`).

    Raises:
        UserError: no checkpoint to continue from, or one made with other settings.
    """
    resumed = checkpoints.latest()
    if resumed is None:
        raise UserError("--resume: no checkpoint to continue from in this run folder", path=checkpoints.folder.parent)
    check_same_config(resumed, config, defaults)
    return resumed


def restore(resumed: Checkpoint, model_variables: list, optimizer_variables: list) -> list | None:
    """Assign a checkpoint's model and optimizer values; return its best weights so far (or `None`)."""
    assign_values(model_variables, resumed.values["model"], "model", resumed.path)
    assign_values(optimizer_variables, resumed.values["optimizer"], "optimizer", resumed.path)
    state = resumed.state
    logger.info("resuming from %s (epoch %d, batch %d)", resumed.path.name, state.epoch + 1, state.batch)
    return resumed.values.get("best")


def assign_values(variables: list, values: list[np.ndarray], what: str, path: Path):
    """Assign checkpointed `values` to `variables` (`UserError` when they do not fit)."""
    shapes = [tuple(variable.shape) for variable in variables]
    if shapes != [value.shape for value in values]:
        raise UserError(f"the checkpoint's {what} variables do not fit this model", path=path)
    for variable, value in zip(variables, values):
        variable.assign(value)


def _load(path: Path) -> Checkpoint:
    record = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    if _sha256(path / VARIABLES_FILE) != record.pop("sha256"):
        raise ValueError(f"{VARIABLES_FILE} does not match its checksum")
    with np.load(path / VARIABLES_FILE) as archive:
        values: dict[str, list[np.ndarray]] = {}
        for key in sorted(archive.files, key=lambda key: (key.split("/")[0], int(key.split("/")[1]))):
            values.setdefault(key.split("/")[0], []).append(archive[key])
    return Checkpoint(path=path, state=TrainingState(**record), values=values)


def _to_array(value) -> np.ndarray:
    """A variable's (primary replica's) value, or an array as it is."""
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
