"""`ImageCheckCache`: the outcome of each image check, remembered by (path, size, mtime).

`Manifest.validate_images` decodes every image once before training (a file
that cannot be read stops the run before it starts, not in the middle). On a
large manifest that is most of the start-up time, and the next run on the
same files would do it all again. The outcome (readable, or the reason it is
not) is stored in one SQLite file beside the feature caches
(`image_checks.sqlite3` in the parent of `default_cache_dir()`), keyed by
the file's absolute path, size and modification time, and by the check's
settings (target size, pixel limit, JPEG draft factor, crop, Pillow
version): a changed file, or another check, is checked again. SQLite lets several processes (multi-worker
training) read and write the file at once.

A cache that cannot be opened (a read-only home, a full disk) only costs the
speed-up: the check runs, with a warning.

TensorFlow-free.

Example:
>>> checks = ImageCheckCache.open_default()                      # doctest: +SKIP
>>> known = checks.known(paths, "224x224:178956970")              # doctest: +SKIP
>>> checks.record({path: None for path in paths}, "224x224:...")  # doctest: +SKIP
"""

import logging
import os
import sqlite3
from pathlib import Path

logger = logging.getLogger(__name__)

CHECKS_FILE = "image_checks.sqlite3"
# Seconds a process waits for another one's write to the file.
LOCK_TIMEOUT_SECONDS = 30.0


class ImageCheckCache:
    """Image check outcomes by (absolute path, size, mtime, check settings).

    Args:
        path: the SQLite file (created when missing).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connection = sqlite3.connect(self.path, timeout=LOCK_TIMEOUT_SECONDS)
        with self._connection:
            self._connection.execute(
                "CREATE TABLE IF NOT EXISTS checks (path TEXT, size INTEGER, mtime_ns INTEGER, settings TEXT, "
                "problem TEXT, PRIMARY KEY (path, settings))"
            )

    @classmethod
    def open_default(cls) -> "ImageCheckCache | None":
        """The cache beside the feature caches, or `None` (with a warning) when it cannot be opened."""
        from mmkeras.data.feature_cache_folders import default_cache_dir

        path = default_cache_dir().parent / CHECKS_FILE
        try:
            return cls(path)
        except (OSError, sqlite3.Error) as error:
            logger.warning("image checks are not remembered (cannot open %s: %s)", path, error)
            return None

    def known(self, images: list[Path], settings: str) -> dict[Path, str | None]:
        """The stored outcome (`None`: readable; else the reason) of each of `images` unchanged since its check."""
        stored = {
            path: (size, mtime_ns, problem)
            for path, size, mtime_ns, problem in self._connection.execute(
                "SELECT path, size, mtime_ns, problem FROM checks WHERE settings = ?", (settings,)
            )
        }
        found = {}
        for image in images:
            stamp = file_stamp(image)
            entry = stored.get(os.path.abspath(image)) if stamp else None
            if entry is not None and entry[:2] == stamp:
                found[image] = entry[2]
        return found

    def record(self, outcomes: dict[Path, str | None], settings: str):
        """Store the outcome of each image check (files that vanished meanwhile are left out)."""
        rows = []
        for image, problem in outcomes.items():
            stamp = file_stamp(image)
            if stamp:
                rows.append((os.path.abspath(image), *stamp, settings, problem))
        try:
            with self._connection:
                self._connection.executemany("INSERT OR REPLACE INTO checks VALUES (?, ?, ?, ?, ?)", rows)
        except sqlite3.Error as error:
            logger.warning("image checks are not remembered (cannot write %s: %s)", self.path, error)

    def close(self):
        self._connection.close()


def file_stamp(path: Path) -> tuple[int, int] | None:
    """`(size, mtime_ns)` of a regular file, or `None`."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_size, stat.st_mtime_ns)
