"""Writing a whole folder (a bundle, a web site) so that a reader sees the old one or the new one, never half.

`staged_folder` hands out a hidden staging folder beside the target that holds
`UNFINISHED_MARKER` while it is written; when the writer's block ends without
an error the marker goes, the folder gets ordinary permissions (0o777 less the
umask, like `mkdir`), and it is renamed into place. An old folder there is
moved aside only once the new one is whole, and deleted only after the new one
took its place. On an error the staging folder is removed and the target is
left as it was. TensorFlow-free: the exporter and the web site builder share it.

Example:
>>> with staged_folder("bundles/demo") as staging:      # doctest: +SKIP
...     (staging / "bundle.json").write_text("{}")
"""

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger("mmkeras")

# In a folder still being written; a finished bundle or site never holds it (`mmkeras.runtime.bundle.read_bundle`).
UNFINISHED_MARKER = ".export-unfinished"


def _process_umask() -> int:
    """The umask, read once: `os.umask` can only be read by setting it, so it is set straight back."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


# A written folder's permissions: what `mkdir` would give (mkdtemp's own are 0o700, private to the user).
FOLDER_MODE = 0o777 & ~_process_umask()


def staging_prefix(out_dir: Path, kind: str) -> str:
    """The name prefix of the hidden folders beside `out_dir` being written (`partial`) or retired (`old`).

    Example:
    >>> staging_prefix(Path("bundles/demo"), "partial")
    '.demo.partial-'
    """
    return f".{out_dir.name}.{kind}-"


@contextlib.contextmanager
def staged_folder(out_dir: str | Path) -> Iterator[Path]:
    """A staging folder to write `out_dir`'s new content into; renamed onto `out_dir` when the block ends well.

    Args:
        out_dir: the folder to write, or to replace (the caller checks that it may be replaced).

    Example:
    >>> with staged_folder("sites/demo") as staging:     # doctest: +SKIP
    ...     (staging / "index.html").write_text("<html></html>")
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=staging_prefix(out_dir, "partial"), dir=out_dir.parent))
    try:
        (staging / UNFINISHED_MARKER).touch()
        yield staging
        (staging / UNFINISHED_MARKER).unlink()
        # Set last: a copytree into the staging folder copies its source's mode onto it.
        staging.chmod(FOLDER_MODE)
        replace_folder(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def replace_folder(staging: Path, out_dir: Path):
    """Rename the finished `staging` folder to `out_dir`, replacing an old folder there.

    Two renames on one filesystem: the old folder is moved aside only once the
    new one is complete, moved back if the second rename fails, and deleted
    only after the new one is in place.
    """
    if not out_dir.exists():
        os.rename(staging, out_dir)
        return
    retired = Path(tempfile.mkdtemp(prefix=staging_prefix(out_dir, "old"), dir=out_dir.parent))
    os.rename(out_dir, retired)  # onto an empty folder: allowed by POSIX rename
    try:
        os.rename(staging, out_dir)
    except OSError:
        os.rename(retired, out_dir)
        raise
    shutil.rmtree(retired)


def remove_stale_staging(out_dir: Path):
    """Remove what a killed writer of `out_dir` left beside it (call only while holding `out_dir`'s lock)."""
    if not out_dir.parent.is_dir():
        return
    for kind in ("partial", "old"):
        for stale in out_dir.parent.glob(staging_prefix(out_dir, kind) + "*"):
            if stale.is_dir() and not stale.is_symlink():
                logger.info("removing %s, left by an interrupted export", stale)
                shutil.rmtree(stale)
