"""Benchmark: does `--modality-balance` keep the easy modality from starving the hard one?

Generates, outside the repository, a 4-class dataset where the image is far
easier than the text: the image is a flat patch of the class's colour (with
noise); the text names the class's word only in `TEXT_SIGNAL` of the rows
(else a random class's word) among filler words, so text alone can reach
about 0.81. Trains `mmkeras train` (tiny backbones, cross-attention,
10 epochs) with `--modality-balance none`, `aux` and `adaptive`, evaluates
each on the test rows and prints one JSON object: fused, text-only and
image-only accuracy per mode. A benchmark, not a test: nothing is asserted.

Usage:
    python benchmarks/modality_balance.py [--workdir DIR] [--epochs N] [--seed N]
    python benchmarks/modality_balance.py -- --modality-dropout 0.3   # extra `mmkeras train` flags

The text-only and image-only figures go through the fused head with the other
modality removed: without `--modality-dropout` that head never saw a missing
modality in training, whatever the backbones learned.
"""

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"amber": (230, 160, 20), "teal": (20, 150, 150), "plum": (130, 40, 120), "slate": (90, 100, 120)}
WORDS = {"amber": "sunny", "teal": "watery", "plum": "fruity", "slate": "stony"}
FILLER = ("the", "card", "looks", "rather", "quite", "a", "bit", "today", "very", "so")
TEXT_SIGNAL = 0.75
SPLITS = {"train": 600, "val": 150, "test": 300}
MODES = ("none", "aux", "adaptive")


def write_split(folder: Path, name: str, rows: int, rng: np.random.Generator) -> Path:
    labels = list(COLOURS)
    (folder / name).mkdir(parents=True, exist_ok=True)
    manifest = folder / f"{name}.csv"
    with manifest.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["text", "image", "label"])
        for index in range(rows):
            label = labels[index % len(labels)]
            pixels = np.clip(np.array(COLOURS[label]) + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
            image = folder / name / f"{index}.png"
            Image.fromarray(pixels).save(image)
            said = label if rng.random() < TEXT_SIGNAL else labels[rng.integers(len(labels))]
            words = list(rng.choice(FILLER, size=5)) + [WORDS[said]]
            rng.shuffle(words)
            writer.writerow([" ".join(words), str(image), label])
    return manifest


def mmkeras(*args: str) -> dict:
    command = [sys.executable, "-c", "import sys; from mmkeras.cli.app import main; sys.exit(main())", *args]
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(completed.stdout)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, help="keep the data and runs here (default: a temp folder)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("train_flags", nargs="*", help="extra `mmkeras train` flags, after `--`")
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="modality-balance-"))
    rng = np.random.default_rng(1234)
    data = {name: work / "data" / f"{name}.csv" for name in SPLITS}
    if not all(path.is_file() for path in data.values()):
        data = {name: write_split(work / "data", name, rows, rng) for name, rows in SPLITS.items()}
    results = {}
    for mode in MODES:
        run = work / ("run-" + "-".join([mode, *args.train_flags]).replace("--", ""))
        print(f"training --modality-balance {mode}", file=sys.stderr)
        trained = mmkeras("train", "--data", str(data["train"]), "--val", str(data["val"]), "--out", str(run),
                          "--epochs", str(args.epochs), "--seed", str(args.seed), "--modality-balance", mode,
                          *args.train_flags, "--json")
        figures = mmkeras("evaluate", str(run), "--data", str(data["test"]), "--json")
        results[mode] = {
            "fused": figures["accuracy"],
            "text_only": figures["modality_ablation"]["text_only"]["accuracy"],
            "image_only": figures["modality_ablation"]["image_only"]["accuracy"],
            "ece": figures["calibration"]["ece"],
            "median_epoch_seconds": float(np.median(trained["epoch_seconds"][1:])),
        }
    print(json.dumps({"workdir": str(work), "epochs": args.epochs, "seed": args.seed,
                      "train_flags": args.train_flags, "results": results}))


if __name__ == "__main__":
    main()
