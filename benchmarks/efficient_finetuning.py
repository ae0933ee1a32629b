"""Cached-frozen vs full fine-tuning, and what modality dropout buys, side by side in one process.

Trains the same configuration several ways through the public API (`train`,
`evaluate`) and prints one JSON object on stdout (progress on stderr):

- `full`: every weight trains (the default);
- `frozen`: `--freeze both`, backbones still run every step;
- `cached`: `--freeze both --cache-features`, backbones run once;
- `modality_dropout`: `full` plus `--modality-dropout RATE`.

For each: the median epoch time after the first epoch (the first pays for
compilation and, for `cached`, the feature extraction), the first epoch's
time, trainable parameters, test accuracy and the modality ablation
(accuracy with only the text / only the image). Ratios are taken within the
run, so a noisy machine slows every variant alike.

    python benchmarks/efficient_finetuning.py                       # samples/, 10 epochs
    python benchmarks/efficient_finetuning.py --epochs 5 --data D --val V --test T
"""

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
from pathlib import Path

from mmkeras.config import RunConfig
from mmkeras.evaluation.evaluate import evaluate
from mmkeras.training.trainer import train

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def variants(modality_dropout: float) -> dict[str, dict]:
    return {
        "full": {},
        "frozen": {"freeze": "both"},
        "cached": {"freeze": "both", "cache_features": True},
        "modality_dropout": {"modality_dropout": modality_dropout},
    }


def measure(config: RunConfig, test: Path) -> dict:
    result = train(config)
    seconds = result.metrics["epoch_seconds"]
    figures = evaluate(config.out, test)
    return {
        "first_epoch_seconds": seconds[0],
        "median_epoch_seconds": statistics.median(seconds[1:] or seconds),
        "trainable_params": result.metrics["trainable_params"],
        "total_params": result.metrics["total_params"],
        "val_accuracy": result.metrics["val_accuracy"],
        "test_accuracy": figures["accuracy"],
        "text_only_accuracy": figures["modality_ablation"]["text_only"]["accuracy"],
        "image_only_accuracy": figures["modality_ablation"]["image_only"]["accuracy"],
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SAMPLES / "train.csv")
    parser.add_argument("--val", type=Path, default=SAMPLES / "val.csv")
    parser.add_argument("--test", type=Path, default=SAMPLES / "test.csv")
    parser.add_argument("--config", type=Path, default=SAMPLES / "run.yaml", help="base run config (YAML)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--modality-dropout", type=float, default=0.3)
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    # Every epoch runs: early stopping would make the variants' epoch counts differ.
    base = RunConfig.from_yaml(args.config).replace(
        data=str(args.data), val=str(args.val), epochs=args.epochs, early_stopping_patience=0
    )
    result = {"data": str(args.data), "test": str(args.test), "epochs": args.epochs}
    with tempfile.TemporaryDirectory() as workdir:
        os.environ["MMKERAS_CACHE_DIR"] = str(Path(workdir) / "feature_cache")  # a cold cache
        for name, overrides in variants(args.modality_dropout).items():
            logging.info("variant %s", name)
            result[name] = measure(base.replace(out=str(Path(workdir) / name), **overrides), args.test)
    result["cached_speedup_vs_full"] = round(
        result["full"]["median_epoch_seconds"] / result["cached"]["median_epoch_seconds"], 2
    )
    result["frozen_speedup_vs_full"] = round(
        result["full"]["median_epoch_seconds"] / result["frozen"]["median_epoch_seconds"], 2
    )
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
