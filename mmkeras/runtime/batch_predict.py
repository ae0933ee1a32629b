"""Batch prediction: a bundle run over every row of a manifest, written as a predictions CSV (no TensorFlow).

`predict_file` reads a CSV or JSONL manifest (labels optional), predicts
each row with a `Predictor`, and writes one CSV row per input row: the
input's own columns as written, then `prediction` (the label, or for a
multilabel bundle the labels at or above their thresholds joined by `|`)
and the `top_k` best labels with their scores (`label_1`, `score_1`, ...).

A bad row (no text and no image, an unreadable image, a text that is not
UTF-8, a malformed line) is handled as `train` handles it: `fail` lists
every bad row and writes nothing; `skip` writes the row with an empty
prediction and the reason in an `error` column, so the output still has one
row per input row (its input columns kept where the row could be read).
The output is written beside `out` and renamed into place at the end: an
interrupted run leaves no half file, and an existing `out` is replaced only
when asked.

`predict_folder` does the same for a folder of photos, without a manifest:
its photos are found as `mmkeras manifest` finds them (`image_files`), each
with the text of its caption file (`read_caption`) or one text given for
all, and go through the same steps as the rows of an in-memory manifest; the
output's `image` column holds each photo's path relative to the folder
(docs/design.md#predicting-a-folder-of-photos).

Example:
>>> summary = predict_file("bundles/demo", "photos.csv", "predictions.csv")  # doctest: +SKIP
>>> summary["rows"], summary["bad_rows"]  # doctest: +SKIP
(60, 0)
>>> predict_folder("bundles/demo", "phone-photos", "predictions.csv")["predicted"]  # doctest: +SKIP
20
"""

import csv
import logging
from pathlib import Path

import numpy as np

from mmkeras.atomic_files import write_atomically
from mmkeras.config import RunConfig
from mmkeras.data.folder_manifests import heic_photos, image_files, no_photos_error, read_caption, unreadable_photos
from mmkeras.data.manifest import (
    BAD_ROWS_SHOWN,
    BadRow,
    BadRowsError,
    Manifest,
    ManifestRow,
    bad_rows_error,
    read_manifest,
)
from mmkeras.errors import UserError
from mmkeras.preprocessing.image import UnreadableImageError
from mmkeras.preprocessing.text_cleaning import InvalidTextError, clean_text
from mmkeras.progress import step_progress
from mmkeras.runs import manifest_columns
from mmkeras.runtime.predictor import Predictor

# Rows preprocessed and run together; LiteRT runs them one by one, so this only bounds memory.
BATCH_ROWS = 32
DEFAULT_TOP_K = 3
PREDICTION_COLUMN = "prediction"
ERROR_COLUMN = "error"
# The input columns of `predict_folder`'s output: the photo's path relative to the folder, and the text used.
FOLDER_COLUMNS = ("image", "text")
# The name a folder's in-memory manifest stands under inside the folder (no such file is read or written), so
# that its photos are named relative to the folder (`Manifest.shown_path`).
FOLDER_LISTING = "<photos>"
logger = logging.getLogger("mmkeras")


