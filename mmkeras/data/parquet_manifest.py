"""`ParquetRows`: a Parquet manifest's rows, streamed by record batch, its images as paths or as bytes.

A Parquet manifest has the columns of a CSV one (`mmkeras.data.manifest`):
the text column holds strings, the label column strings or integers (class
ids, e.g. Hugging Face `datasets`' `ClassLabel`), and the image column one of

- strings: image paths, relative to the manifest's folder unless absolute;
- binary: the image file's bytes (JPEG, PNG, ... as written to disk);
- structs `{bytes, path}`: Hugging Face `datasets`' `Image` feature, read
  as its bytes, or as its path where the bytes are null.

The file is read one record batch (`BATCH_ROWS` rows) at a time, its pages
as the batches need them, so a million-row manifest with its images inside is
never in memory at once, even when written as one row group.
Image bytes are written once to a content-addressed folder
(`embedded_images_folder()`, `ab/<sha256>` in it) and the row names that file:
training, evaluation, batch prediction, the image checks and the feature
cache then treat them like any image file, through the same `load_image`.
The file name is the bytes' SHA-256, so a feature cache or a remembered
image check keyed by (path, size, mtime) is keyed by the image's content:
two Parquet files holding the same photo share it, a rewritten Parquet file
whose images did not change keeps it (docs/design.md#parquet-manifests).

The folder is a cache: `mmkeras cache list` shows it (`embedded_images_usage`)
and `mmkeras cache clear` deletes it (`clear_embedded_images`), the next read
writes the images again. A process that named a file in it (its rows point
there for the rest of its life) holds a shared lock on it until it ends, and
the folder is only deleted under the exclusive lock: never under a running
training, nor between a writer's staging and its rename.

The rows' cells (`ManifestRow.cells`, what `predict --data` copies to its
output) keep the image as the file has it, not the file written: a path as
written (a Hugging Face struct's `path` too), else `<image bytes of row 12>`.

Rows are numbered from 1 in file order (pandas' index + 1): an error on
"line 7" is about the seventh row.

pyarrow is imported only when a Parquet file is read: the TensorFlow-free
base install reads CSV and JSONL without it.

Example:
>>> rows = ParquetRows(Path("train.parquet"))                                  # doctest: +SKIP
>>> rows.column_names                                                          # doctest: +SKIP
['text', 'image', 'label']
>>> line, record = next(rows.records("text", "image", "label"))                # doctest: +SKIP
"""

import dataclasses
import datetime
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from mmkeras.data.feature_cache_folders import SECONDS_PER_DAY, default_cache_dir
from mmkeras.errors import UserError
from mmkeras.folder_lock import lock_file_of

# Rows per record batch read: a few MB of image bytes at a time.
BATCH_ROWS = 512
READ_BUFFER_BYTES = 1 << 20
EMBEDDED_IMAGES_FOLDER = "parquet-images"
_HUGGING_FACE_IMAGE_FIELDS = {"bytes", "path"}
# Touched by each read that names a file in the folder: `cache clear --older-than` counts from it.
LAST_USED_FILE = ".last-used"
_PARTIAL_PREFIX = "partial-"
# The shared locks this process holds, by folder: kept open until the process ends (its rows name the files).
_held_locks: dict[str, int] = {}
logger = logging.getLogger(__name__)


def embedded_images_folder() -> Path:
    """Where images held as bytes in Parquet manifests are written: `parquet-images` beside the feature caches."""
    return default_cache_dir().absolute().parent / EMBEDDED_IMAGES_FOLDER


def embedded_image_name(image: Path) -> str | None:
    """`<image bytes 1a2b3c4d5e6f>` for an image written from a Parquet manifest's bytes, `None` for another file.

    Example:
    >>> embedded_image_name(embedded_images_folder() / "1a" / ("1a2b3c4d5e6f" + "0" * 52))
    '<image bytes 1a2b3c4d5e6f>'
    """
    if image.parent.parent != embedded_images_folder():
        return None
    return f"<image bytes {image.name[:12]}>"


