"""How fast a user error comes back, against the cost of importing TensorFlow, measured side by side.

Runs, interleaved and `--runs` times each in fresh processes:
- `mmkeras train --data MISSING.csv --out RUN` (a user error: exit 2, one line on stderr),
- `mmkeras --version`,
- `python -c "import tensorflow"` (what every command that trains or converts pays),
and prints the medians and the ratio of the user error to the TensorFlow import as JSON.

    python benchmarks/cli_startup.py --runs 7
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MAIN = "import sys; from mmkeras.cli.app import main; sys.exit(main(sys.argv[1:]))"


def timed_run(argv: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True)
    return time.perf_counter() - started, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="mmkeras-startup-"))
    commands = {
        "train_user_error": [sys.executable, "-c", MAIN, "train", "--data", str(folder / "missing.csv"),
                             "--out", str(folder / "run")],
        "version": [sys.executable, "-c", MAIN, "--version"],
        "import_tensorflow": [sys.executable, "-c", "import tensorflow"],
    }
    seconds = {name: [] for name in commands}
    last = {}
    for _ in range(args.runs):
        for name, argv in commands.items():  # interleaved: a noisy moment hits every command alike
            elapsed, last[name] = timed_run(argv)
            seconds[name].append(elapsed)
    error = last["train_user_error"]
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    print(
        json.dumps(
            {
                "runs": args.runs,
                "median_seconds": {name: round(value, 3) for name, value in medians.items()},
                "user_error_vs_tensorflow_import": round(medians["train_user_error"] / medians["import_tensorflow"], 3),
                "user_error_exit_code": error.returncode,
                "user_error_stderr_lines": len(error.stderr.splitlines()),
                "user_error_stderr": error.stderr.strip(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
