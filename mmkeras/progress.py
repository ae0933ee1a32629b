"""Progress of long steps on stderr: a bar with ETA on a terminal, plain lines elsewhere.

Everything mmkeras says while it works goes through the `mmkeras` logger
(stderr; stdout is kept for results and `--json`). `step_progress` adds a
bar for a step with a known number of items (batches, rows, images): a rich
progress bar when stderr is a terminal, else a plain line at most every
`PLAIN_INTERVAL_SECONDS`, so a log file is never silent for long and never
flooded. Nothing is shown when the `mmkeras` logger is quieter than INFO
(`--json` keeps progress, the non-chief workers of a multi-worker run do not).

Example:
>>> with step_progress("checking images", total=3) as progress:
...     for done in range(1, 4):
...         progress.update(done)
"""

import contextlib
import logging
import sys
import time

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

logger = logging.getLogger("mmkeras")

PLAIN_INTERVAL_SECONDS = 5.0
# The name of the handler `install_log_handler` adds, by which a second call finds and replaces it.
LOG_HANDLER_NAME = "mmkeras"
_console = None


def stderr_console() -> Console:
    """The one rich console on stderr that log lines and bars share (so bars never garble log lines)."""
    global _console
    if _console is None:
        _console = Console(stderr=True)
    return _console


class CurrentStderrHandler(logging.StreamHandler):
    """Plain messages to whatever `sys.stderr` is when a record is written (tests and notebooks swap it)."""

    def __init__(self):
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler assigns it; the current sys.stderr is always used
        pass


def install_log_handler(level: int = logging.INFO):
    """Show the `mmkeras` logger's messages on stderr, above any live bar; calling it again replaces the handler.

    Args:
        level: the lowest level shown.
    """
    for handler in [handler for handler in logger.handlers if handler.get_name() == LOG_HANDLER_NAME]:
        logger.removeHandler(handler)
    if stderr_console().is_terminal:
        handler = RichHandler(console=stderr_console(), show_time=False, show_level=False, show_path=False)
    else:
        handler = CurrentStderrHandler()
    handler.set_name(LOG_HANDLER_NAME)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # TensorFlow configures the root logger: no second copy of each line


class _PlainProgress:
    """Progress as log lines, at most one every `PLAIN_INTERVAL_SECONDS` (and the last one)."""

    def __init__(self, description: str, total: int):
        self.description, self.total = description, total
        self.started = self.last_shown = time.monotonic()

    def update(self, completed: int):
        now = time.monotonic()
        if now - self.last_shown < PLAIN_INTERVAL_SECONDS and completed < self.total:
            return
        self.last_shown = now
        elapsed = now - self.started
        remaining = elapsed / completed * (self.total - completed) if completed else float("nan")
        eta = f", about {remaining:.0f}s left" if completed < self.total and completed else ""
        logger.info("%s: %d/%d (%.0fs%s)", self.description, completed, self.total, elapsed, eta)


class _BarProgress:
    def __init__(self, bar: Progress, task):
        self.bar, self.task = bar, task

    def update(self, completed: int):
        self.bar.update(self.task, completed=completed)


class _NoProgress:
    def update(self, completed: int):
        pass


@contextlib.contextmanager
def step_progress(description: str, total: int, *, completed: int = 0):
    """A progress display for a step of `total` items; yields an object with `update(completed)`.

    Args:
        description: what the step does ("epoch 2/10", "evaluating").
        total: the number of items.
        completed: items already done (a resumed epoch).
    """
    if not logger.isEnabledFor(logging.INFO) or total <= 0:
        yield _NoProgress()
        return
    if not stderr_console().is_terminal:
        yield _PlainProgress(description, total)
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=stderr_console(), transient=True) as bar:
        yield _BarProgress(bar, bar.add_task(description, total=total, completed=completed))
