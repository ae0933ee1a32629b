"""Acceptance benchmark: `mmkeras` with default settings vs a hand-written Keras concat baseline.

The check: on a 10-class text + image dataset that is not in the repository,
`mmkeras train` with default settings and `--epochs 10` reaches accuracy
comparable to a hand-written Keras concat baseline on the same data, and the
float bundle's accuracy equals the Keras model's.

The script generates that dataset into a temporary folder (10 classes
`<shape>_<time of day>`: the image shows one of 5 shapes in a random colour,
the text says morning or evening without naming a shape), then

1. trains the hand-written baseline, which uses no mmkeras code: a small CNN
   on the image and a bag-of-words branch on a lowercase whitespace
   vocabulary, concatenated, under a Dense head;
2. runs the real CLI as a user would: `mmkeras train`, `mmkeras evaluate` on
   the run, `mmkeras export --quantize none`, `mmkeras evaluate` on the bundle.

It prints one JSON object on stdout (accuracies side by side, with timings);
progress goes to stderr. It is a benchmark, not a test: nothing is asserted.

Usage:
    python benchmarks/concat_baseline.py                    # the whole comparison
    python benchmarks/concat_baseline.py --seed 1           # the same with seed 1 for both trainings
    python benchmarks/concat_baseline.py --baseline-only    # dataset + hand-written baseline only
    python benchmarks/concat_baseline.py --workdir DIR      # keep the dataset, run and bundle in DIR
    python benchmarks/concat_baseline.py -- --vision-backbone tiny-mobilenet   # extra `mmkeras train` flags
"""

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

# benchmarks/ is a folder of scripts, not an installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.synthetic_data import (  # noqa: E402
    SHAPES,
    DatasetSpec,
    TextAttribute,
    best_single_modality_accuracy,
    generate,
    words_of,
)

TIME_OF_DAY_TEXTS = TextAttribute(
    synonyms={
        "morning": ("morning", "dawn", "sunrise", "daybreak", "breakfast time", "early hours"),
        "evening": ("evening", "dusk", "sunset", "nightfall", "dinner time", "late hours"),
    },
    templates=(
        "photo taken at {word}",
        "{word} shot near the {noun}",
        "we passed the {noun} around {word}",
        "snapped at {word}",
        "the {noun} at {word}",
        "{word} again, next to the {noun}",
        "{word}",
        "another one from {word}",
    ),
    nouns=("harbour", "garden", "station", "market", "bridge", "park", "library", "bakery"),
)

BENCHMARK_SPEC = DatasetSpec(
    image_attribute="shape",
    image_values=SHAPES,
    text=TIME_OF_DAY_TEXTS,
    split_sizes={"train": 3000, "val": 500, "test": 1000},
    formats={"png": 0.5, "jpg": 0.5},
    image_size=32,
    seed=1234,
)


def log(message: str):
    print(message, file=sys.stderr, flush=True)


