"""Reading a manifest: the CSV, JSONL or Parquet file that lists (text, image, label) rows.

A manifest is UTF-8 (a BOM is allowed) and has the columns `text`, `image`
and `label`, or the columns `columns` names for them
(`{"text": "caption", "image": "file", "label": "class"}`); other columns
are ignored (and kept, in `ManifestRow.cells`). CSV files have a header row; JSONL
files hold one JSON object per line (blank lines are skipped); Parquet files
are streamed by record batch, their images paths or bytes
(`mmkeras.data.parquet_manifest`, pyarrow needed). An empty text
or image cell is a missing modality, not an error; image paths are relative
to the manifest's folder unless absolute. Every mistake is reported as a
`UserError` naming the file and the line, as an editor numbers it.

A mistake in one row (a wrong number of cells, a line that is not JSON, an
empty label, a text that is not UTF-8, an unreadable image, ...) is a *bad
row*: under `on_bad_row="fail"` every bad row is listed (the first
`BAD_ROWS_SHOWN` and a count) in one error before any training; under
`"skip"` bad rows are dropped and kept in `Manifest.skipped`. A mistake in
the file as a whole (no header, not UTF-8, an unterminated quote, labels that
differ only in case or surrounding spaces) is always an error.

This module does not import TensorFlow (a bundle can be evaluated without it).

Example:
>>> manifest = read_manifest("samples/train.csv")                       # doctest: +SKIP
>>> manifest, skipped = manifest.validate_images((224, 224), "skip")     # doctest: +SKIP
>>> manifest, skipped = manifest.validate_images(
...     preprocessor.image_size, "skip", **decoded_as(preprocessor))     # doctest: +SKIP
>>> [str(row) for row in manifest.skipped]                              # doctest: +SKIP
>>> labels = manifest.labels()                                          # doctest: +SKIP
>>> y = manifest.encode_labels(labels)                                  # doctest: +SKIP
"""

import csv
import dataclasses
import io
import json
import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import PIL

from mmkeras.data.image_checks import ImageCheckCache
from mmkeras.data.parquet_manifest import ParquetRecord, ParquetRows, embedded_image_name
from mmkeras.errors import UserError
from mmkeras.preprocessing.image import MAX_IMAGE_PIXELS, UnreadableImageError, load_image
from mmkeras.preprocessing.multimodal_preprocessor import MultimodalPreprocessor, is_present
from mmkeras.preprocessing.text_cleaning import InvalidTextError, clean_text
from mmkeras.progress import step_progress

