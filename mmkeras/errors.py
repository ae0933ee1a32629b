"""The one exception type that means "the user gave us something wrong"."""

from pathlib import Path


class UserError(Exception):
    """A mistake in the user's input (a file, a row, a setting), not a bug.

    The CLI prints the message as one line on stderr and exits with code 2;
    anything else is an internal error (exit code 1).

    Args:
        reason: what is wrong, in words the user can act on.
        path: the file the mistake is in, if any.
        row: the line of that file (1-based, as an editor shows it), if any.
        setting: the setting the mistake is in (a `RunConfig` field such as
            `learning_rate`), if any; the message starts with its name, and
            `naming_setting` gives the same mistake under the name the user
            typed (the CLI's `--learning-rate`).

    Example:
    >>> str(UserError("unknown label 'cat'", path="val.csv", row=7))
    "val.csv: line 7: unknown label 'cat'"
    >>> error = UserError("must be positive, got -1", setting="learning_rate")
    >>> str(error), str(error.naming_setting("--learning-rate"))
    ('learning_rate must be positive, got -1', '--learning-rate must be positive, got -1')
    """

    def __init__(self, reason: str, path: str | Path | None = None, row: int | None = None, *,
                 setting: str | None = None):
        self.reason = reason
        self.path = None if path is None else str(path)
        self.row = row
        self.setting = setting
        where = [part for part in (self.path, None if row is None else f"line {row}") if part]
        said = reason if setting is None else f"{setting} {reason}"
        super().__init__(": ".join([*where, said]))

    def naming_setting(self, name: str) -> "UserError":
        """The same mistake, its setting called `name` (a flag where the user gave the setting as one)."""
        return UserError(self.reason, self.path, self.row, setting=name)
