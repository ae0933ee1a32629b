"""Checks the CLI makes before TensorFlow is imported, so a user error returns in about a second.

Importing TensorFlow takes seconds; a missing manifest, an `--out` that is a
file, a folder that is not a run, or a base install without the training
extra should not wait for it. Everything here is TensorFlow-free and raises
`UserError` (one line, exit code 2).

Example:
>>> require_training_extra("train")  # doctest: +SKIP
>>> check_manifest("samples/train.csv", flag="--data")  # doctest: +SKIP
"""

import importlib.util
from pathlib import Path

from mmkeras.config import RunConfig
from mmkeras.data.manifest import Manifest, read_manifest
from mmkeras.errors import UserError
from mmkeras.runs import check_run_output, load_run_config
from mmkeras.runtime.bundle import BUNDLE_FILE

# What `pip install "mmkeras[train]"` adds to the base (device runtime) install.
TRAINING_MODULES = ("tensorflow", "keras", "keras_hub", "matplotlib")
TRAIN_EXTRA_HINT = 'pip install "mmkeras[train]"'


def require_training_extra(command: str):
    """`UserError` naming the install command when the training extra is missing (found without importing it)."""
    missing = [name for name in TRAINING_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(
            f"`mmkeras {command}` needs the training extra ({', '.join(missing)} not installed): {TRAIN_EXTRA_HINT}"
        )


def check_manifest(
    path, *, flag: str, require_labels: bool = True, on_bad_row: str = "fail", columns: dict[str, str] | None = None
) -> Manifest:
    """Read a manifest given with `flag` (every row checked, images not yet opened), `columns` as `read_manifest`."""
    path = Path(path)
    if path.is_dir():
        raise UserError(
            f"{flag} must be a manifest file (.csv, .jsonl or .parquet), not a folder; "
            f"mmkeras manifest {path} --out DIR writes them from a folder of photos",
            path=path,
        )
    return read_manifest(path, require_labels=require_labels, on_bad_row=on_bad_row, columns=columns)


def check_out_folder(path):
    """A run folder to write: new, empty, or holding an mmkeras run (never the user's other files)."""
    check_run_output(path)


def check_output_folder(path, *, flag: str = "--out"):
    """A folder for results (cv, compare, explain): it may exist, but not as a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} must be a folder; a file of that name exists", path=path)


def check_output_file(path, *, flag: str = "--out"):
    """A file to write: its folder must exist, and the path must not be a folder."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} must be a file name; this is a folder", path=path)
    if not path.absolute().parent.is_dir():
        raise UserError(f"{flag}: the folder {path.absolute().parent} does not exist", path=path)


def check_run_folder(path) -> RunConfig:
    """A run folder written by `train` or `qat`: its config (its model is checked to be a Keras archive, not loaded)."""
    return load_run_config(path)


def is_bundle_folder(path) -> bool:
    return (Path(path) / BUNDLE_FILE).is_file()
