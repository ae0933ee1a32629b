"""LoRA vs full fine-tuning on samples/, from backbones pretrained on other data (issue #4's LoRA targets).

Prints one JSON object on stdout (progress on stderr). Measures, asserts nothing.

LoRA adapts pretrained weights, and keras-hub's named presets cannot download here, so the backbones come from
`tiny_pretrained_presets.py` (a BERT pretrained by masked-language modelling on a generated corpus, a VGG CNN
pretrained on shape and hue prediction of generated images; neither sees samples/). Each arm trains on
samples/train.csv (val: samples/val.csv) through `mmkeras.training.trainer.train` with the presets given as
backbone SPECs (local preset folders, the real loading code) and otherwise default settings, then
`mmkeras.evaluation.evaluate.evaluate` scores its run on samples/test.csv:

- `full`: full fine-tuning (`lora_rank` 0);
- `lora_rank_R`: `--lora-rank R` (keras-hub's LoRA on the BERT's query/value layers; the CNN has no attention
  layers, so it stays frozen), for every R in `--ranks`.

Per arm: test accuracy, trainable / total parameters and their fraction, the peak learning rates used (of the
pretrained weights, and of the new layers: the arm's defaults unless `--learning-rate` sets one rate for every
layer of every arm), train seconds (sum of the epochs). Then each LoRA
arm's accuracy gap to `full` and whether it meets the targets (< 10% of the parameters trained, accuracy
within 1 point of full fine-tuning). `--random-tiny` adds, as context, `full` and `lora_rank_4` on the
built-in random `tiny` backbones.

    python benchmarks/lora_finetuning.py [--presets DIR] [--seed 0] [--epochs 20] [--ranks 4 8]
                                         [--learning-rate LR] [--random-tiny]
"""

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import keras
import tensorflow as tf

from mmkeras.config import RunConfig
from mmkeras.evaluation.evaluate import evaluate
from mmkeras.training.optimizers import new_layers_learning_rate, resolve_learning_rate
from mmkeras.training.trainer import train

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is a folder of scripts
from benchmarks.tiny_pretrained_presets import TEXT_PRESET, VISION_PRESET, write_presets  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
TARGET_FRACTION, TARGET_GAP = 0.10, 0.01


def log(message: str):
    print(message, file=sys.stderr, flush=True)


def finetune(out: Path, text: str, vision: str, *, lora_rank: int, epochs: int, seed: int, learning_rate) -> dict:
    """Train one arm on samples/ and score it on samples/test.csv."""
    config = RunConfig(
        data=str(SAMPLES / "train.csv"),
        val=str(SAMPLES / "val.csv"),
        out=str(out),
        text_backbone=text,
        vision_backbone=vision,
        epochs=epochs,
        seed=seed,
        lora_rank=lora_rank,
        learning_rate=learning_rate,
        # A given learning rate is one rate for every layer of every arm.
        new_layers_lr_scale=1.0 if learning_rate else RunConfig.new_layers_lr_scale,
    )
    result = train(config)
    test = evaluate(result.run_dir, SAMPLES / "test.csv")
    metrics = result.metrics
    return {
        "test_accuracy": round(test["accuracy"], 4),
        "val_accuracy": round(metrics["val_accuracy"], 4),
        "trainable_params": metrics["trainable_params"],
        "total_params": metrics["total_params"],
        "trainable_fraction": round(metrics["trainable_params"] / metrics["total_params"], 4),
        "learning_rate": resolve_learning_rate(config),
        "new_layers_learning_rate": new_layers_learning_rate(config),
        "epochs_completed": metrics["epochs_completed"],
        "train_seconds": round(sum(metrics["epoch_seconds"]), 1),
    }


def compare(folder: Path, text: str, vision: str, ranks, *, epochs: int, seed: int, learning_rate) -> dict:
    """`full` and one `lora_rank_R` arm per rank, then each LoRA arm's gap to `full` and target checks."""
    arms = {}
    for rank in (0, *ranks):
        name = f"lora_rank_{rank}" if rank else "full"
        arms[name] = finetune(
            folder / name, text, vision, lora_rank=rank, epochs=epochs, seed=seed, learning_rate=learning_rate
        )
        log(f"{name}: {arms[name]}")
    for rank in ranks:
        lora = arms[f"lora_rank_{rank}"]
        gap = round(arms["full"]["test_accuracy"] - lora["test_accuracy"], 4)
        lora["accuracy_gap_full_minus_lora"] = gap
        lora["meets_targets"] = lora["trainable_fraction"] < TARGET_FRACTION and gap <= TARGET_GAP
    return arms


def pretrained_presets(folder: Path | None, seed: int) -> tuple[Path, Path, dict | None]:
    """The preset folders in `folder` (pretrained first when missing, or in a new temporary folder)."""
    folder = folder or Path(tempfile.mkdtemp(prefix="mmkeras-presets-"))
    text, vision = folder / TEXT_PRESET, folder / VISION_PRESET
    if text.is_dir() and vision.is_dir():
        log(f"using the presets in {folder}")
        return text, vision, None
    started = time.perf_counter()
    presets = write_presets(folder, seed=seed)
    figures = {**presets.figures, "seconds": round(time.perf_counter() - started, 1), "folder": str(folder)}
    log(f"pretrained presets written to {folder}: {figures}")
    return presets.text, presets.vision, figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", type=Path, help="preset folder: reused if it holds the presets, else written")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pretraining and of every fine-tuning run")
    parser.add_argument("--epochs", type=int, default=20, help="fine-tuning epochs of every arm (LoRA: 0.973 after 10)")
    parser.add_argument("--ranks", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--learning-rate", type=float, help="one peak learning rate for every layer of every "
                        "arm (default: each arm's mmkeras defaults)")  # fmt: skip
    parser.add_argument("--random-tiny", action="store_true", help="also full vs rank 4 on the random tiny backbones")
    args = parser.parse_args()
    logging.getLogger("mmkeras").addHandler(logging.StreamHandler(sys.stderr))
    logging.getLogger("mmkeras").setLevel(logging.INFO)
    text, vision, pretraining = pretrained_presets(args.presets, args.seed)
    settings = {"epochs": args.epochs, "seed": args.seed, "learning_rate": args.learning_rate}
    report = {
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
        "settings": {**settings, "ranks": args.ranks, "presets": [str(text), str(vision)]},
        "pretraining": pretraining,
    }
    with tempfile.TemporaryDirectory() as folder:
        report["pretrained"] = compare(Path(folder) / "pretrained", str(text), str(vision), args.ranks, **settings)
        if args.random_tiny:
            report["random_tiny"] = compare(Path(folder) / "random", "tiny", "tiny", [4], **settings)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
