"""`folder_lock`: one writer at a time for a run or bundle folder (or a shared cache).

Two `train` (or `export`) processes writing the same `--out` would each
believe their result was saved while one of them is silently lost. The writer
takes an exclusive `fcntl.flock` on a lock file beside the folder
(`.NAME.lock`; beside, not inside, because `export` replaces the folder by a
rename). The kernel drops a flock when its process ends, so a killed writer
never leaves a stale lock; the file names the holder (pid and host) for the
message the second process prints, and is removed when the lock is released.

TensorFlow-free: `export` and `train` both use it.

Example:
>>> with folder_lock("runs/demo"):  # doctest: +SKIP
...     save_run("runs/demo", ...)
"""

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from mmkeras.errors import UserError


def lock_file_of(folder: str | Path) -> Path:
    """The lock file of `folder`: `.NAME.lock` in its parent folder."""
    folder = Path(folder).absolute()
    return folder.with_name(f".{folder.name}.lock")


@contextlib.contextmanager
def folder_lock(folder: str | Path, wait: bool = False) -> Iterator[Path]:
    """Hold the exclusive write lock of `folder` for the `with` block.

    Args:
        folder: the run or bundle folder about to be written (it need not
            exist yet; its parent folder is created).
        wait: block until another holder releases it instead of refusing
            (a shared cache: the second process then finds it filled).

    Raises:
        UserError: another process holds the lock (named by pid and host)
            and `wait` is off, or the lock file cannot be created there.
    """
    path = lock_file_of(folder)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = _acquire(path, folder, wait)
    except OSError as error:  # a read-only or pseudo filesystem, no permission: the user's to fix
        raise UserError(f"cannot create the lock file {path.name} beside it: {error.strerror}", path=folder) from None
    try:
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"pid {os.getpid()} host {socket.gethostname()}\n".encode())
        yield path
    finally:
        # Unlink before unlocking: a process that opened the old file then finds it replaced (see _acquire).
        path.unlink(missing_ok=True)
        os.close(descriptor)


def _acquire(path: Path, folder, wait: bool) -> int:
    """A descriptor of `path` holding its flock; retried when the file was replaced meanwhile."""
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(descriptor)
            os.close(descriptor)
            raise UserError(
                f"another mmkeras process ({holder}) is writing this folder; wait for it to finish "
                f"(the lock is {path.name}, released when that process ends)",
                path=folder,
            ) from None
        # The previous holder may have unlinked the file between our open and our flock:
        # then this lock is on a file nobody else will see, so start again.
        if _same_file(descriptor, path):
            return descriptor
        os.close(descriptor)


def _same_file(descriptor: int, path: Path) -> bool:
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(descriptor)
    return (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino)


def _read_holder(descriptor: int) -> str:
    text = os.pread(descriptor, 200, 0).decode("utf-8", "replace").strip()
    return text or "pid unknown"
