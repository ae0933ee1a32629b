"""`cross_validate`: stratified K-fold cross-validation, one run per fold, mean and spread of every figure.

```
CV_DIR/
  folds.json          the split: manifest, K, seed, each row's fold, a fingerprint of the rows (a rerun
                      must match it)
  fold-1/
    train.csv         the rows of the other folds, each with its file and line in the manifest
    test.csv          this fold's rows, the same way
    run/              the fold's run folder, evaluated on test.csv (run/results/test/)
  ...
  skipped_rows.csv    the bad rows `--on-bad-row skip` dropped before the split, the validation manifest's
                      too (file, line, reason), when any
  cv.json             every fold's figures, and their mean and standard deviation
```

A fold whose run holds its evaluation is finished: running the same
command again after an interruption skips it, continues an interrupted
fold's training from its checkpoint (`train(..., resume=True)`) and starts
the others. The held-out fold never picks weights: early stopping uses the
config's `val` manifest when one is given, else every epoch trains.

A rerun reads the manifest again: images a Parquet manifest holds as bytes
are written again after `mmkeras cache clear`, to the same content-named
files the folds' manifests list, beside the user's name for each
(`source_image`, which a fold's predictions.csv shows); a manifest whose
rows changed since the split was made (`rows_fingerprint`) is refused
(docs/design.md#parquet-images-in-cache-list-and-cache-clear).

Bad rows (a malformed line, an unreadable image, ...) fail or are skipped
as `config.on_bad_row` says once, before the split (`usable_rows`): a
skipped row is in no fold. The validation manifest is read and its images
checked once too, and handed to every fold's run: each of its bad rows is
logged once, and listed with the data's in `CV_DIR/skipped_rows.csv`.

Each fold manifest row names the user's file and the row's line in it
(`source_manifest`, `source_line`), so a fold's predictions.csv, its
report and an error about the row (an unreadable image, a label the
other folds lack) name the line of the user's file, not of `test.csv`
(`Manifest.where`; docs/design.md#cv-names-the-users-lines).

Example:
>>> summary = cross_validate(RunConfig(data="data.csv", out="cv/demo", epochs=5), folds=5)  # doctest: +SKIP
>>> summary["summary"]["accuracy"]  # doctest: +SKIP
{'mean': 0.93, 'std': 0.012}
"""

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmkeras.atomic_files import write_json_atomically
from mmkeras.config import RunConfig
from mmkeras.data.label_sets import split_labels
from mmkeras.data.manifest import (
    SOURCE_LINE_COLUMN,
    SOURCE_MANIFEST_COLUMN,
    Manifest,
    find_manifest,
    read_manifest,
)
from mmkeras.data.rows_fingerprint import rows_fingerprint
from mmkeras.errors import UserError
from mmkeras.evaluation.results_folder import METRICS_FILE, SOURCE_IMAGE_COLUMN, write_csv
from mmkeras.evaluation.results_folder import results_dir as results_folder_of
from mmkeras.evaluation.scalar_figures import scalar_figures
from mmkeras.preprocessing.image import JPEG_DRAFT_FACTOR
from mmkeras.runs import SKIPPED_ROWS_FILE, write_skipped_rows

logger = logging.getLogger("mmkeras")

FOLDS_FILE = "folds.json"
SUMMARY_FILE = "cv.json"
# folds.json's fingerprint of the rows split (`rows_fingerprint`): a resumed cross-validation must split the same.
ROWS_KEY = "rows_sha256"
TEST_MANIFEST = "test.csv"
TRAIN_MANIFEST = "train.csv"


def stratified_folds(labels: list[str], folds: int, seed: int) -> np.ndarray:
    """Each row's fold (0..folds-1): every class's rows, shuffled by `seed`, dealt out in turn.

    Each fold gets each class's rows in proportion (within one row), and the
    folds' sizes differ by at most one row per class.

    Example:
    >>> stratified_folds(["a", "a", "b", "b"], folds=2, seed=0).tolist()
    [0, 1, 0, 1]
    """
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(labels), dtype=np.int64)
    start = 0
    for label in sorted(set(labels)):
        rows = rng.permutation([index for index, value in enumerate(labels) if value == label])
        # Continue the deal where the previous class stopped, so small classes do not all land in fold 0.
        assignment[rows] = (start + np.arange(len(rows))) % folds
        start = (start + len(rows)) % folds
    return assignment