def predict_file(
    bundle_dir: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    columns: dict[str, str] | None = None,
    on_bad_row: str = "fail",
    top_k: int = DEFAULT_TOP_K,
    overwrite: bool = False,
    num_threads: int | None = None,
) -> dict:
    """Predict every row of the manifest `data` with the bundle in `bundle_dir` and write the CSV `out`.

    Args:
        bundle_dir: a classifier bundle folder (`mmkeras export`).
        data: a CSV or JSONL manifest; the label column may be absent.
        out: the predictions CSV to write.
        columns: `{role: column name}` where the manifest's text or image
            column is named otherwise than in the run the bundle was
            exported from (`mmkeras.runs.manifest_columns`).
        on_bad_row: `fail` (list every bad row, write nothing) or `skip`
            (write the row with its reason in the `error` column).
        top_k: how many best labels (and scores) each output row lists.
        overwrite: replace an existing `out`.
        num_threads: interpreter threads (`None`: LiteRT picks).

    Returns:
        `{"rows", "predicted", "bad_rows", "out"}`.

    Raises:
        UserError: `out` exists (without `overwrite`) or is `data`, a bad
            manifest, bad rows under `fail`, or a bundle that is not a
            classifier.
    """
    data, out = Path(data), Path(out)
    _check_out(out, data, overwrite)
    predictor = Predictor(bundle_dir, num_threads=num_threads)
    columns = manifest_columns(bundle_dir, columns)
    if columns != RunConfig().columns:
        logger.info("reading the columns %s", ", ".join(f"{role} {name!r}" for role, name in columns.items()))
    manifest = read_manifest(data, require_labels=False, on_bad_row=on_bad_row, columns=columns)
    return _predict_manifest(
        predictor, manifest, out, on_bad_row=on_bad_row, top_k=top_k,
        failure=lambda bad_rows: bad_rows_error(data, bad_rows),
    )


def predict_folder(
    bundle_dir: str | Path,
    images_dir: str | Path,
    out: str | Path,
    *,
    text: str | None = None,
    on_bad_row: str = "fail",
    top_k: int = DEFAULT_TOP_K,
    overwrite: bool = False,
    num_threads: int | None = None,
) -> dict:
    """Predict every photo under `images_dir` with the bundle in `bundle_dir` and write the CSV `out`.

    The photos are those `mmkeras manifest` finds (`IMAGE_SUFFIXES`, in
    folders below too, hidden files and folders left out), sorted by path.
    Each photo's text is its caption file's (`photo.txt` beside
    `photo.jpg`; none: a missing text), or `text` for every photo when given
    (caption files are then not read). The CSV has one row per photo:
    `image` (its path relative to `images_dir`), `text` (as used), then the
    columns `predict_file` adds.

    Args:
        bundle_dir: a classifier bundle folder (`mmkeras export`).
        images_dir: the folder of photos.
        out: the predictions CSV to write.
        text: one text for every photo (e.g. a prompt), instead of their caption files.
        on_bad_row: `fail` (list every bad photo, write nothing) or `skip`
            (write the photo with its reason in the `error` column).
        top_k, overwrite, num_threads: as `predict_file` takes them.

    HEIC photos (`unreadable_photos`) are left out, named in a
    warning and in `left_out`: convert them to JPEG.

    Returns:
        `{"rows", "predicted", "bad_rows", "out"}`, as `predict_file` returns,
        and `left_out`: the HEIC photos left out (paths relative to `images_dir`).

    Raises:
        UserError: `images_dir` is missing, not a folder or holds no photos
            (only HEIC ones, said so),
            `text` is not UTF-8, `out` exists (without `overwrite`), bad
            photos (unreadable, a caption that is not UTF-8) under `fail`, or
            a bundle that is not a classifier.

    Example:
    >>> predict_folder("bundles/demo", "phone-photos", "p.csv", text="a photo")["rows"]  # doctest: +SKIP
    20
    """
    images_dir, out = Path(images_dir), Path(out)
    _check_out(out, images_dir, overwrite)
    manifest, skipped_cells = _folder_manifest(images_dir, _given_text(text), on_bad_row)
    left_out = unreadable_photos(images_dir)
    if left_out:
        logger.warning("warning: %s: left out %s", images_dir, heic_photos(left_out))
    predictor = Predictor(bundle_dir, num_threads=num_threads)
    summary = _predict_manifest(
        predictor, manifest, out, on_bad_row=on_bad_row, top_k=top_k,
        failure=lambda bad_rows: _bad_photos_error(images_dir, bad_rows), skipped_cells=skipped_cells,
    )
    return {**summary, "left_out": left_out}


