"""Reading a manifest: the CSV or JSONL file that lists (text, image, label) rows.

A manifest is UTF-8 (a BOM is allowed) and has the columns `text`, `image`
and `label`; other columns are ignored. CSV files have a header row; JSONL
files hold one JSON object per line (blank lines are skipped). An empty text
or image cell is a missing modality, not an error; image paths are relative
to the manifest's folder unless absolute. Every mistake is reported as a
`UserError` naming the file and the line, as an editor numbers it.

This module does not import TensorFlow (a bundle can be evaluated without it).

Example:
>>> manifest = read_manifest("samples/train.csv")                       # doctest: +SKIP
>>> manifest, skipped = manifest.validate_images((224, 224), "skip")     # doctest: +SKIP
>>> labels = manifest.labels()                                          # doctest: +SKIP
>>> y = manifest.encode_labels(labels)                                  # doctest: +SKIP
"""

import csv
import dataclasses
import io
import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

from mmkeras.errors import UserError
from mmkeras.preprocessing.image import UnreadableImageError, load_image
from mmkeras.progress import step_progress
from mmkeras.preprocessing.multimodal_preprocessor import is_present

COLUMNS = ("text", "image", "label")
ON_BAD_ROW = ("fail", "skip")
# How many known labels an "unknown label" message lists before "...".
_LABELS_SHOWN = 8

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ManifestRow:
    """One example of a manifest.

    Args:
        text: the text, `None` when missing.
        image: the image path (resolved against the manifest's folder), `None` when missing.
        label: the class name, `None` when the manifest has none for this row.
        line: the line of the manifest the row starts on (1-based).
    """

    text: str | None
    image: Path | None
    label: str | None
    line: int


@dataclasses.dataclass
class Manifest:
    """The rows of a manifest file, in file order.

    Args:
        path: the manifest file (named in error messages).
        rows: its rows.

    Example:
    >>> manifest = Manifest(Path("train.csv"), [ManifestRow("a red circle", None, "red", 2)])
    >>> manifest.labels(), manifest.encode_labels(["blue", "red"]).tolist()
    (['red'], [1])
    """

    path: Path
    rows: list[ManifestRow]

    def labels(self) -> list[str]:
        """The distinct label names, sorted: the class order of a model trained on this manifest."""
        return sorted({row.label for row in self.rows if row.label is not None})

    def encode_labels(self, labels: list[str]) -> np.ndarray:
        """Each row's index in `labels`, int32 `[rows]`.

        Raises:
            UserError: a row has no label, or one that is not in `labels`.
        """
        index_of = {label: index for index, label in enumerate(labels)}
        indices = np.empty(len(self.rows), np.int32)
        for position, row in enumerate(self.rows):
            if row.label is None:
                raise UserError("the row has no label", path=self.path, row=row.line)
            if row.label not in index_of:
                raise UserError(
                    f"unknown label {row.label!r} (known labels: {_summarize(labels)})", path=self.path, row=row.line
                )
            indices[position] = index_of[row.label]
        return indices

    def validate_images(self, image_size: tuple[int, int], on_bad_row: str) -> tuple["Manifest", int]:
        """Decode every referenced image once; fail on, or drop, rows whose image cannot be read.

        Args:
            image_size: `(height, width)`, decoded as training will decode them.
            on_bad_row: `fail` raises a `UserError` for the first bad row;
                `skip` drops bad rows (each one logged as a warning).

        Returns:
            The manifest of the good rows, and how many rows were dropped.

        Raises:
            UserError: a bad row under `fail`, or no good row left under `skip`.
        """
        if on_bad_row not in ON_BAD_ROW:
            raise ValueError(f"on_bad_row must be one of {ON_BAD_ROW}, got {on_bad_row!r}")
        images = list(dict.fromkeys(row.image for row in self.rows if row.image is not None))
        found = []
        # Pillow releases the GIL while decoding, so threads use every core.
        with ThreadPoolExecutor() as pool, step_progress("checking images", len(images)) as progress:
            for problem in pool.map(partial(_image_problem, image_size=image_size), images):
                found.append(problem)
                progress.update(len(found))
        problems = dict(zip(images, found))
        good_rows = []
        for row in self.rows:
            problem = problems.get(row.image)
            if problem is None:
                good_rows.append(row)
                continue
            error = UserError(f"cannot read image {self._shown(row.image)!r}: {problem}", path=self.path, row=row.line)
            if on_bad_row == "fail":
                raise error
            logger.warning("skipped: %s", error)
        if not good_rows:
            raise UserError(f"no rows left: all {len(self.rows)} rows have unreadable images", path=self.path)
        return Manifest(self.path, good_rows), len(self.rows) - len(good_rows)

    def _shown(self, image: Path) -> str:
        """An image path as the manifest names it (relative to its folder when possible)."""
        try:
            return str(image.relative_to(self.path.parent))
        except ValueError:
            return str(image)


