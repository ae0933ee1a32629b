"""Feature shards: named row arrays written shard by shard and read back row by row, never all in memory.

A feature cache (`feature_cache.py`) is a folder of `.npy` shards, one file per
array per `rows_per_shard` rows (`image_tokens-00003.npy`), and a
`meta.json` written last: a folder without it is incomplete. Reading uses
`os.pread` on the shards' data, not `np.load` or a memory map: the bytes pass
through the kernel's page cache (reclaimable, shared) instead of the
process's own memory, so a reader's peak RSS is one batch, whatever the
number of rows (`benchmarks/feature_cache.py`).

TensorFlow-free (numpy only).

Example:
>>> writer = ShardWriter(folder, target_shard_bytes=1 << 20)            # doctest: +SKIP
>>> writer.append({"tokens": batch, "label": labels})                  # doctest: +SKIP
>>> meta = writer.close({"manifest": "train.csv"})                     # doctest: +SKIP
>>> ShardReader(folder).read([3, 0, 7])["tokens"].shape                # doctest: +SKIP
"""

import dataclasses
import datetime
import json
import os
from pathlib import Path

import numpy as np

from mmkeras.atomic_files import write_atomically

META_FILE = "meta.json"
FORMAT_VERSION = 1
# Rows per shard are chosen so that one shard of every array takes about this much (the writer's buffer).
TARGET_SHARD_BYTES = 16 << 20
# Open shard files a reader keeps (over all its arrays); beyond, each read opens its shard.
MAX_OPEN_SHARDS = 256


class ShardWriter:
    """Collects batches of named arrays and writes them as `.npy` shards of whole rows.

    Args:
        folder: the (empty) folder to write.
        target_shard_bytes: about how many bytes one shard of all the arrays
            holds: the most the writer keeps in memory.
    """

    def __init__(self, folder: str | Path, *, target_shard_bytes: int = TARGET_SHARD_BYTES):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.target_shard_bytes = target_shard_bytes
        self.rows_per_shard = None
        self.rows = 0
        self.shards = 0
        self._pending: dict[str, list[np.ndarray]] = {}
        self._pending_rows = 0
        self._layout: dict[str, dict] = {}

    def append(self, arrays: dict[str, np.ndarray]):
        """Add a batch: every array has the same number of rows, and the same names, dtypes and row shapes each time."""
        if self.rows_per_shard is None:
            row_bytes = sum(array[:1].nbytes for array in arrays.values())
            self.rows_per_shard = max(1, self.target_shard_bytes // max(row_bytes, 1))
            self._layout = {
                name: {"dtype": array.dtype.str, "row_shape": list(array.shape[1:])} for name, array in arrays.items()
            }
            self._pending = {name: [] for name in arrays}
        for name, array in arrays.items():
            self._pending[name].append(array)
        self._pending_rows += len(next(iter(arrays.values())))
        while self._pending_rows >= self.rows_per_shard:
            self._write_shard(self.rows_per_shard)

    def close(self, details: dict) -> dict:
        """Write the last shard and `meta.json` (with `details`); returns the meta."""
        if self._pending_rows:
            self._write_shard(self._pending_rows)
        meta = {
            "format": FORMAT_VERSION,
            "rows": self.rows,
            "rows_per_shard": self.rows_per_shard or 1,
            "shards": self.shards,
            "arrays": self._layout,
            "bytes": folder_bytes(self.folder),
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            **details,
        }
        write_atomically(self.folder / META_FILE, lambda partial: Path(partial).write_text(json.dumps(meta, indent=1)))
        return meta

    def _write_shard(self, rows: int):
        for name, parts in self._pending.items():
            joined = np.concatenate(parts)
            np.save(self.folder / shard_file(name, self.shards), joined[:rows])
            self._pending[name] = [joined[rows:]] if len(joined) > rows else []
        self._pending_rows -= rows
        self.rows += rows
        self.shards += 1


class ShardReader:
    """Rows of a complete shard folder, read with `os.pread` (see the module docstring).

    Args:
        folder: a folder written by `ShardWriter` (with its `meta.json`).
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / META_FILE).read_text())
        self.rows = self.meta["rows"]
        self.rows_per_shard = self.meta["rows_per_shard"]
        self.arrays = {
            name: _ArrayShards(self.folder, name, np.dtype(layout["dtype"]), tuple(layout["row_shape"]), self.meta)
            for name, layout in self.meta["arrays"].items()
        }

    def read(self, indices) -> dict[str, np.ndarray]:
        """The rows `indices` (any order, repeats allowed) of every array."""
        indices = np.asarray(indices, np.int64)
        return {name: shards.read(indices, self.rows_per_shard) for name, shards in self.arrays.items()}

    def close(self):
        for shards in self.arrays.values():
            shards.close()


@dataclasses.dataclass
class _ArrayShards:
    folder: Path
    name: str
    dtype: np.dtype
    row_shape: tuple
    meta: dict

    def __post_init__(self):
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self.paths = [self.folder / shard_file(self.name, shard) for shard in range(self.meta["shards"])]
        self.offsets = [_data_offset(path) for path in self.paths]
        # Descriptors stay open while they are few; a cache of more shards opens each one per read, so that
        # a huge cache never runs into the process's limit of open files.
        self.descriptors = (
            [os.open(path, os.O_RDONLY) for path in self.paths]
            if len(self.paths) * len(self.meta["arrays"]) <= MAX_OPEN_SHARDS
            else None
        )

    def read(self, indices: np.ndarray, rows_per_shard: int) -> np.ndarray:
        out = np.empty((len(indices), *self.row_shape), self.dtype)
        if not self.row_bytes:  # an empty array per row: nothing was written, nothing to read
            return out
        buffer = out.reshape(len(indices), -1).view(np.uint8)
        position = 0
        # Consecutive rows of one shard are one read (an unshuffled pass reads whole runs).
        for start, count in _runs(indices, rows_per_shard):
            shard, row = divmod(int(start), rows_per_shard)
            offset = self.offsets[shard] + row * self.row_bytes
            data = self._pread(shard, count * self.row_bytes, offset)
            buffer[position : position + count] = np.frombuffer(data, np.uint8).reshape(count, self.row_bytes)
            position += count
        return out

    def _pread(self, shard: int, size: int, offset: int) -> bytes:
        if self.descriptors is not None:
            return os.pread(self.descriptors[shard], size, offset)
        descriptor = os.open(self.paths[shard], os.O_RDONLY)
        try:
            return os.pread(descriptor, size, offset)
        finally:
            os.close(descriptor)

    def close(self):
        for descriptor in self.descriptors or ():
            os.close(descriptor)
        self.descriptors = None


def _runs(indices: np.ndarray, rows_per_shard: int):
    """`(first index, count)` of each run of consecutive indices within one shard."""
    start, count = None, 0
    for index in indices.tolist():
        if start is not None and index == start + count and index // rows_per_shard == start // rows_per_shard:
            count += 1
            continue
        if start is not None:
            yield start, count
        start, count = index, 1
    if start is not None:
        yield start, count


def _data_offset(path: Path) -> int:
    """Where a `.npy` file's data starts (after its magic and header)."""
    with open(path, "rb") as file:
        version = np.lib.format.read_magic(file)
        if version == (1, 0):
            np.lib.format.read_array_header_1_0(file)
        else:
            np.lib.format.read_array_header_2_0(file)
        return file.tell()


def shard_file(name: str, shard: int) -> str:
    return f"{name}-{shard:05d}.npy"


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in Path(folder).iterdir() if path.is_file())
