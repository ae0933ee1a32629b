"""Keeping TensorFlow's, absl's and LiteRT's log lines off the user's terminal (unless `--verbose`).

TensorFlow 2.21 writes absl lines ("All log messages before
absl::InitializeLog() is called...", oneDNN and CUDA notices) from C++ at
import, whatever `TF_CPP_MIN_LOG_LEVEL` says, and the LiteRT interpreter
prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." from C++
each time it is created. Neither goes through Python, so the only way to
hide them is to point file descriptor 2 at /dev/null while that code runs:
`native_stderr_silenced` does that around TensorFlow's import and the
interpreter's creation for Python callers (an error raised there still reaches
the user as a Python exception). Some lines come later and lazily (the CUDA
platform's "failed call to cuInit" at the first device query, from a thread
whose timing varies), so the CLI runs each whole command inside
`native_stderr_kept_off`: fd 2 points at /dev/null for the command, and
Python's own stderr writes go to a copy of the real fd 2. `MMKERAS_VERBOSE=1`
(the CLI's `--verbose`) turns all of this off.

Example:
>>> quiet_frameworks()
>>> with native_stderr_silenced():
...     import tensorflow  # doctest: +SKIP
"""

import contextlib
import logging
import os
import sys
import warnings

VERBOSE_ENV = "MMKERAS_VERBOSE"
# Python loggers of the frameworks: errors only unless verbose.
FRAMEWORK_LOGGERS = ("tensorflow", "absl", "keras", "keras_hub", "h5py", "PIL")


def is_verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def quiet_frameworks():
    """Set the frameworks' log levels low before TensorFlow is imported (no-op when verbose)."""
    if is_verbose():
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in FRAMEWORK_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # Pillow logs and warns of damaged image data it reads past (corrupt EXIF, odd TIFF tags).
    for module in ("keras", "keras_hub", "tensorflow", "absl", "PIL"):
        warnings.filterwarnings("ignore", module=rf"{module}(\.|$)")


@contextlib.contextmanager
def native_stderr_silenced():
    """File descriptor 2 points at /dev/null inside the block (C++ log lines vanish); no-op when verbose."""
    if is_verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def native_stderr_kept_off():
    """For a whole command: C++ writes to fd 2 vanish, Python's `sys.stderr` still reaches the terminal.

    `sys.stderr` is rebound to a copy of fd 2 only when it writes to fd 2 itself; a swapped stream (pytest's
    capsys, a notebook) is left alone. No-op when verbose.
    """
    python_stderr = sys.stderr
    if is_verbose() or not _writes_to_fd(python_stderr, 2):
        with native_stderr_silenced():
            yield
        return
    python_stderr.flush()
    terminal = os.dup(2)  # taken before fd 2 is pointed at /dev/null
    with native_stderr_silenced():
        # Line-buffered like the stream it stands in for, so log lines appear as they are written.
        sys.stderr = open(terminal, "w", buffering=1, encoding=python_stderr.encoding, errors="backslashreplace")
        try:
            yield
        finally:
            sys.stderr.close()  # flushes, and closes the copy of fd 2
            sys.stderr = python_stderr


def _writes_to_fd(stream, fd: int) -> bool:
    try:
        return stream.fileno() == fd
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError and a ValueError
        return False


def import_tensorflow_quietly():
    """Import TensorFlow (and Keras) with its import-time log lines hidden."""
    quiet_frameworks()
    with native_stderr_silenced():
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
