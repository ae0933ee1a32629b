"""The run folder: everything a trained run needs to be evaluated, fine-tuned or exported.

```
RUN_DIR/
  model.keras         the model (best validation checkpoint when a validation set was given)
  labels.json         class names in logit order
  preprocessor.json   text and image preprocessing settings (shared with the device bundle)
  tokenizer.json      the Hugging Face tokenizer (the same file the device uses)
  config.yaml         the resolved RunConfig
  history.json        per-epoch metrics
  metrics.json        the final figures `mmkeras train --json` prints
  skipped_rows.csv    the rows `--on-bad-row skip` dropped (file, line, reason), when any
  bundles.json        the bundles exported or evaluated from the run, wherever they were written
```

`train` and `qat` write only into a new or empty folder, or one holding a run
(`check_run_output`): the user's own files are never deleted or mixed in.

A QAT run (`mmkeras qat`) has two more files, and its `model.keras` is the
float model the fine-tune started from:

```
  quantization.json   the QAT marker: quantizer settings and the float run it came from
  qat.weights.h5      every weight of the QAT model, fake-quantizer ranges included
```

A fake-quantized keras-hub model does not survive a `.keras` round trip (the
blocks' configs rebuild float sub-layers), so `load_run`
(`mmkeras.quantization.run_loading`) rebuilds it: it loads the float
`model.keras`, applies the same `quantize_model` transform and loads
`qat.weights.h5`, which restores the QAT model exactly.

This module is the folder's format and imports no Keras or TensorFlow (the
runtime, reports and the CLI's checks read run folders with it); loading the
model is `load_run`'s, one layer up (`mmkeras.layers`).
"""

import csv
import json
import logging
import re
import shutil
import zipfile
from collections.abc import Mapping
from pathlib import Path

from mmkeras.atomic_files import write_atomically, write_json_atomically
from mmkeras.config import RunConfig
from mmkeras.errors import UserError
from mmkeras.preprocessing.multimodal_preprocessor import (
    CONFIG_FILE as PREPROCESSOR_FILE,
)
from mmkeras.preprocessing.multimodal_preprocessor import TOKENIZER_FILE

MODEL_FILE = "model.keras"
LABELS_FILE = "labels.json"
CONFIG_FILE = "config.yaml"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
QUANTIZATION_FILE = "quantization.json"
# Quantizer settings a QAT run's quantization.json lacks when an older mmkeras wrote it: the graph it was
# trained as. Before `integer_only` existed, QAT fake-quantized hard-swish; rebuilt without it, the model
# would have other variables than its saved weights; before `float_attention`, it fake-quantized the whole attention.
SETTINGS_OF_OLDER_QAT_RUNS = {"integer_only": True, "float_attention": False}
QAT_WEIGHTS_FILE = "qat.weights.h5"
SKIPPED_ROWS_FILE = "skipped_rows.csv"
REPORT_FILE = "report.html"
RESULTS_CSV = "results.csv"  # one row per epoch (`training.epoch_log`)
BUNDLE_FILE = "bundle.json"  # a bundle folder's (`runtime.bundle`): a bundle names the run it came from
TENSORBOARD_FOLDER = "tensorboard"
# The bundles exported or evaluated from the run (`evaluation.report.record_bundle`) and `recorded_bundles`.
BUNDLES_FILE = "bundles.json"
# What `evaluate` writes into a run or a bundle folder (`mmkeras.evaluation.results_folder`).
RESULTS_FOLDER = "results"
# `training.checkpoints.Checkpoints` writes here, one folder per checkpoint (and `.partial-` while written).
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_NAME = re.compile(r"(\.partial-)?ckpt-\d{4,}-\d{6,}")
# The name `build_dual_encoder` gives its model (kept in model.keras): an align run's.
DUAL_ENCODER_NAME = "mmkeras_dual_encoder"
# Every name a run folder may hold: `train` and `qat` write into a folder only when it holds nothing else.
RUN_ENTRIES = frozenset(
    {
        MODEL_FILE,
        LABELS_FILE,
        CONFIG_FILE,
        HISTORY_FILE,
        METRICS_FILE,
        QUANTIZATION_FILE,
        QAT_WEIGHTS_FILE,
        SKIPPED_ROWS_FILE,
        CHECKPOINTS_DIR,
        REPORT_FILE,
        RESULTS_CSV,
        TENSORBOARD_FOLDER,
        RESULTS_FOLDER,
        PREPROCESSOR_FILE,
        TOKENIZER_FILE,
        BUNDLES_FILE,
    }
)
# Files an atomic write leaves behind when killed (`atomic_files.write_atomically`).
PARTIAL_PREFIX = "partial-"
# Entries shown when a folder holds files that are not a run's.
_FOREIGN_SHOWN = 5
# Settings that run folders of older mmkeras versions saved and that are no longer settings.
RETIRED_SETTINGS = ("resume",)


