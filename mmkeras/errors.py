"""The one exception type that means "the user gave us something wrong"."""

from pathlib import Path


class UserError(Exception):
    """A mistake in the user's input (a file, a row, a flag), not a bug.

    The CLI prints the message as one line on stderr and exits with code 2;
    anything else is an internal error (exit code 1).

    Args:
        reason: what is wrong, in words the user can act on.
        path: the file the mistake is in, if any.
        row: the line of that file (1-based, as an editor shows it), if any.

    Example:
    >>> str(UserError("unknown label 'cat'", path="val.csv", row=7))
    "val.csv: line 7: unknown label 'cat'"
    """

    def __init__(self, reason: str, path: str | Path | None = None, row: int | None = None):
        self.reason = reason
        self.path = None if path is None else str(path)
        self.row = row
        where = [part for part in (self.path, None if row is None else f"line {row}") if part]
        super().__init__(": ".join([*where, reason]))