class ParquetRows:
    """The rows of a Parquet manifest, read lazily.

    Args:
        path: the Parquet file.

    Raises:
        UserError: pyarrow is not installed, or the file is missing or not
            Parquet.
    """

    def __init__(self, path: Path):
        self.path = path
        self._pa, parquet = _pyarrow(path)
        try:
            # Buffered column reads, not pre-buffered: pages are read as the batches need them, so one large
            # row group is not read whole (1 GB of image bytes in one row group: 370 MB peak RSS, not 1.2 GB).
            self._file = parquet.ParquetFile(path, buffer_size=READ_BUFFER_BYTES, pre_buffer=False)
        except FileNotFoundError:
            raise UserError("manifest not found", path=path) from None
        except (self._pa.ArrowException, OSError) as error:
            raise UserError(f"not a readable Parquet file: {error}", path=path) from None
        self.column_names: list[str] = list(self._file.schema_arrow.names)

    def records(self, text: str, image: str, label: str) -> Iterator[tuple[int, "ParquetRecord"]]:
        """(row number from 1, {column: cell}) per row; image bytes written to files and named by their path.

        Each record's `as_written` has the cells as the file has them (see
        `ParquetRecord`).

        Args:
            text, image, label: the names of the text, image and label
                columns (those absent from the file are left out).

        Raises:
            UserError: a column of a type the role cannot hold, or a file
                that cannot be read past some row.
        """
        schema = self._file.schema_arrow
        checks = ((text, _is_string, "strings"), (label, _is_label, "strings or integers"),
                  (image, _is_image, "image paths (strings), image bytes (binary) or {bytes, path} structs"))
        for name, fits, expected in checks:
            if name in self.column_names and not fits(self._pa, schema.field(name).type):
                raise UserError(
                    f"the column {name!r} holds {schema.field(name).type}; it must hold {expected}", path=self.path
                )
        folder = str(embedded_images_folder())
        self._use_marked = False
        line = 1
        batches = self._file.iter_batches(batch_size=BATCH_ROWS)
        while True:
            try:
                batch = next(batches, None)
            except (self._pa.ArrowException, OSError) as error:
                raise UserError(f"cannot read the Parquet file past this row: {error}", path=self.path,
                                row=line) from None
            if batch is None:
                return
            for values in batch.to_pylist():
                cells = {str(key): _cell(value) for key, value in values.items()}
                as_written = dict(cells)
                if image in values:
                    cells[image], as_written[image] = self._image_cells(values[image], folder, line)
                yield line, ParquetRecord(cells, as_written)
                line += 1

    def _image_cells(self, value, folder: str, line: int) -> tuple[str, str]:
        """A row's image as read (a path: the one written, or the file its bytes were written to) and as shown."""
        named = None
        if isinstance(value, dict):  # Hugging Face's {bytes, path}: the bytes when present
            named, value = value.get("path"), value.get("bytes") or value.get("path")
        if not isinstance(value, bytes) or not value:  # a path, or no image (null, empty bytes)
            cell = value if isinstance(value, str) else ""
            return cell, cell
        try:
            self._mark_use(folder)
            return _written_image(value, folder), named or embedded_image_cell(line)
        except OSError as error:
            raise UserError(f"cannot write the row's image bytes to {folder}: {error.strerror}", path=self.path,
                            row=line) from None

    def _mark_use(self, folder: str):
        """Once per read: hold the folder's shared lock (for this process's life) and touch its last-used file."""
        if self._use_marked:
            return
        _hold_shared_lock(folder)
        os.makedirs(folder, exist_ok=True)
        Path(folder, LAST_USED_FILE).touch()
        self._use_marked = True


class ParquetRecord(dict):
    """A row's cells as the manifest reader uses them, and `as_written`: the same cells as the file has them.

    They differ only where the image column holds bytes: the reader gets
    the file they were written to, `as_written` the struct's `path` or
    `embedded_image_cell(row)`.

    Args:
        cells: `{column: cell}`, the image as a path to read.
        as_written: `{column: cell}`, the image as the user's file names it.
    """

    def __init__(self, cells: dict[str, str], as_written: dict[str, str]):
        super().__init__(cells)
        self.as_written = as_written


def embedded_image_cell(line: int) -> str:
    """How an output row shows an image that a Parquet manifest holds as bytes with no path.

    Example:
    >>> embedded_image_cell(12)
    '<image bytes of row 12>'
    """
    return f"<image bytes of row {line}>"  # no comma: the CSV cell needs no quotes (`cut -d,` still works)


@dataclasses.dataclass(frozen=True)
class EmbeddedImages:
    """The folder of images written from Parquet manifests' bytes, as `mmkeras cache list` shows it.

    Args:
        folder: the folder (`embedded_images_folder()`).
        files: images in it.
        bytes: their size on disk.
        last_used: seconds since the epoch of the last read that named
            a file in it.
    """

    folder: Path
    files: int
    bytes: int
    last_used: float

    def as_dict(self) -> dict:
        used = datetime.datetime.fromtimestamp(self.last_used, datetime.UTC).isoformat(timespec="seconds")
        return {"folder": str(self.folder), "files": self.files, "bytes": self.bytes, "last_used": used}