def read_manifest(path: str | Path, *, require_labels: bool = True) -> Manifest:
    """Read a CSV (`.csv`) or JSONL (`.jsonl`, `.ndjson`) manifest.

    Args:
        path: the manifest file.
        require_labels: whether every row must have a label (training and
            evaluation); `False` for data to predict on, where the `label`
            column may be absent.

    Raises:
        UserError: the file is missing, not UTF-8, lacks a column, has
            invalid JSON, a row with neither text nor image, an empty label,
            or no rows at all.
    """
    path = Path(path)
    read_records = _RECORD_READERS.get(path.suffix.lower())
    if read_records is None:
        raise UserError("unknown manifest format: use a .csv or .jsonl file", path=path)
    required = COLUMNS if require_labels else COLUMNS[:2]
    rows = [
        _make_row(record, path, line, require_labels)
        for line, record in read_records(_read_text(path), path, required)
    ]
    if not rows:
        raise UserError("the manifest has no rows", path=path)
    return Manifest(path, rows)


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError("manifest not found", path=path) from None
    except OSError as error:
        raise UserError(f"cannot read manifest: {error.strerror}", path=path) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise UserError(
            f"not UTF-8 text (byte 0x{data[error.start]:02x}); save the manifest as UTF-8", path=path, row=line
        ) from None


def _csv_records(text: str, path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, {column: cell}) per data row; a row's line is the one it starts on."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise UserError(f"empty file: expected a header row with the columns {', '.join(COLUMNS)}", path=path)
        names = [name.strip() for name in header]
        _check_columns(names, required, path)
        next_line = reader.line_num + 1
        for cells in reader:
            line, next_line = next_line, reader.line_num + 1
            if not cells:  # a blank line
                continue
            if len(cells) != len(names):
                raise UserError(f"expected {len(names)} cells like the header, found {len(cells)}", path=path, row=line)
            yield line, dict(zip(names, cells))
    except csv.Error as error:
        raise UserError(f"invalid CSV: {error}", path=path, row=reader.line_num) from None


def _check_columns(names: list[str], required: tuple[str, ...], path: Path):
    duplicated = sorted({name for name in names if name in COLUMNS and names.count(name) > 1})
    if duplicated:
        raise UserError(f"the header repeats the column(s) {', '.join(duplicated)}", path=path, row=1)
    missing = [name for name in required if name not in names]
    if missing:
        raise UserError(
            f"missing column(s) {', '.join(missing)} (the header has: {', '.join(names)})", path=path, row=1
        )


def _jsonl_records(text: str, path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, {key: cell}) per non-blank line, JSON `null` read as an empty cell."""
    # Split on "\n" only: str.splitlines would also split inside JSON strings (U+2028 and co).
    for line, content in enumerate(text.split("\n"), start=1):
        if not content.strip():
            continue
        try:
            record = json.loads(content)
        except json.JSONDecodeError as error:
            raise UserError(f"invalid JSON: {error.msg} (column {error.colno})", path=path, row=line) from None
        if not isinstance(record, dict):
            raise UserError(f"expected a JSON object, found {_json_type(record)}", path=path, row=line)
        missing = [key for key in required if key not in record]
        if missing:
            raise UserError(f"missing key(s) {', '.join(missing)}", path=path, row=line)
        yield line, {key: _json_cell(record.get(key), key, path, line) for key in COLUMNS}


def _json_cell(value, key: str, path: Path, line: int) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if key == "label" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # class ids written as numbers are still class names
    raise UserError(f"{key!r} must be a string or null, found {_json_type(value)}", path=path, row=line)


def _json_type(value) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number"}
    return names.get(type(value), "a number" if isinstance(value, float) else "null")


def _make_row(record: dict[str, str], path: Path, line: int, require_labels: bool) -> ManifestRow:
    for column, cell in record.items():
        if column in COLUMNS and not _is_unicode(cell):
            raise UserError(f"the {column} cell is not valid Unicode (a lone surrogate escape)", path=path, row=line)
    text, image, label = (record.get(column, "") for column in COLUMNS)
    if not is_present(text) and not is_present(image):
        raise UserError("the row has neither a text nor an image", path=path, row=line)
    if require_labels and not label.strip():
        raise UserError("empty label", path=path, row=line)
    return ManifestRow(
        text=text if is_present(text) else None,
        image=path.parent / image.strip() if is_present(image) else None,
        label=label.strip() or None,
        line=line,
    )


def _is_unicode(cell: str) -> bool:
    try:
        cell.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _image_problem(image: Path, image_size: tuple[int, int]) -> str | None:
    """Why `image` cannot be loaded, or `None` when it can."""
    try:
        load_image(image, image_size)
    except UnreadableImageError as error:
        return error.reason
    return None


def _summarize(labels: list[str]) -> str:
    shown = ", ".join(labels[:_LABELS_SHOWN])
    return shown if len(labels) <= _LABELS_SHOWN else f"{shown}, ... ({len(labels)} in all)"


_RECORD_READERS = {".csv": _csv_records, ".jsonl": _jsonl_records, ".ndjson": _jsonl_records}
