"""The feature cache folder: where caches live, which there are, and clearing old ones.

Each cache is a subfolder named by the fingerprint of what its features
depend on (`feature_cache.py`), so caches of other data, backbones or
preprocessing coexist and no run removes another's. Only `clear_caches`
(`mmkeras cache clear`) deletes, and never a cache that a process is writing
(it holds that folder's `folder_lock`). A cache's last use is the time of its
`meta.json`, touched each time a run reads it.

TensorFlow-free: `mmkeras cache list` starts in a fraction of a second.

Example:
>>> [entry.key for entry in list_caches(default_cache_dir())]             # doctest: +SKIP
>>> removed = clear_caches(default_cache_dir(), older_than_days=30)        # doctest: +SKIP
"""

import dataclasses
import datetime
import json
import os
import shutil
import time
from pathlib import Path

from mmkeras.data.feature_shards import META_FILE, folder_bytes
from mmkeras.errors import UserError
from mmkeras.folder_lock import folder_lock

SECONDS_PER_DAY = 86400


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    """One cache in the cache folder.

    Args:
        folder: the cache's folder (its name is the fingerprint).
        rows: rows cached (`None` while incomplete).
        bytes: size on disk.
        last_used: seconds since the epoch of its last read or write.
        complete: `meta.json` was written (an incomplete one is being
            written, or its writer was killed).
        details: what `meta.json` says it holds (`manifest`, `features`,
            `dtype`, `quantization` for a QAT run's fake-quantized features, ...).
    """

    folder: Path
    rows: int | None
    bytes: int
    last_used: float
    complete: bool
    details: dict

    @property
    def key(self) -> str:
        return self.folder.name

    def as_dict(self) -> dict:
        used = datetime.datetime.fromtimestamp(self.last_used, datetime.UTC).isoformat(timespec="seconds")
        return {"key": self.key, "folder": str(self.folder), "rows": self.rows, "bytes": self.bytes,
                "last_used": used, "complete": self.complete, **self.details}


def default_cache_dir() -> Path:
    """`$MMKERAS_CACHE_DIR`, else `mmkeras/features` in the user's cache folder (`$XDG_CACHE_HOME` or `~/.cache`)."""
    if os.environ.get("MMKERAS_CACHE_DIR"):
        return Path(os.environ["MMKERAS_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mmkeras" / "features"


def human_bytes(count: int) -> str:
    """`1.2 GB`, `340 MB`, `12 KB`: a size for a person."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


def list_caches(cache_dir: str | Path) -> list[CacheEntry]:
    """The caches in `cache_dir`, most recently used first (none when the folder does not exist)."""
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        return []
    entries = [_entry(folder) for folder in cache_dir.iterdir() if folder.is_dir() and not folder.name.startswith(".")]
    return sorted(entries, key=lambda entry: entry.last_used, reverse=True)


def clear_caches(cache_dir: str | Path, *, older_than_days: float | None = None) -> list[CacheEntry]:
    """Delete the caches of `cache_dir` (those unused for `older_than_days`, if given), except any being written.

    Args:
        cache_dir: the cache folder.
        older_than_days: keep caches used more recently than this.

    Returns:
        The deleted caches.
    """
    if older_than_days is not None and older_than_days < 0:
        raise UserError(f"--older-than must be at least 0 days, got {older_than_days}")
    cutoff = time.time() - (older_than_days or 0) * SECONDS_PER_DAY
    removed = []
    for entry in list_caches(cache_dir):
        if older_than_days is not None and entry.last_used > cutoff:
            continue
        try:
            with folder_lock(entry.folder):
                shutil.rmtree(entry.folder)
        except UserError:
            continue  # a run is writing it (it holds the lock)
        removed.append(entry)
    return removed


def mark_used(folder: Path):
    """Record that a run read the cache in `folder` now (`--older-than` counts from the last use)."""
    os.utime(folder / META_FILE)


def _entry(folder: Path) -> CacheEntry:
    meta_path = folder / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return CacheEntry(folder, None, folder_bytes(folder), folder.stat().st_mtime, False, {})
    details = {key: meta[key] for key in ("manifest", "features", "dtype", "quantization", "created") if key in meta}
    return CacheEntry(folder, meta["rows"], folder_bytes(folder), meta_path.stat().st_mtime, True, details)
