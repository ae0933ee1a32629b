"""Benchmark: image-text matching by fusion classifiers alone vs `align` then `train --task match --init-from`.

The check (issue #13): on a matching task that is not in the repository, a
fusion classifier trained from match/mismatch labels alone stays near chance,
and aligning the backbones contrastively first reaches at least 0.9 test
accuracy.

The script draws a fresh copy of the `samples/matching` task with another seed
(`samples/make_matching_samples.py --seed`) into a temporary folder, then runs
the real CLI as a user would, on the same rows:

1. `mmkeras train` (classify) with the concat and the cross-attention fusion,
2. `mmkeras train --task match` (the similarity head, backbones from scratch),
3. `mmkeras align` on the true pairs, then `mmkeras train --task match --init-from`,

and `mmkeras evaluate` on the test rows for each. It prints one JSON object on
stdout (test accuracy and wall time per model); progress goes to stderr. A
benchmark, not a test: nothing is asserted.

Usage:
    python benchmarks/alignment_matching.py                  # seed 1, 30 align epochs, 20 train epochs
    python benchmarks/alignment_matching.py --seed 2 --workdir DIR
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

# benchmarks/ and samples/ are folders of scripts, not installed packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.concat_baseline import log, run_cli  # noqa: E402
from samples.make_matching_samples import generate  # noqa: E402


def train_and_test(data: Path, work: Path, name: str, epochs: int, *flags: str) -> dict:
    """`mmkeras train` on the match rows with `flags`, then its test accuracy."""
    out = work / name
    metrics, seconds = run_cli(
        "train", "--data", str(data / "train.csv"), "--val", str(data / "val.csv"), "--out", str(out),
        "--epochs", str(epochs), "--json", *flags,
    )
    figures, _ = run_cli("evaluate", str(out), "--data", str(data / "test.csv"), "--json")
    return {"test_accuracy": figures["accuracy"], "val_accuracy": metrics["val_accuracy"], "train_seconds": seconds}


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1, help="dataset seed (the committed samples use another)")
    parser.add_argument("--align-epochs", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=20, help="epochs of every classifier")
    parser.add_argument("--workdir", type=Path, help="keep the dataset and runs here")
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mmkeras-matching-"))
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    rows = generate(data, seed=args.seed)
    log(f"dataset in {data}: {rows}")
    results = {
        "classify_concat": train_and_test(data, work, "concat", args.epochs, "--fusion", "concat"),
        "classify_cross_attention": train_and_test(data, work, "cross", args.epochs),
        "match_from_scratch": train_and_test(data, work, "match", args.epochs, "--task", "match"),
    }
    align_metrics, align_seconds = run_cli(
        "align", "--data", str(data / "pairs.csv"), "--val", str(data / "val_pairs.csv"),
        "--out", str(work / "align"), "--epochs", str(args.align_epochs), "--json",
    )
    aligned = train_and_test(
        data, work, "match_aligned", args.epochs, "--task", "match", "--init-from", str(work / "align")
    )
    results["align_then_match"] = {
        **aligned, "align_seconds": align_seconds, "align_val_recall": align_metrics["val_recall"]
    }
    print(json.dumps({"seed": args.seed, "rows": rows, "align_epochs": args.align_epochs, "epochs": args.epochs,
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