def embedded_images_usage() -> EmbeddedImages | None:
    """The images folder's file count, size and last use; `None` when there is no folder.

    Example:
    >>> usage = embedded_images_usage()                                     # doctest: +SKIP
    >>> usage.files, usage.bytes                                            # doctest: +SKIP
    (3540, 1702312960)
    """
    folder = embedded_images_folder()
    if not folder.is_dir():
        return None
    files = size = 0
    for subfolder in os.scandir(folder):
        if not subfolder.is_dir():
            continue
        for entry in os.scandir(subfolder.path):
            if entry.name.startswith(_PARTIAL_PREFIX):  # a writer's staged file, not yet an image
                continue
            try:
                size += entry.stat().st_size
            except FileNotFoundError:  # deleted meanwhile
                continue
            files += 1
    marker = folder / LAST_USED_FILE
    last_used = (marker if marker.is_file() else folder).stat().st_mtime
    return EmbeddedImages(folder, files, size, last_used)


def clear_embedded_images(*, older_than_days: float | None = None) -> EmbeddedImages | None:
    """Delete the images folder (if unused for `older_than_days`, when given), unless a running process uses it.

    Args:
        older_than_days: keep the folder when a read named a file in it
            more recently than this.

    Returns:
        What was deleted; `None` when there was no folder, it was used
        recently, or a running process holds its shared lock (it is kept,
        with a warning).

    Example:
    >>> deleted = clear_embedded_images(older_than_days=30)                 # doctest: +SKIP
    """
    if older_than_days is not None and older_than_days < 0:
        raise UserError(f"--older-than must be at least 0 days, got {older_than_days}")
    usage = embedded_images_usage()
    if usage is None:
        return None
    if older_than_days is not None and usage.last_used > time.time() - older_than_days * SECONDS_PER_DAY:
        return None
    descriptor = os.open(lock_file_of(usage.folder), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.warning("kept %s: a running mmkeras process reads images from it", usage.folder)
            return None
        shutil.rmtree(usage.folder)
    finally:
        os.close(descriptor)
    return usage


def _hold_shared_lock(folder: str):
    """Hold the shared lock of `folder` until this process ends (waits while a `cache clear` deletes it)."""
    if folder in _held_locks:
        return
    lock = lock_file_of(folder)
    lock.parent.mkdir(parents=True, exist_ok=True)
    # The lock file stays: unlinking it would let a later locker lock a file nobody else sees.
    descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(descriptor, fcntl.LOCK_SH)
    _held_locks[folder] = descriptor


def _pyarrow(path: Path):
    """pyarrow and pyarrow.parquet, or one line saying how to install them."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise UserError(
            'reading a Parquet manifest needs pyarrow: pip install pyarrow (or "mmkeras[train]")', path=path
        ) from None
    return pyarrow, pyarrow.parquet


def _is_string(pa, kind) -> bool:
    if pa.types.is_dictionary(kind):  # pandas categoricals
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)


def _is_label(pa, kind) -> bool:
    return _is_string(pa, kind) or pa.types.is_integer(kind)


def _is_binary(pa, kind) -> bool:
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind)


def _is_image(pa, kind) -> bool:
    if pa.types.is_struct(kind):
        fields = {kind.field(index).name: kind.field(index).type for index in range(kind.num_fields)}
        return (set(fields) <= _HUGGING_FACE_IMAGE_FIELDS and "bytes" in fields and _is_binary(pa, fields["bytes"])
                and _is_string(pa, fields.get("path", pa.null())))
    return _is_string(pa, kind) or _is_binary(pa, kind)


def _cell(value) -> str:
    """A cell as batch prediction copies it: strings as written, null empty, bytes by size, the rest as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return json.dumps(value, ensure_ascii=False, default=str)


def _written_image(data: bytes, folder: str) -> str:
    """The file holding `data` in `folder`, named by its SHA-256 (written when absent, atomically)."""
    name = hashlib.sha256(data).hexdigest()
    # Strings, not Paths: a million rows spend seconds in pathlib alone.
    subfolder = os.path.join(folder, name[:2])
    path = os.path.join(subfolder, name)
    try:
        if os.stat(path).st_size == len(data):
            return path
    except FileNotFoundError:
        pass
    os.makedirs(subfolder, exist_ok=True)
    # A name of this process's own: several training workers may write the same image at once.
    handle, partial = tempfile.mkstemp(dir=subfolder, prefix=_PARTIAL_PREFIX)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return path