def cross_validate(config: RunConfig, folds: int, *, manifests: Sequence[Manifest] = ()) -> dict:
    """Train and evaluate one run per fold of `config.data` under `config.out`; resumes an interrupted one.

    Args:
        config: the run config of every fold (`data`: the manifest to split;
            `out`: the cross-validation folder; `val`: optional, for early
            stopping).
        folds: K, at least 2.
        manifests: `config.data`'s and `config.val`'s manifests, when the
            caller has read them already as the runs read them (the CLI
            does, before TensorFlow loads): not read, nor their skipped
            rows logged, again.

    Returns:
        `{"folds", "seed", "bad_rows_skipped", "val_rows_skipped",
        "per_fold": [figures of each fold], "summary": {figure: {"mean",
        "std"}}}` (the sample standard deviation over the folds), also
        written to `CV_DIR/cv.json`. `bad_rows_skipped`: the data rows
        `usable_rows` dropped, in none of the folds; `val_rows_skipped`:
        the validation rows dropped, in no fold's early stopping (both
        listed in `CV_DIR/skipped_rows.csv`).
    """
    if not config.data or not config.out:
        raise UserError("cross-validation needs a manifest (--data) and a folder (--out)")
    manifest = usable_rows(config, config.data, manifests)
    val_manifests = [usable_rows(config, config.val, manifests)] if config.val else []
    if not 2 <= folds <= len(manifest.rows):
        raise UserError(f"--folds must be between 2 and the number of rows ({len(manifest.rows)}), got {folds}")
    out = Path(config.out)
    assignment = checked_split(out, manifest, folds, config.seed, task=config.task)
    val_skipped = [row for val_manifest in val_manifests for row in val_manifest.skipped]
    write_skipped_rows(out / SKIPPED_ROWS_FILE, manifest.skipped + val_skipped)
    per_fold = []
    for fold in range(folds):
        per_fold.append(run_fold(config, out / f"fold-{fold + 1}", manifest, assignment == fold, fold, folds,
                                 val_manifests))
    summary = {
        "folds": folds,
        "seed": config.seed,
        "bad_rows_skipped": len(manifest.skipped),
        "val_rows_skipped": len(val_skipped),
        "per_fold": per_fold,
        "summary": summarize(per_fold),
    }
    write_json_atomically(out / SUMMARY_FILE, summary)
    return summary


def usable_rows(config: RunConfig, path, manifests: Sequence[Manifest] = ()) -> Manifest:
    """The rows of `path` (`config.data` or `config.val`) with their images checked, bad rows failed on or skipped as
    `config.on_bad_row` says.

    Checked once, before the split, not by each fold's run: a skipped row is
    then in no fold. Left in a fold, the runs training on it skipped it, but
    the held-out fold's evaluation met it and stopped the cross-validation
    (evaluation takes every row it is given); the folds were stratified over
    rows some of them could not use; a class left with one usable row
    stopped it only after a fold had trained without it, where now it is
    refused before the split (`check_folds_train_every_tested_label`); and
    the row was named by every run that skipped it, not once
    (`CV_DIR/skipped_rows.csv`; docs/design.md#cv-names-the-users-lines).

    The images are decoded at the size the folds' runs check them at when it
    is known before a model is built (`image_size`, else the built-in
    backbones' 32x32), so the runs find them in the image check cache; a
    preset's own size costs one more decoding of each image, in the first
    fold. A resumed cross-validation splits the same usable rows (the rows'
    fingerprint in `folds.json` is theirs): an image made readable or
    unreadable since changes them, and is refused as changed rows.

    The validation manifest is checked the same way, once: its bad images
    were named by every fold's run before.

    `manifests`: as `cross_validate`'s (`path`'s, when given, is not read again).
    """
    from mmkeras.models.vision_backbones import TINY_IMAGE_SIZE

    manifest = find_manifest(manifests, path) or read_manifest(path, columns=config.columns,
                                                               on_bad_row=config.on_bad_row)
    image_size = (config.image_size, config.image_size) if config.image_size else TINY_IMAGE_SIZE
    # JPEGs decoded reduced, as the folds' new runs decode them (their backbone's crop is not known yet)
    manifest, _ = manifest.validate_images(
        image_size, config.on_bad_row, max_pixels=config.max_image_pixels, jpeg_draft_factor=JPEG_DRAFT_FACTOR
    )
    return manifest


def checked_split(out: Path, manifest: Manifest, folds: int, seed: int, task: str = "classify") -> np.ndarray:
    """The folds of a new cross-validation (saved), or of the interrupted one in `out` (checked against it).

    Raises:
        UserError: `out` holds a split of other data, folds or seed, or the
            manifest's rows changed since it was made (`rows_fingerprint`),
            or a fold would test a label its training rows lack
            (`check_folds_train_every_tested_label`).
    """
    assignment = stratified_folds([row.label for row in manifest.rows], folds, seed)
    record = {"data": str(Path(manifest.path).resolve()), "folds": folds, "seed": seed,
              "assignment": assignment.tolist(), ROWS_KEY: rows_fingerprint(manifest)}
    path = out / FOLDS_FILE
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        other_split = UserError("holds a cross-validation of other data, folds or seed; give another --out", path=out)
        if any(saved.get(key) != record[key] for key in ("data", "folds", "seed")):
            raise other_split
        # folds.json written before the fingerprint has none: its split alone is checked.
        if saved.get(ROWS_KEY, record[ROWS_KEY]) != record[ROWS_KEY]:
            raise UserError(
                f"the rows changed since the cross-validation in {out} began (a text, image or label differs); "
                "restore the file, or give another --out to start again",
                path=manifest.path,
            )
        if saved.get("assignment") != record["assignment"]:
            raise other_split
    # Before folds.json is written: a split refused later would make the user's fixed file a "changed" one.
    check_folds_train_every_tested_label(manifest, assignment, task)
    if not path.is_file():
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomically(path, record)
    return assignment