def _predict_manifest(
    predictor: Predictor,
    manifest: Manifest,
    out: Path,
    *,
    on_bad_row: str,
    top_k: int,
    failure,
    skipped_cells: dict[int, dict[str, str]] | None = None,
) -> dict:
    """Predict `manifest`'s rows and write `out`, or raise `failure(bad rows)` for bad rows under `fail`.

    A bad row is written with its input cells (a row's own; for one dropped
    before, `skipped_cells` by line where known) and its reason.
    """
    top_k = min(top_k, len(predictor.labels))
    results, bad_rows = _predict_rows(predictor, manifest, top_k)
    bad_rows = sorted([*manifest.skipped, *bad_rows], key=lambda row: row.line)
    if bad_rows and on_bad_row == "fail":
        raise failure(bad_rows)
    header = _output_header(manifest, top_k, with_errors=bool(bad_rows))
    inputs = {**(skipped_cells or {}), **{row.line: row.cells or {} for row in manifest.rows}}
    lines = {**{row.line: {**inputs.get(row.line, {}), ERROR_COLUMN: row.reason} for row in bad_rows}, **results}
    write_atomically(out, lambda partial: _write_csv(partial, header, [lines[line] for line in sorted(lines)]))
    return {"rows": len(lines), "predicted": len(results), "bad_rows": len(bad_rows), "out": str(out)}


def _given_text(text: str | None) -> str | None:
    """The text given for every photo, checked as a manifest's cell is (`None`: none given)."""
    if text is None:
        return None
    try:
        return clean_text(text)
    except InvalidTextError as error:
        raise UserError(f"--text is {error.problem}") from None


def _folder_manifest(
    images_dir: Path, text: str | None, on_bad_row: str
) -> tuple[Manifest, dict[int, dict[str, str]]]:
    """The photos of `images_dir` as a manifest (line N: the Nth photo), and the cells of those set aside.

    Each photo's text is `text` when given (blank: a missing text; caption
    files are not read), else its caption file's. A photo whose caption file
    cannot be read is set aside with its reason (into `Manifest.skipped`);
    under `fail` they are all listed at once, before any photo is predicted.
    """
    if not images_dir.is_dir():
        raise UserError("not a folder of photos" if images_dir.exists() else "folder not found", path=images_dir)
    photos = image_files(images_dir)
    if not photos:
        raise no_photos_error(images_dir)
    listing = images_dir / FOLDER_LISTING
    rows, bad_rows, skipped_cells = [], [], {}
    for line, photo in enumerate(photos, start=1):
        cells = {"image": photo.relative_to(images_dir).as_posix(), "text": ""}
        try:
            photo_text = read_caption(photo) if text is None else (text if text.strip() else None)
        except UserError as error:
            caption = Path(error.path or photo).relative_to(images_dir).as_posix()
            bad_rows.append(BadRow(listing, line, f"cannot read caption {caption!r}: {error.reason}"))
            skipped_cells[line] = cells
            continue
        rows.append(ManifestRow(photo_text, photo, None, line, cells={**cells, "text": photo_text or ""}))
    if bad_rows and on_bad_row == "fail":
        raise _bad_photos_error(images_dir, bad_rows)
    return Manifest(listing, rows, bad_rows, column_names=list(FOLDER_COLUMNS)), skipped_cells


def _bad_photos_error(images_dir: Path, bad_rows: list[BadRow]) -> BadRowsError:
    """One error listing the first `BAD_ROWS_SHOWN` bad photos (each reason names its file) and the others' count;
    the CLI adds what `--on-bad-row skip` does, as for a manifest's bad rows."""
    if len(bad_rows) == 1:
        return BadRowsError(bad_rows[0].reason, path=images_dir)
    shown = "; ".join(row.reason for row in bad_rows[:BAD_ROWS_SHOWN])
    more = f"; and {len(bad_rows) - BAD_ROWS_SHOWN} more" if len(bad_rows) > BAD_ROWS_SHOWN else ""
    return BadRowsError(f"{len(bad_rows)} bad photos: {shown}{more}", path=images_dir)