def read_split(data_dir: Path, split: str) -> tuple[np.ndarray, list[str], list[str]]:
    """(images uint8 [N, H, W, 3], texts, labels) of one generated manifest."""
    with open(data_dir / f"{split}.csv", newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    images = np.stack([np.asarray(Image.open(data_dir / row["image"]).convert("RGB")) for row in rows])
    return images, [row["text"] for row in rows], [row["label"] for row in rows]


def bag_of_words(texts: list[str], vocabulary: dict[str, int]) -> np.ndarray:
    """Word frequencies [N, len(vocabulary)]; words outside the vocabulary are dropped."""
    counts = np.zeros((len(texts), len(vocabulary)), dtype=np.float32)
    for row, text in enumerate(texts):
        words = words_of(text)
        for word in words:
            if word in vocabulary:
                counts[row, vocabulary[word]] += 1.0 / len(words)
    return counts


def build_baseline(image_size: int, vocabulary_size: int, num_classes: int):
    """CNN image branch + bag-of-words text branch, concatenated, Dense head; logits out."""
    import keras

    image = keras.Input((image_size, image_size, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 255)(image)
    for filters in (32, 64, 64):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    image_features = keras.layers.Flatten()(x)

    words = keras.Input((vocabulary_size,), name="words")
    # A Dense layer on word frequencies is the mean of the words' embeddings.
    text_features = keras.layers.Dense(64, activation="relu")(words)

    fused = keras.layers.Concatenate()([image_features, text_features])
    fused = keras.layers.Dense(128, activation="relu")(fused)
    fused = keras.layers.Dropout(0.2)(fused)
    logits = keras.layers.Dense(num_classes)(fused)
    return keras.Model({"image": image, "words": words}, logits, name="concat_baseline")


def run_baseline(data_dir: Path, labels: list[str], *, epochs: int, seed: int) -> dict:
    """Train the hand-written baseline on train, report its val and test accuracy."""
    import keras

    keras.utils.set_random_seed(seed)
    splits = {split: read_split(data_dir, split) for split in ("train", "val", "test")}
    train_words = sorted({word for text in splits["train"][1] for word in words_of(text)})
    vocabulary = {word: index for index, word in enumerate(train_words)}
    label_ids = {label: index for index, label in enumerate(labels)}
    inputs, targets = {}, {}
    for split, (images, texts, split_labels) in splits.items():
        inputs[split] = {"image": images.astype(np.float32), "words": bag_of_words(texts, vocabulary)}
        targets[split] = np.array([label_ids[label] for label in split_labels])

    model = build_baseline(BENCHMARK_SPEC.image_size, len(vocabulary), len(labels))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    log_epoch = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: log(
            f"baseline epoch {epoch + 1}/{epochs}: loss {logs['loss']:.4f} val_accuracy {logs['val_accuracy']:.4f}"
        )
    )
    start = time.perf_counter()
    model.fit(
        inputs["train"],
        targets["train"],
        validation_data=(inputs["val"], targets["val"]),
        batch_size=32,
        epochs=epochs,
        callbacks=[log_epoch],
        verbose=0,
    )
    train_seconds = time.perf_counter() - start

    def accuracy(split):
        logits = model.predict(inputs[split], batch_size=256, verbose=0)
        return float(np.mean(np.argmax(logits, axis=1) == targets[split]))

    return {
        "val_accuracy": accuracy("val"),
        "test_accuracy": accuracy("test"),
        "params": model.count_params(),
        "vocabulary_size": len(vocabulary),
        "train_seconds": round(train_seconds, 2),
    }


def mmkeras_executable() -> str:
    """The `mmkeras` console script of this interpreter's environment, else the one on PATH."""
    beside_python = Path(sys.executable).with_name("mmkeras")
    found = str(beside_python) if beside_python.exists() else shutil.which("mmkeras")
    if found is None:
        raise SystemExit("the mmkeras command is not installed (pip install -e '.[train]')")
    return found


def run_cli(*args: str, json_output: bool = True) -> tuple[dict | None, float]:
    """Run `mmkeras ARGS`; return its parsed `--json` object (or None) and its wall time."""
    command = [mmkeras_executable(), *args]
    log("$ " + " ".join(command))
    start = time.perf_counter()
    # Without --json the command's stdout is progress: send it to stderr with the rest.
    completed = subprocess.run(command, stdout=subprocess.PIPE if json_output else sys.stderr, text=True)
    seconds = time.perf_counter() - start
    if completed.returncode != 0:
        raise SystemExit(f"`{' '.join(command)}` failed with exit code {completed.returncode}")
    return (json.loads(completed.stdout) if json_output else None), round(seconds, 2)


def run_mmkeras(data_dir: Path, work_dir: Path, *, epochs: int, train_flags: list[str]) -> dict:
    """Train, evaluate, export (float) and evaluate the bundle through the CLI."""
    run_dir, bundle_dir = work_dir / "run", work_dir / "bundle"
    for previous in (run_dir, bundle_dir):  # left by an earlier run in the same --workdir
        shutil.rmtree(previous, ignore_errors=True)
    train, train_seconds = run_cli(
        "train", "--data", str(data_dir / "train.csv"), "--val", str(data_dir / "val.csv"),
        "--out", str(run_dir), "--epochs", str(epochs), "--json", *train_flags,
    )  # fmt: skip
    keras_eval, keras_eval_seconds = run_cli("evaluate", str(run_dir), "--data", str(data_dir / "test.csv"), "--json")
    _, export_seconds = run_cli(
        "export", str(run_dir), "--out", str(bundle_dir), "--quantize", "none", json_output=False
    )
    bundle_eval, bundle_eval_seconds = run_cli(
        "evaluate", str(bundle_dir), "--data", str(data_dir / "test.csv"), "--json"
    )
    return {
        "val_accuracy": train["val_accuracy"],
        "test_accuracy": keras_eval["accuracy"],
        "test_macro_f1": keras_eval["macro_f1"],
        "modality_ablation": keras_eval["modality_ablation"],
        "bundle_test_accuracy": bundle_eval["accuracy"],
        "bundle_test_macro_f1": bundle_eval["macro_f1"],
        "bundle_confusion_matrix_equals_keras": bundle_eval["confusion_matrix"] == keras_eval["confusion_matrix"],
        "epochs_completed": train["epochs_completed"],
        "trainable_params": train["trainable_params"],
        "total_params": train["total_params"],
        "bundle_bytes": (bundle_dir / "model.tflite").stat().st_size,
        "train_seconds": train_seconds,
        "evaluate_seconds": keras_eval_seconds,
        "export_seconds": export_seconds,
        "bundle_evaluate_seconds": bundle_eval_seconds,
    }


def describe_dataset(rows: dict) -> dict:
    test_rows = rows["test"]
    return {
        "classes": len(BENCHMARK_SPEC.labels),
        "rows": {split: len(split_rows) for split, split_rows in rows.items()},
        "image_size": BENCHMARK_SPEC.image_size,
        "seed": BENCHMARK_SPEC.seed,
        # What a model could reach on test knowing only one modality.
        "text_only_ceiling": round(best_single_modality_accuracy(test_rows, "text_value"), 4),
        "image_only_ceiling": round(best_single_modality_accuracy(test_rows, "image_value"), 4),
    }


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-only", action="store_true", help="skip the mmkeras CLI part")
    parser.add_argument("--epochs", type=int, default=10, help="epochs for both models (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of both trainings (`mmkeras train --seed`)")
    parser.add_argument("--workdir", type=Path, help="keep the dataset, run and bundle here (default: a temp folder)")
    parser.add_argument("train_flags", nargs="*", help="extra `mmkeras train` flags, after `--` (default: none)")
    args = parser.parse_args(argv)

    work_dir = args.workdir or Path(tempfile.mkdtemp(prefix="mmkeras_concat_baseline_"))
    try:
        data_dir = work_dir / "data"
        start = time.perf_counter()
        rows = generate(BENCHMARK_SPEC, data_dir)
        log(f"dataset written to {data_dir} in {time.perf_counter() - start:.1f} s")
        result = {"dataset": describe_dataset(rows), "epochs": args.epochs, "seed": args.seed}
        result["mmkeras_train_flags"] = args.train_flags
        result["baseline"] = run_baseline(data_dir, BENCHMARK_SPEC.labels, epochs=args.epochs, seed=args.seed)
        if not args.baseline_only:
            # Extra flags come last, so an explicit `-- --seed N` still wins.
            train_flags = ["--seed", str(args.seed), *args.train_flags]
            mmkeras = run_mmkeras(data_dir, work_dir, epochs=args.epochs, train_flags=train_flags)
            result["mmkeras"] = mmkeras
            result["accuracy_gap_baseline_minus_mmkeras"] = round(
                result["baseline"]["test_accuracy"] - mmkeras["test_accuracy"], 4
            )
            result["bundle_accuracy_equals_keras"] = mmkeras["bundle_test_accuracy"] == mmkeras["test_accuracy"]
    finally:
        if args.workdir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