def save_run(
    run_dir,
    *,
    model,
    preprocessor,
    labels,
    config,
    history=None,
    metrics=None,
    quantization=None,
    float_model_file=None,
    skipped_rows=(),
):
    """Write a run folder (see the module docstring). Existing files are replaced atomically.

    For a QAT run, give `quantization` (written to `quantization.json`; its
    `settings` are the `QuantizerSettings` fields) and the `float_model_file`
    the QAT model was made from; `model` is then the QAT model, saved as weights.
    `skipped_rows` (`BadRow`s) go to `skipped_rows.csv`. Files of an earlier
    run that this one does not have (a QAT record, skipped rows) are removed,
    so the folder never mixes two runs.

    Example:
    >>> save_run("runs/demo", model=model, preprocessor=preprocessor,
    ...          labels=["cat", "dog"], config=config)  # doctest: +SKIP
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if quantization is None:
        write_atomically(run_dir / MODEL_FILE, model.save)
    else:
        _save_qat_model(run_dir, model, quantization, float_model_file)
    preprocessor.save(run_dir)
    write_json_atomically(run_dir / LABELS_FILE, list(labels))
    config.save_yaml(run_dir / CONFIG_FILE)
    if history is not None:
        write_json_atomically(run_dir / HISTORY_FILE, history)
    if metrics is not None:
        write_json_atomically(run_dir / METRICS_FILE, metrics)
    write_skipped_rows(run_dir / SKIPPED_ROWS_FILE, skipped_rows)
    if quantization is None:
        for stale in (QUANTIZATION_FILE, QAT_WEIGHTS_FILE):
            (run_dir / stale).unlink(missing_ok=True)


def write_skipped_rows(path: Path, skipped_rows):
    """`file,line,reason` per skipped row (a run's, or `cv`'s before its split); no file when no row was skipped."""
    if not skipped_rows:
        path.unlink(missing_ok=True)
        return

    def write(partial: Path):
        with partial.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file", "line", "reason"])
            writer.writerows([str(row.path), row.line, row.reason] for row in skipped_rows)

    write_atomically(path, write)


def check_run_output(run_dir) -> bool:
    """Whether `run_dir` may receive a run, and whether it holds one already.

    A missing or empty folder, or one that holds only the files of an mmkeras
    run, may be written; anything else there belongs to the user and is never
    deleted or mixed with a run.

    Returns:
        `True` when the folder holds a run that the new one will replace.

    Raises:
        UserError: `run_dir` is a file, or a folder holding other files.

    Example:
    >>> check_run_output("runs/new")  # doctest: +SKIP
    False
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        return False
    if not run_dir.is_dir():
        raise UserError("--out must be a folder; a file of that name exists", path=run_dir)
    foreign = sorted(entry.name for entry in run_dir.iterdir() if not _is_run_entry(entry))
    if foreign:
        shown = ", ".join(foreign[:_FOREIGN_SHOWN])
        if len(foreign) > _FOREIGN_SHOWN:
            shown += f", ... ({len(foreign)} in all)"
        raise UserError(
            f"the folder holds files that are not an mmkeras run ({shown}); "
            "choose an empty or new folder for --out, nothing there is replaced",
            path=run_dir,
        )
    return is_run_folder(run_dir)


def _is_run_entry(entry: Path) -> bool:
    """Whether a file or folder inside a run folder is the run's (a `checkpoints` folder only when ours)."""
    if entry.name == CHECKPOINTS_DIR:
        return is_checkpoints_folder(entry)
    return entry.name in RUN_ENTRIES or entry.name.startswith(PARTIAL_PREFIX)


def is_run_folder(path) -> bool:
    return (Path(path) / MODEL_FILE).is_file() and (Path(path) / LABELS_FILE).is_file()


def load_run_config(run_dir) -> RunConfig:
    """The resolved config of a run folder, without loading its model (`UserError` if it is not a run folder).

    Cheap and free of TensorFlow work: `qat` reads the run's strategy from it
    before MultiWorkerMirroredStrategy may be set up.
    """
    run_dir = Path(run_dir)
    if not is_run_folder(run_dir):
        raise UserError(f"not a run folder (needs {MODEL_FILE} and {LABELS_FILE})", path=run_dir)
    check_model_archive(run_dir / MODEL_FILE)
    read_labels(run_dir)
    return RunConfig.from_yaml(run_dir / CONFIG_FILE, ignored=RETIRED_SETTINGS)


