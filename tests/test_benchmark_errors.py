"""A benchmark that runs `mmkeras` in a child process stops with that command's own error, not a bare traceback."""

import pytest

from benchmarks import modality_balance


def test_modality_balance_stops_with_the_failed_commands_error(tmp_path):
    missing = tmp_path / "missing.csv"
    with pytest.raises(SystemExit) as stopped:
        modality_balance.mmkeras("train", "--data", str(missing), "--out", str(tmp_path / "run"), "--json")
    message = str(stopped.value)
    assert message.startswith(f"mmkeras train --data {missing}") and "(exit 2)" in message
    assert f"error: {missing}" in message  # the CLI's own line, which CalledProcessError left out