COLUMNS = ("text", "image", "label")
# The roles of COLUMNS, each read from the column of its own name unless a mapping says otherwise.
DEFAULT_COLUMNS = {role: role for role in COLUMNS}
ON_BAD_ROW = ("fail", "skip")
# How many known labels an "unknown label" message lists before "...".
_LABELS_SHOWN = 8
# How many bad rows an `on_bad_row="fail"` error lists before the count of the others.
BAD_ROWS_SHOWN = 20
# The columns of a `cv` fold's manifest (a copy of the user's rows) naming the file and line each row came from.
SOURCE_MANIFEST_COLUMN = "source_manifest"
SOURCE_LINE_COLUMN = "source_line"
# The column of a `cv` fold's manifest holding each row's image cell as the user's manifest wrote it (the image
# column lists the files read: absolute paths, or the files a Parquet manifest's image bytes were written to).
SOURCE_IMAGE_COLUMN = "source_image"

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ManifestRow:
    """One example of a manifest.

    Args:
        text: the text, `None` when missing.
        image: the image path (resolved against the manifest's folder), `None` when missing.
        label: the class name, `None` when the manifest has none for this row.
        line: the line of the manifest the row starts on (1-based).
        raw_label: the label cell as written (spaces kept), to catch
            spellings of one class that differ.
        cells: every cell of the row as written, by column name (what batch
            prediction copies to its output).
    """

    text: str | None
    image: Path | None
    label: str | None
    line: int
    raw_label: str | None = dataclasses.field(default=None, compare=False, repr=False)
    cells: dict[str, str] | None = dataclasses.field(default=None, compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class BadRow:
    """A row of a manifest that cannot be used, and why.

    Args:
        path: the manifest file.
        line: the line the row starts on (1-based).
        reason: what is wrong with it.

    Example:
    >>> str(BadRow(Path("train.csv"), 7, "empty label"))
    'train.csv: line 7: empty label'
    """

    path: Path
    line: int
    reason: str

    def __str__(self):
        return str(UserError(self.reason, path=self.path, row=self.line))


@dataclasses.dataclass
class Manifest:
    """The rows of a manifest file, in file order.

    Args:
        path: the manifest file (named in error messages).
        rows: its usable rows.
        skipped: the bad rows dropped under `on_bad_row="skip"`.

    Example:
    >>> manifest = Manifest(Path("train.csv"), [ManifestRow("a red circle", None, "red", 2)])
    >>> manifest.labels(), manifest.encode_labels(["blue", "red"]).tolist()
    (['red'], [1])
    """

    path: Path
    rows: list[ManifestRow]
    skipped: list[BadRow] = dataclasses.field(default_factory=list)
    column_names: list[str] = dataclasses.field(default_factory=list)

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
                raise UserError("the row has no label", *self.where(row))
            if row.label not in index_of:
                raise UserError(_unknown_label(row.label, labels), *self.where(row))
            indices[position] = index_of[row.label]
        return indices

    def with_known_labels(self, labels: list[str], on_bad_row: str) -> "Manifest":
        """The manifest without rows whose label is not in `labels` (a validation row of a class never trained).

        Args:
            labels: the class names the model is trained on.
            on_bad_row: `fail` raises one `UserError` listing every such row;
                `skip` drops them into the returned manifest's `skipped`.

        Raises:
            UserError: such rows under `fail`, or no row left under `skip`.
        """
        known = set(labels)
        bad_rows = [
            self.bad_row(row, _unknown_label(row.label, labels))
            for row in self.rows
            if row.label is not None and row.label not in known
        ]
        return self.without(bad_rows, on_bad_row)

    def without(self, bad_rows: list[BadRow], on_bad_row: str) -> "Manifest":
        """The manifest without `bad_rows` (found by a caller's own check, e.g. align's true pairs).

        Args:
            bad_rows: rows of this manifest, each as `bad_row` makes it.
            on_bad_row: `fail` or `skip`, as in `validate_images`.

        Raises:
            UserError: bad rows under `fail` (every one listed), or no row left under `skip`.
        """
        if not bad_rows:
            return self
        bad_places = {(bad_row.path, bad_row.line) for bad_row in bad_rows}
        good_rows = [row for row in self.rows if self.where(row) not in bad_places]
        return _settle(self.path, good_rows, bad_rows, on_bad_row, previously_skipped=self.skipped)

    def validate_images(
        self,
        image_size: tuple[int, int],
        on_bad_row: str,
        *,
        max_pixels: int = MAX_IMAGE_PIXELS,
        jpeg_draft_factor: int | None = None,
        crop_pct: float | None = None,
        remember: bool = True,
    ) -> tuple["Manifest", int]:
        """Decode every referenced image once; fail on, or drop, rows whose image cannot be read.

        Args:
            image_size: `(height, width)`, decoded as training will decode them.
            on_bad_row: `fail` raises one `UserError` listing every bad row;
                `skip` drops bad rows (each one logged as a warning and added
                to the returned manifest's `skipped`).
            max_pixels: an image with more pixels is a bad row (checked
                before it is decoded; a JPEG decoded reduced counts the
                pixels it decodes, as `load_image` does).
            jpeg_draft_factor, crop_pct: as `load_image`'s; `None` decodes
                every pixel. Pass the preprocessor's (`decoded_as`), so the
                check decodes as training or the runtime will: a phone photo
                checked about ten times faster, and a 48 MP JPEG accepted
                where its reduced decode is within `max_pixels`.
            remember: reuse and store the outcomes in the image check cache
                (`ImageCheckCache`): an image whose size and modification
                time are unchanged since its last check is not opened again.

        Returns:
            The manifest of the good rows, and how many rows were dropped.

        Raises:
            UserError: bad rows under `fail`, or no good row left under `skip`.
        """
        if on_bad_row not in ON_BAD_ROW:
            raise ValueError(f"on_bad_row must be one of {ON_BAD_ROW}, got {on_bad_row!r}")
        images = list(dict.fromkeys(row.image for row in self.rows if row.image is not None))
        decoding = {"max_pixels": max_pixels, "jpeg_draft_factor": jpeg_draft_factor, "crop_pct": crop_pct}
        problems = _checked_images(images, image_size, decoding, remember=remember)
        good_rows, bad_rows = [], []
        for row in self.rows:
            if row.image is None or problems.get(row.image) is None:
                good_rows.append(row)
            else:
                reason = f"cannot read image {self.shown_image(row)!r}: {problems[row.image]}"
                bad_rows.append(self.bad_row(row, reason))
        checked = _settle(self.path, good_rows, bad_rows, on_bad_row, previously_skipped=self.skipped)
        checked.column_names = self.column_names
        return checked, len(bad_rows)

    def where(self, row: ManifestRow) -> tuple[Path, int]:
        """The file and line a person finds `row` at: its own, or for a `cv` fold's manifest the user's.

        A fold's manifest (`mmkeras.training.cross_validation.write_manifest`)
        copies the user's rows; its `source_manifest` and `source_line` cells
        name the user's file and the line that file's own errors name (a
        Parquet file's row number from 1). Errors about the row, skipped
        rows and a fold's predictions.csv name that place; a manifest without
        the two columns (a fold's from before them, any other) names its own.

        Example:
        >>> manifest = Manifest(Path("fold-1/test.csv"), [])
        >>> cells = {"source_manifest": "/data/train.csv", "source_line": "7"}
        >>> manifest.where(ManifestRow("a red circle", None, "red", 2, cells=cells))
        (PosixPath('/data/train.csv'), 7)
        >>> manifest.where(ManifestRow("a red circle", None, "red", 2, cells={}))
        (PosixPath('fold-1/test.csv'), 2)
        """
        return _source_place(row) or (self.path, row.line)

    def bad_row(self, row: ManifestRow, reason: str) -> BadRow:
        """`row` as a bad row, named where a person finds it (`where`)."""
        return BadRow(*self.where(row), reason)

    def shown_image(self, row: ManifestRow) -> str:
        """A row's image as the user's manifest names it: a `cv` fold's row by its `source_image` cell, else
        `shown_path` (a fold manifest lists absolute paths, which the user never wrote).

        Example:
        >>> cells = {"source_manifest": "/data/train.csv", "source_line": "7", "source_image": "photos/a.jpg"}
        >>> Manifest(Path("fold-1/test.csv"), []).shown_image(ManifestRow(None, Path("/data/photos/a.jpg"), "red", 2,
        ...                                                               cells=cells))
        'photos/a.jpg'
        """
        assert row.image is not None
        source_image = (row.cells or {}).get(SOURCE_IMAGE_COLUMN)
        if source_image and _source_place(row) is not None:
            return source_image
        return self.shown_path(row.image)

    def shown_path(self, image: Path) -> str:
        """An image path as the manifest names it (relative to its folder when possible; Parquet bytes by hash)."""
        embedded = embedded_image_name(image)
        if embedded is not None:
            return embedded
        try:
            return str(image.relative_to(self.path.parent))
        except ValueError:
            return str(image)


def _source_place(row: ManifestRow) -> tuple[Path, int] | None:
    """The user's file and line a `cv` fold's row names (`source_manifest`, `source_line`), `None` for another row."""
    cells = row.cells or {}
    source, line = cells.get(SOURCE_MANIFEST_COLUMN), cells.get(SOURCE_LINE_COLUMN, "")
    return (Path(source), int(line)) if source and line.isdigit() else None


def read_manifest(
    path: str | Path, *, require_labels: bool = True, on_bad_row: str = "fail", columns: dict[str, str] | None = None
) -> Manifest:
    """Read a CSV (`.csv`), JSONL (`.jsonl`, `.ndjson`) or Parquet (`.parquet`) manifest.

    Args:
        path: the manifest file.
        require_labels: whether every row must have a label (training and
            evaluation); `False` for data to predict on, where the `label`
            column may be absent.
        on_bad_row: `fail` raises one `UserError` listing every bad row;
            `skip` drops them into `Manifest.skipped`.
        columns: `{role: column name}` for the roles `text`, `image` and
            `label` whose column is not named after the role (e.g. a run's
            `RunConfig.columns`).

    Raises:
        UserError: the file is missing, a folder, not UTF-8, lacks a column,
            has an unterminated quote, labels that differ only in case or
            surrounding spaces, no good row, or bad rows under `fail`.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(
            "this is a folder; give a manifest file (.csv, .jsonl or .parquet), or write them from a folder of "
            "photos with mmkeras manifest FOLDER --out DIR",
            path=path,
        )
    read_records = _RECORD_READERS.get(path.suffix.lower())
    if read_records is None:
        raise UserError("unknown manifest format: use a .csv, .jsonl or .parquet file", path=path)
    columns = {**DEFAULT_COLUMNS, **(columns or {})}
    names = tuple(columns[role] for role in COLUMNS)
    required = names if require_labels else names[:2]
    rows, bad_rows, column_names = [], [], {}
    for line, record in read_records(path, names, required):
        try:
            if isinstance(record, UserError):
                raise record
            column_names.update(dict.fromkeys(record))
            rows.append(_make_row(record, columns, path, line, require_labels))
        except UserError as error:
            bad_rows.append(BadRow(path, line, error.reason))
    _check_label_spellings(rows, path)
    if not rows and not bad_rows:
        raise UserError("the manifest has no rows", path=path)
    manifest = _settle(path, rows, bad_rows, on_bad_row)
    manifest.column_names = list(column_names)
    return manifest


def find_manifest(manifests: Sequence[Manifest], path) -> Manifest | None:
    """The manifest of `manifests` read from the file at `path` (however the path is written), else `None`.

    A command that read its manifests to check them before TensorFlow loads
    hands them to its job (`train(..., manifests=...)`), which then reads,
    and logs the skipped rows of, each file once.

    Example:
    >>> manifest = Manifest(Path("train.csv"), [])
    >>> find_manifest([manifest], "./train.csv") is manifest, find_manifest([manifest], "val.csv")
    (True, None)
    """
    wanted = Path(path).resolve()
    return next((manifest for manifest in manifests if Path(manifest.path).resolve() == wanted), None)


def _settle(
    path: Path, rows: list[ManifestRow], bad_rows: list[BadRow], on_bad_row: str, previously_skipped=()
) -> Manifest:
    """The manifest of `rows`, after failing on or skipping `bad_rows` as `on_bad_row` says."""
    if bad_rows and on_bad_row == "fail":
        raise bad_rows_error(path, bad_rows)
    for bad_row in bad_rows:
        logger.warning("skipped: %s", bad_row)
    if not rows:
        raise UserError(f"no rows left: all {len(bad_rows)} rows are bad (the first: {bad_rows[0]})", path=path)
    return Manifest(path, rows, [*previously_skipped, *bad_rows])


class BadRowsError(UserError):
    """Bad rows refused under `on_bad_row="fail"`: the CLI adds how to leave them out where the command can."""


def bad_rows_error(path: Path, bad_rows: list[BadRow]) -> BadRowsError:
    """One error listing the first `BAD_ROWS_SHOWN` bad rows and the count of the others.

    It names the file the bad rows are in (a `cv` fold's: the user's, `Manifest.where`), else `path`.
    """
    files = {row.path for row in bad_rows}
    path = files.pop() if len(files) == 1 else path
    if len(bad_rows) == 1:
        return BadRowsError(bad_rows[0].reason, path=path, row=bad_rows[0].line)
    shown = "; ".join(
        f"{'' if row.path == path else f'{row.path}: '}line {row.line}: {row.reason}"
        for row in bad_rows[:BAD_ROWS_SHOWN]
    )
    more = f"; and {len(bad_rows) - BAD_ROWS_SHOWN} more" if len(bad_rows) > BAD_ROWS_SHOWN else ""
    return BadRowsError(f"{len(bad_rows)} bad rows: {shown}{more}", path=path)


def _check_label_spellings(rows: list[ManifestRow], path: Path):
    """Labels that differ only in case or surrounding spaces are a mistake, not two classes."""
    first_spelling: dict[str, tuple[str, int]] = {}
    for row in rows:
        if row.raw_label is None:
            continue
        key = row.raw_label.strip().casefold()
        spelling, line = first_spelling.setdefault(key, (row.raw_label, row.line))
        if spelling != row.raw_label:
            raise UserError(
                f"the labels {spelling!r} (line {line}) and {row.raw_label!r} differ only in case or surrounding "
                "spaces; write every label of a class the same way",
                path=path,
                row=row.line,
            )


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


def _csv_records(
    text: str, path: Path, names: tuple[str, ...], required: tuple[str, ...]
) -> Iterator[tuple[int, dict[str, str] | UserError]]:
    """(line, {column: cell} or the row's problem) per data row; a row's line is the one it starts on."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    next_line = 2
    try:
        header = next(reader, None)
        if header is None:
            raise UserError(f"empty file: expected a header row with the columns {', '.join(names)}", path=path)
        header_names = [name.strip() for name in header]
        _check_columns(header_names, names, required, path)
        next_line = reader.line_num + 1
        for cells in reader:
            line, next_line = next_line, reader.line_num + 1
            if not cells:  # a blank line
                continue
            if len(cells) != len(header_names):
                yield line, UserError(f"expected {len(header_names)} cells like the header, found {len(cells)}")
                continue
            yield line, dict(zip(header_names, cells))
    except csv.Error as error:
        # Quoting mistakes leave the rest of the file unparseable: one error for the file.
        raise UserError(f"invalid CSV: {error} (an unclosed or stray quote?)", path=path, row=next_line) from None


def _check_columns(
    header: list[str], names: tuple[str, ...], required: tuple[str, ...], path: Path, *, has_header_line=True
):
    """The required columns are there, once; a CSV's header is its line 1, a Parquet file's columns are its schema."""
    where, row = ("the header has", 1) if has_header_line else ("the file's columns are", None)
    duplicated = sorted({name for name in header if name in names and header.count(name) > 1})
    if duplicated:
        raise UserError(f"the header repeats the column(s) {', '.join(duplicated)}", path=path, row=row)
    missing = [name for name in required if name not in header]
    if missing:
        raise UserError(
            f"missing column(s) {', '.join(missing)} ({where}: {', '.join(header)}){_mapping_hint(missing)}",
            path=path,
            row=row,
        )


def _mapping_hint(missing: list[str]) -> str:
    """How to name other columns, when a default column name is what is missing."""
    flags = [f"--{name}-column" for name in missing if name in COLUMNS]
    return f"; name yours with {', '.join(flags)}" if flags else ""


def _jsonl_records(
    text: str, path: Path, names: tuple[str, ...], required: tuple[str, ...]
) -> Iterator[tuple[int, dict[str, str] | UserError]]:
    """(line, {key: cell} or the line's problem) per non-blank line, JSON `null` read as an empty cell."""
    # Split on "\n" only: str.splitlines would also split inside JSON strings (U+2028 and co).
    for line, content in enumerate(text.split("\n"), start=1):
        if content.strip():
            yield line, _json_record(content, names, required)


def _json_record(content: str, names: tuple[str, ...], required: tuple[str, ...]) -> dict[str, str] | UserError:
    try:
        record = json.loads(content)
    except json.JSONDecodeError as error:
        return UserError(f"invalid JSON: {error.msg} (column {error.colno})")
    except RecursionError:
        return UserError("invalid JSON: nested too deeply")
    if not isinstance(record, dict):
        return UserError(f"expected a JSON object, found {_json_type(record)}")
    missing = [key for key in required if key not in record]
    if missing:
        return UserError(f"missing key(s) {', '.join(missing)} (the object has: {', '.join(map(str, record))})")
    try:
        cells = {key: _json_cell(record.get(key), key, key == names[-1]) for key in names}
    except UserError as error:
        return error
    # The other keys are kept as written (JSON for anything but a string) for batch prediction's output.
    others = {str(key): value if isinstance(value, str) else json.dumps(value) for key, value in record.items()}
    return {**others, **cells}


def _json_cell(value, key: str, is_label: bool) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if is_label and isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # class ids written as numbers are still class names
    raise UserError(f"{key!r} must be a string or null, found {_json_type(value)}")


def _json_type(value) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number"}
    return names.get(type(value), "a number" if isinstance(value, float) else "null")


def _make_row(
    record: dict[str, str], columns: dict[str, str], path: Path, line: int, require_labels: bool
) -> ManifestRow:
    for role in COLUMNS:
        try:
            clean_text(record.get(columns[role], ""))
        except InvalidTextError as error:
            raise UserError(f"the {columns[role]} cell is {error.problem}") from None
    text, image, label = (record.get(columns[role], "") for role in COLUMNS)
    if not is_present(text) and not is_present(image):
        raise UserError("the row has neither a text nor an image")
    if require_labels and not label.strip():
        raise UserError("empty label")
    if "\0" in image:  # (a JSON "\u0000"): no file can be named so, and os.stat raises ValueError, not OSError
        raise UserError(f"the {columns['image']} cell holds a NUL character, which no file name can")
    return ManifestRow(
        text=clean_text(text) if is_present(text) else None,
        image=path.parent / image.strip() if is_present(image) else None,
        label=label.strip() or None,
        line=line,
        raw_label=label or None,
        cells=record.as_written if isinstance(record, ParquetRecord) else record,  # bytes: not the file written
    )


def decoded_as(preprocessor: MultimodalPreprocessor) -> dict:
    """`validate_images`' keywords that decode images as `preprocessor` does (its pixel limit, JPEG scale, crop).

    A check that decoded every pixel cost a phone photo about six times the reduced decode training makes, and
    refused a 48 MP JPEG that training and `predict` read (docs/design.md#the-image-check-decodes-as-training-does).

    Example:
    >>> manifest.validate_images(preprocessor.image_size, "fail", **decoded_as(preprocessor))  # doctest: +SKIP
    """
    return {
        "max_pixels": preprocessor.max_image_pixels,
        "jpeg_draft_factor": preprocessor.jpeg_draft_factor,
        "crop_pct": preprocessor.crop_pct,
    }


def _checked_images(
    images: list[Path], image_size: tuple[int, int], decoding: dict, *, remember: bool
) -> dict[Path, str | None]:
    """Why each of `images` cannot be loaded (`None` when it can): remembered outcomes, the others decoded.

    `decoding`: `load_image`'s `max_pixels`, `jpeg_draft_factor` and `crop_pct`. Each is in the check cache's
    settings key: a JPEG's reduced decode (and so its pixel count) depends on all three.
    """
    settings = (
        f"{image_size[0]}x{image_size[1]}:{decoding['max_pixels']}:draft-{decoding['jpeg_draft_factor']}"
        f":crop-{decoding['crop_pct']}:pillow-{PIL.__version__}"
    )
    checks = ImageCheckCache.open_default() if remember else None
    problems = checks.known(images, settings) if checks is not None else {}
    unchecked = [image for image in images if image not in problems]
    if problems:
        logger.info("%d of %d images unchanged since their last check", len(problems), len(images))
    found = []
    check = partial(_image_problem, image_size=image_size, **decoding)
    # Pillow releases the GIL while decoding, so threads use every core.
    with ThreadPoolExecutor() as pool, step_progress("checking images", len(unchecked)) as progress:
        for problem in pool.map(check, unchecked):
            found.append(problem)
            progress.update(len(found))
    checked = dict(zip(unchecked, found))
    if checks is not None:
        checks.record(checked, settings)
        checks.close()
    return {**problems, **checked}


def _image_problem(image: Path, image_size: tuple[int, int], **decoding) -> str | None:
    """Why `image` cannot be loaded (decoded with `load_image`'s `decoding` keywords), or `None` when it can.

    A reduced JPEG decode still reads every byte of the entropy-coded data (libjpeg skips only the fine
    inverse DCT), so it finds what the full decode finds: a truncated file, a broken marker
    (tests/test_image_check_decoding.py).
    """
    try:
        load_image(image, image_size, **decoding)
    except UnreadableImageError as error:
        return error.reason
    return None


def _unknown_label(label: str, labels: list[str]) -> str:
    return f"unknown label {label!r} (known labels: {_summarize(labels)})"


def _summarize(labels: list[str]) -> str:
    shown = ", ".join(labels[:_LABELS_SHOWN])
    return shown if len(labels) <= _LABELS_SHOWN else f"{shown}, ... ({len(labels)} in all)"


def _parquet_records(
    path: Path, names: tuple[str, ...], required: tuple[str, ...]
) -> Iterator[tuple[int, dict[str, str] | UserError]]:
    """(row number from 1, {column: cell}) per row of a Parquet file, image bytes written to files."""
    rows = ParquetRows(path)
    _check_columns(rows.column_names, names, required, path, has_header_line=False)
    yield from rows.records(*names)


def _text_file(read_text_records):
    """A reader of the file at a path, from a reader of its text."""
    return lambda path, names, required: read_text_records(_read_text(path), path, names, required)


_RECORD_READERS = {
    ".csv": _text_file(_csv_records),
    ".jsonl": _text_file(_jsonl_records),
    ".ndjson": _text_file(_jsonl_records),
    ".parquet": _parquet_records,
}
