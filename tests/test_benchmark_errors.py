"""A benchmark that runs `mmkeras` in a child process stops with that command's own error, not a bare traceback."""

import pytest

from benchmarks.mmkeras_command import mmkeras_json


def test_a_benchmarks_mmkeras_command_stops_with_its_own_error(tmp_path):
    missing = tmp_path / "missing.csv"
    with pytest.raises(SystemExit) as stopped:
        mmkeras_json("train", "--data", str(missing), "--out", str(tmp_path / "run"), "--json")
    message = str(stopped.value)
    assert message.startswith(f"mmkeras train --data {missing}") and "(exit 2)" in message
    assert f"error: {missing}" in message  # the CLI's own line, which CalledProcessError left out