def manifest_columns(target, overrides: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The manifest column names to read for `target`, with the `overrides` that are not `None`.

    A run folder's own (`RunConfig.columns`); for a bundle, those of the run
    it was exported from while that run is where it was; else `text`,
    `image`, `label`. `overrides` come from `--text-column` and co.

    Example:
    >>> manifest_columns("bundles/demo", {"text": "caption", "image": None})  # doctest: +SKIP
    {'text': 'caption', 'image': 'image', 'label': 'label'}
    """
    source = _source_run(target) if (Path(target) / BUNDLE_FILE).is_file() else target
    columns = load_run_config(source).columns if source and is_run_folder(source) else RunConfig().columns
    return {**columns, **{role: name for role, name in (overrides or {}).items() if name is not None}}


def _source_run(bundle_dir) -> str | None:
    """The run a bundle was exported from, as its bundle.json names it (`None` when it cannot be read)."""
    try:
        source = json.loads((Path(bundle_dir) / BUNDLE_FILE).read_text(encoding="utf-8")).get("source_run")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None
    return source if isinstance(source, str) else None


def read_labels(run_dir) -> list[str]:
    """A run's class names from `labels.json` (`UserError` naming the file unless a list of distinct names).

    The list is empty for an align run whose pairs had no label column.
    """
    path = Path(run_dir) / LABELS_FILE
    labels = read_json(path)
    if not (isinstance(labels, list) and all(isinstance(label, str) and label for label in labels)):
        raise UserError("labels.json must hold a list of class names (non-empty strings)", path=path)
    if len(set(labels)) != len(labels):
        raise UserError("labels.json repeats a class name", path=path)
    return labels


def read_json(path: Path):
    """A JSON file of the run folder (`UserError` naming it when missing or unreadable)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError("file not found", path=path) from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read: {getattr(error, 'strerror', None) or error}", path=path) from None
    except json.JSONDecodeError as error:
        raise UserError(f"invalid JSON: {error.msg}", path=path, row=error.lineno) from None


def check_model_archive(path: Path):
    """A `.keras` file is a zip holding `config.json`: a truncated or foreign file is found without TensorFlow."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError) as error:
        raise UserError(f"not a Keras model file (a truncated or damaged zip: {error})", path=path) from None
    if "config.json" not in names:
        raise UserError("not a Keras model file: the archive has no config.json", path=path)


def _save_qat_model(run_dir: Path, model, quantization: dict, float_model_file):
    if float_model_file is None:
        raise ValueError("a QAT run needs the float model file it was made from")
    if Path(float_model_file).resolve() != (run_dir / MODEL_FILE).resolve():
        write_atomically(run_dir / MODEL_FILE, lambda partial: shutil.copyfile(float_model_file, partial))
    write_atomically(run_dir / QAT_WEIGHTS_FILE, model.save_weights)
    write_json_atomically(run_dir / QUANTIZATION_FILE, quantization)


def is_checkpoints_folder(folder: Path) -> bool:
    """Whether `folder` holds nothing but what `Checkpoints` writes (so a fresh run may clear it).

    Example:
    >>> is_checkpoints_folder(Path("runs/demo/checkpoints"))  # doctest: +SKIP
    True
    """
    return folder.is_dir() and all(
        entry.is_dir() and CHECKPOINT_NAME.fullmatch(entry.name) for entry in folder.iterdir()
    )


def is_align_run(run_dir) -> bool:
    """Whether a run folder holds a dual encoder (`mmkeras align`), read from model.keras without Keras."""
    try:
        with zipfile.ZipFile(Path(run_dir) / MODEL_FILE) as archive:
            model_config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return False
    return model_config.get("config", {}).get("name") == DUAL_ENCODER_NAME


def recorded_bundles(run_dir) -> list[dict]:
    """The entries of a run's `bundles.json` (`path`, `quantization`, `size_bytes`), in the order recorded.

    A missing file is an empty list; a damaged one is logged and read as empty (it only lists bundles).
    """
    path = Path(run_dir) / BUNDLES_FILE
    try:
        listed = json.loads(path.read_text(encoding="utf-8"))["bundles"]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, TypeError, KeyError) as error:
        logging.getLogger("mmkeras").warning("ignoring %s: %s", path, error)
        return []
    return [entry for entry in listed if isinstance(entry, dict) and isinstance(entry.get("path"), str)]


def write_recorded_bundles(run_dir, entries: list[dict]):
    """Replace a run's `bundles.json` with `entries` (atomically)."""
    write_json_atomically(Path(run_dir) / BUNDLES_FILE, {"bundles": entries})
