"""`mmkeras_json`: the `--json` object of one `mmkeras` command run in a child process.

A failure stops the benchmark with the command's own error: a bare
`CalledProcessError` hid it (e.g. `ModuleNotFoundError: mmkeras.cli` when run
from the repository root with a wheel installed, where the folder's
`mmkeras/` shadows the installed package).

Example:
>>> figures = mmkeras_json("evaluate", "runs/demo", "--data", "samples/test.csv", "--json")  # doctest: +SKIP
"""

import json
import subprocess
import sys

# The `mmkeras` entry point through this interpreter: the venv the benchmark runs in, wherever its scripts are.
CLI = "import sys; from mmkeras.cli.app import main; sys.exit(main())"


def mmkeras_json(*args) -> dict:
    """`mmkeras ARGS` (each turned into a string) to the end: its `--json` object (pass `--json` among ARGS)."""
    args = [str(arg) for arg in args]
    completed = subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise SystemExit(f"mmkeras {' '.join(args)} failed (exit {completed.returncode}):\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout)