def _check_out(out: Path, data: Path, overwrite: bool):
    """`out` is a new file in an existing folder (or one to replace, when asked), never the input `data`."""
    if out.is_dir():
        raise UserError("--out must be a file name (predictions.csv); this is a folder", path=out)
    if not out.absolute().parent.is_dir():
        raise UserError(f"--out: the folder {out.absolute().parent} does not exist", path=out)
    if out.exists() and out.resolve() == data.resolve():
        raise UserError("--out is the input manifest; write the predictions to another file", path=out)
    if out.exists() and not overwrite:
        raise UserError("--out exists; pass --overwrite to replace it, or choose another file", path=out)
    if out.suffix.lower() != ".csv":
        raise UserError("--out must be a .csv file", path=out)


def _predict_rows(predictor: Predictor, manifest: Manifest, top_k: int) -> tuple[dict[int, dict], list[BadRow]]:
    """`({line: output cells}, bad rows)`: every row predicted in batches, a row that cannot be read set aside."""
    results, bad_rows = {}, []
    with step_progress("predicting", len(manifest.rows)) as progress:
        for start in range(0, len(manifest.rows), BATCH_ROWS):
            batch = manifest.rows[start : start + BATCH_ROWS]
            readable, inputs = _preprocessed(predictor, batch, manifest, bad_rows)
            if inputs is not None:  # some row of the batch was readable
                scores = predictor.scores(predictor.predict_inputs(inputs))
                for row, row_scores in zip(readable, scores):
                    results[row.line] = {**(row.cells or {}), **_prediction_cells(predictor, row_scores, top_k)}
            progress.update(start + len(batch))
    return results, bad_rows


def _preprocessed(predictor: Predictor, batch: list[ManifestRow], manifest: Manifest, bad_rows: list[BadRow]):
    """The batch's model inputs, after setting aside (into `bad_rows`) each row whose image cannot be read."""
    try:
        return batch, predictor.preprocessor([row.text for row in batch], [row.image for row in batch])
    except (UnreadableImageError, InvalidTextError):
        pass  # find the rows at fault, one by one
    readable = []
    for row in batch:
        try:
            predictor.preprocessor([row.text], [row.image])
        except UnreadableImageError as error:
            assert row.image is not None  # only an image is unreadable
            reason = f"cannot read image {manifest.shown_path(row.image)!r}: {error.reason}"
            bad_rows.append(BadRow(manifest.path, row.line, reason))
            continue
        except InvalidTextError as error:
            bad_rows.append(BadRow(manifest.path, row.line, f"the text is {error.problem}"))
            continue
        readable.append(row)
    if not readable:
        return [], None
    return readable, predictor.preprocessor([row.text for row in readable], [row.image for row in readable])


def _prediction_cells(predictor: Predictor, scores: np.ndarray, top_k: int) -> dict[str, str]:
    """`prediction` and the `top_k` best labels with their scores, best first."""
    cells = {PREDICTION_COLUMN: "|".join(predictor.predicted_labels(scores))}
    for rank, index in enumerate(np.argsort(-scores, kind="stable")[:top_k], start=1):
        cells[f"label_{rank}"] = predictor.labels[index]
        cells[f"score_{rank}"] = f"{scores[index]:.4f}"
    return cells


def _output_header(manifest: Manifest, top_k: int, *, with_errors: bool) -> list[str]:
    """The input's columns, then the prediction's (and `error` when a row was bad); no name may clash."""
    added = [PREDICTION_COLUMN]
    for rank in range(1, top_k + 1):
        added += [f"label_{rank}", f"score_{rank}"]
    if with_errors:
        added.append(ERROR_COLUMN)
    clashing = [name for name in added if name in manifest.column_names]
    if clashing:
        raise UserError(
            f"the manifest already has the column(s) {', '.join(clashing)} that predictions add; rename them",
            path=manifest.path,
        )
    return [*manifest.column_names, *added]


def _write_csv(path: Path, header: list[str], rows: list[dict[str, str]]):
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=header, restval="")
        writer.writeheader()
        writer.writerows(rows)
