"""Running `mmkeras` in tests: subsets of the committed `samples/` manifests and the CLI in or out of process."""

import csv
import logging
from pathlib import Path

from mmkeras.cli.app import main

SAMPLES = Path(__file__).resolve().parents[2] / "samples"

# The device-side commands in a fresh interpreter where importing TensorFlow, Keras or keras-hub fails.
WITHOUT_TENSORFLOW = """
import sys

class BlockTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "keras_hub"):
            raise ImportError(f"blocked import of {name}")

sys.meta_path.insert(0, BlockTensorFlow())
from mmkeras.cli.app import main

sys.exit(main(sys.argv[1:]))
"""


def write_subset(source: Path, out: Path, rows: int) -> Path:
    """The first `rows` rows of a samples manifest, with absolute image paths."""
    with source.open(newline="", encoding="utf-8") as handle:
        records = list(csv.DictReader(handle))[:rows]
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "image", "label"])
        writer.writeheader()
        for record in records:
            image = str(source.parent / record["image"]) if record["image"] else ""
            writer.writerow({**record, "image": image})
    return out


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """`mmkeras ARGV` in this process: its exit code, stdout and stderr (read through pytest's `capsys`)."""
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


class LogLines(logging.Handler):
    """The messages of the loggers it is added to (`mmkeras`: what a CLI run logged), in order, in `lines`."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())