def check_folds_train_every_tested_label(manifest: Manifest, assignment: np.ndarray, task: str):
    """Refuse a split in which some fold tests a label that none of its training rows has.

    A class on a single row (or, for `multilabel`, a label whose rows all
    fell into one fold) can only be tested by a run that never learnt it:
    its evaluation would fail after the fold had trained. Checked up front,
    the error names that row's line.

    Raises:
        UserError: the first such row, with the label and how to fix it.

    Example:
    >>> from mmkeras.data.manifest import ManifestRow
    >>> rows = [ManifestRow("t", None, label, line) for line, label in enumerate("aab", start=2)]
    >>> check_folds_train_every_tested_label(Manifest(Path("d.csv"), rows), np.array([0, 1, 0]), "classify")
    Traceback (most recent call last):
    mmkeras.errors.UserError: d.csv: line 4: label 'b' is on no row of the other folds: ...
    """
    row_labels = [split_labels(row.label) if task == "multilabel" else [row.label] for row in manifest.rows]
    for fold in np.unique(assignment):
        trained = {label for labels, where in zip(row_labels, assignment) if where != fold for label in labels}
        for row, labels, where in zip(manifest.rows, row_labels, assignment):
            untrained = [label for label in labels if label not in trained] if where == fold else []
            if untrained:
                raise UserError(
                    f"label {untrained[0]!r} is on no row of the other folds: the fold testing this row would "
                    "train without it; add rows with it, or drop it",
                    *manifest.where(row),
                )


def run_fold(
    config: RunConfig, folder: Path, manifest: Manifest, is_test, fold: int, folds: int,
    val_manifests: Sequence[Manifest] = (),
) -> dict:
    """Train and evaluate one fold (or read its figures when it has finished before); `val_manifests`: `config.val`'s
    manifest, read and checked once for every fold (`usable_rows`)."""
    from mmkeras.evaluation.evaluate import evaluate

    run_dir, test_manifest = folder / "run", folder / TEST_MANIFEST
    finished = results_folder_of(run_dir, test_manifest) / METRICS_FILE
    if finished.is_file():
        logger.info("fold %d/%d: finished before, figures read from %s", fold + 1, folds, finished)
        return scalar_figures(json.loads(finished.read_text(encoding="utf-8")))
    from mmkeras.training.trainer import train

    folder.mkdir(parents=True, exist_ok=True)
    write_manifest(folder / TRAIN_MANIFEST, manifest, [row for row, test in zip(manifest.rows, is_test) if not test],
                   config)
    write_manifest(test_manifest, manifest, [row for row, test in zip(manifest.rows, is_test) if test], config)
    interrupted = any((run_dir / "checkpoints").glob("*"))
    logger.info("fold %d/%d: training on %d rows%s", fold + 1, folds, int((~is_test).sum()),
                ", continuing from its checkpoint" if interrupted else "")
    train(config.replace(data=str(folder / TRAIN_MANIFEST), out=str(run_dir)), resume=interrupted,
          manifests=val_manifests)
    return scalar_figures(evaluate(run_dir, test_manifest, columns=config.columns))


def write_manifest(path: Path, manifest: Manifest, rows, config: RunConfig):
    """Rows of `manifest` as a CSV manifest with absolute image paths, under the run config's column names.

    Each row names where the user finds it (`Manifest.where`: the
    manifest's absolute path and the row's line there, as the manifest's
    own errors number it) in `source_manifest` and `source_line`.
    Each image is named as the user's file names it in `source_image`
    (the cell as written; for a Parquet manifest's bytes, which are listed
    as the files they were written to, the Hugging Face struct's `path`,
    else `<image bytes of row N>`): an unreadable image's error shows it
    (`Manifest.shown_image`), and a fold's predictions.csv shows it for
    image bytes.
    """
    write_csv(path, [
        {config.text_column: row.text or "",
         config.image_column: "" if row.image is None else str(Path(row.image).resolve()),
         config.label_column: row.label,
         **source_cells(manifest, row),
         SOURCE_IMAGE_COLUMN: shown_cell(row, config.image_column)}
        for row in rows
    ])


def source_cells(manifest: Manifest, row) -> dict[str, str]:
    """The `source_manifest` and `source_line` cells of a row of `manifest` (`Manifest.where`)."""
    source, line = manifest.where(row)
    return {SOURCE_MANIFEST_COLUMN: str(Path(source).resolve()), SOURCE_LINE_COLUMN: str(line)}


def shown_cell(row, image_column: str) -> str:
    """A row's image as the user's manifest names it (`""` for a row without one)."""
    return "" if row.image is None else row.cells[image_column]


def summarize(per_fold: list[dict]) -> dict:
    """`{figure: {"mean", "std"}}` over the folds (sample standard deviation; figures some fold lacks are left out)."""
    names = [name for name in per_fold[0] if all(figures.get(name) is not None for figures in per_fold)]
    summary = {}
    for name in names:
        values = np.array([figures[name] for figures in per_fold], dtype=np.float64)
        summary[name] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}
    return summary
