"""Benchmark: does a `--task multilabel` run keep its figures through export (float, PTQ int8, QAT int8)?

Tags the generated matching samples `colour|shape` (samples/matching: the first 400 of the 500 true pairs to
train on, the 100 validation pairs to tune the thresholds on; two test sets: the other 100 true pairs, text and
image, and the 100 concept images without text), trains `mmkeras train --task multilabel`
(tiny backbones, 20 epochs), fine-tunes it with `mmkeras qat`, exports the float run as a float and a
post-training int8 bundle and the QAT run as an int8 bundle, then evaluates the runs with Keras and the
bundles with the TensorFlow-free runtime on both test sets, at the thresholds tuned on the validation rows.
Prints one JSON object: mAP, micro/macro-F1 and exact match per test set and target, and each bundle's size.
A benchmark,
not a test: nothing is asserted.

Usage:
    python benchmarks/multilabel_bundles.py [--workdir DIR] [--epochs N] [--qat-epochs N]
"""

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks.*` when run as a script

from benchmarks.mmkeras_command import mmkeras_json  # noqa: E402

MATCHING = Path(__file__).resolve().parents[1] / "samples" / "matching"
# split -> (samples/matching manifest, its rows taken)
SPLITS = {
    "train": ("pairs.csv", slice(0, 400)),
    "val": ("val_pairs.csv", slice(None)),
    "test_pairs": ("pairs.csv", slice(400, None)),
    "test_images_only": ("concepts.csv", slice(None)),
}
FIGURES = ("mAP", "micro_f1", "macro_f1", "exact_match", "n")


def tagged_manifest(source: Path, rows: slice, out: Path) -> Path:
    """`rows` of `source` with their `colour shape` labels written `colour|shape` and absolute image paths."""
    with source.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))[rows]
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "image", "label"])
        writer.writeheader()
        for row in rows:
            writer.writerow({"text": row["text"], "image": str(source.parent / row["image"]),
                             "label": row["label"].replace(" ", "|")})
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, help="keep the data, runs and bundles here (default: a temp folder)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--qat-epochs", type=int, default=2)
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="multilabel-bundles-"))
    work.mkdir(parents=True, exist_ok=True)
    data = {split: tagged_manifest(MATCHING / source, rows, work / f"{split}.csv")
            for split, (source, rows) in SPLITS.items()}
    print("training", file=sys.stderr)
    trained = mmkeras_json("train", "--data", data["train"], "--val", data["val"], "--out", work / "run",
                      "--task", "multilabel", "--epochs", args.epochs, "--json")
    print("QAT", file=sys.stderr)
    mmkeras_json("qat", work / "run", "--data", data["train"], "--val", data["val"], "--out", work / "qat",
            "--epochs", args.qat_epochs, "--json")
    bundles = {"float": (work / "run", "none"), "ptq_int8": (work / "run", "int8"), "qat_int8": (work / "qat", "int8")}
    sizes = {}
    for name, (run, quantize) in bundles.items():
        print(f"exporting {name}", file=sys.stderr)
        exported = mmkeras_json("export", run, "--out", work / f"bundle-{name}", "--quantize", quantize, "--json")
        sizes[name] = exported["size_bytes"]
    targets = {"run": work / "run", "qat_run": work / "qat", **{f"bundle_{name}": work / f"bundle-{name}"
                                                              for name in bundles}}
    results = {}
    for test in ("test_pairs", "test_images_only"):
        for name, target in targets.items():
            figures = mmkeras_json("evaluate", target, "--data", data[test], "--json")
            results.setdefault(test, {})[name] = {key: figures[key] for key in FIGURES}
    print(json.dumps({
        "epochs": args.epochs,
        "qat_epochs": args.qat_epochs,
        "val": {key: trained[f"val_{key}"] for key in ("mAP", "micro_f1", "macro_f1", "exact_match")},
        **results,
        "bundle_size_bytes": sizes,
    }, indent=2))


if __name__ == "__main__":
    main()
