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

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mmkeras.data.feature_cache_folders import default_cache_dir
from mmkeras.errors import UserError

# Rows per record batch read: a few MB of image bytes at a time.
BATCH_ROWS = 512
READ_BUFFER_BYTES = 1 << 20
EMBEDDED_IMAGES_FOLDER = "parquet-images"
_HUGGING_FACE_IMAGE_FIELDS = {"bytes", "path"}


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

    def records(self, text: str, image: str, label: str) -> Iterator[tuple[int, dict[str, str]]]:
        """(row number from 1, {column: cell}) per row; image bytes written to files and named by their path.

        Args:
            text, image, label: the names of the text, image and label
                columns (those absent from the file are left out).

        Raises:
            UserError: a column of a type the role cannot hold, or a file
                that cannot be read past some row.
        """
        schema = self._file.schema_arrow
        checks = ((text, _is_text, "strings"), (label, _is_label, "strings or integers"),
                  (image, _is_image, "image paths (strings), image bytes (binary) or {bytes, path} structs"))
        for name, fits, expected in checks:
            if name in self.column_names and not fits(self._pa, schema.field(name).type):
                raise UserError(
                    f"the column {name!r} holds {schema.field(name).type}; it must hold {expected}", path=self.path
                )
        folder = str(embedded_images_folder())
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
                cells = {
                    str(key): self._image_cell(value, folder, line) if key == image else _cell(value)
                    for key, value in values.items()
                }
                yield line, cells
                line += 1

    def _image_cell(self, value, folder: str, line: int) -> str:
        """The image path of a row: the path written, or the file its bytes were written to."""
        if isinstance(value, dict):  # Hugging Face's {bytes, path}: the bytes when present
            value = value.get("bytes") or value.get("path")
        if not isinstance(value, bytes):
            return value or ""
        if not value:  # empty bytes: no image, like an empty cell
            return ""
        try:
            return _written_image(value, folder)
        except OSError as error:
            raise UserError(f"cannot write the row's image bytes to {folder}: {error.strerror}", path=self.path,
                            row=line) from None


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


def _is_text(pa, kind) -> bool:
    return _is_string(pa, kind)


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
    handle, partial = tempfile.mkstemp(dir=subfolder, prefix="partial-")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return path
