"""Benchmark: does `--modality-balance` keep the easy modality from starving the hard one?

Generates, outside the repository, a 4-class dataset where the text is far
easier than the image: the text names the class's word in `TEXT_SIGNAL` of the
rows (else a random class's word) among filler words; the image always
determines the class, but only through the orientation of faint stripes
(horizontal, vertical, two diagonals) under strong pixel noise, which the tiny
CNN learns over several epochs. Trains each `--modality-balance` mode for every
seed (tiny backbones, cross-attention) and prints one JSON object:

- per run and as mean / sample std over seeds: `fused` test accuracy,
  `text_only` and `image_only` (the modality ablation: the fused head with the
  other modality removed),
- `image_probe` and `text_probe`: test accuracy of a linear probe (ridge
  least squares on one-hot labels) on the frozen backbone's mean-pooled tokens,
  fitted on the training rows. This is how the balancing papers judge an
  under-trained encoder: the ablation goes through the fused head, which can
  ignore a backbone's features (it never saw a missing text without
  `--modality-dropout`), so it can stay at chance however good the backbone is.
- `untrained`: the probes on the backbones as built, before any training
  (the floor a probe reaches on random features);
- `image_alone`: the reference runs (`none`, the same images, every text's
  class word drawn at random), i.e. what the model learns from the image when
  the text cannot help.

A benchmark, not a test: nothing is asserted. A run trains in about a minute
(8 epochs) on a busy 2-core machine; the table in docs/guide.md took 8 and 20 epochs,
with and without `--modality-dropout 0.3`.

Usage:
    python benchmarks/modality_balance.py [--workdir DIR] [--epochs N] [--seeds 0 1 2]
    python benchmarks/modality_balance.py -- --modality-dropout 0.3   # extra `mmkeras train` flags
"""

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks.*` when run as a script

from benchmarks.mmkeras_command import mmkeras_json  # noqa: E402

CLASSES = ("horizontal", "vertical", "diagonal", "antidiagonal")
WORDS = {"horizontal": "sunny", "vertical": "watery", "diagonal": "fruity", "antidiagonal": "stony"}
FILLER = ("the", "card", "looks", "rather", "quite", "a", "bit", "today", "very", "so")
TEXT_SIGNAL = 0.95
STRIPE_CONTRAST = 25.0
PIXEL_NOISE = 70.0
SPLITS = {"train": 800, "val": 200, "test": 400}
MODES = ("none", "aux", "adaptive")
IMAGE_SIZE = 32


def stripes(label: str, rng: np.random.Generator) -> np.ndarray:
    """A grey 32x32 RGB image: stripes (period 4, random phase) in the label's orientation, under noise."""
    rows, cols = np.mgrid[:IMAGE_SIZE, :IMAGE_SIZE]
    position = {"horizontal": rows, "vertical": cols, "diagonal": rows + cols, "antidiagonal": rows - cols}[label]
    wave = np.sin(2 * np.pi * (position + rng.integers(4)) / 4.0)
    grey = 128 + STRIPE_CONTRAST * wave + rng.normal(0, PIXEL_NOISE, (IMAGE_SIZE, IMAGE_SIZE))
    return np.clip(np.repeat(grey[..., None], 3, axis=-1), 0, 255).astype(np.uint8)


def write_split(folder: Path, name: str, rows: int, rng: np.random.Generator, text_signal: float) -> Path:
    (folder / name).mkdir(parents=True, exist_ok=True)
    manifest = folder / f"{name}.csv"
    with manifest.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["text", "image", "label"])
        for index in range(rows):
            label = CLASSES[index % len(CLASSES)]
            image = folder / name / f"{index}.png"
            Image.fromarray(stripes(label, rng)).save(image)
            said = label if rng.random() < text_signal else CLASSES[rng.integers(len(CLASSES))]
            words = list(rng.choice(FILLER, size=5)) + [WORDS[said]]
            rng.shuffle(words)
            writer.writerow([" ".join(words), str(image), label])
    return manifest


def write_dataset(folder: Path, text_signal: float) -> dict:
    """The train/val/test manifests (the same images for every `text_signal`: one seed)."""
    if not (folder / "test.csv").is_file():
        rng = np.random.default_rng(1234)
        for name, rows in SPLITS.items():
            write_split(folder, name, rows, rng, text_signal)
    return {name: folder / f"{name}.csv" for name in SPLITS}


def pooled_features(run, manifest: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(text features, image features, label ids): each backbone's mean-pooled tokens, frozen, for every row."""
    import keras

    from mmkeras.data.manifest import read_manifest

    manifest = read_manifest(manifest)
    inputs = run.preprocessor([row.text for row in manifest.rows], [str(row.image) for row in manifest.rows])
    text_tokens, padding_mask, image_tokens, _ = run.model.get_layer("fusion").input
    tokens = keras.Model(run.model.inputs, [text_tokens, image_tokens]).predict(inputs, verbose=0)
    text, image = (np.asarray(part, np.float64) for part in tokens)
    weights = np.asarray(inputs["padding_mask"], np.float64)[..., None]
    text_mean = (text * weights).sum(1) / np.maximum(weights.sum(1), 1.0)
    return text_mean, image.mean(1), manifest.encode_labels(run.labels)


def probe_accuracy(train_features, train_labels, test_features, test_labels, ridge: float = 1e-2) -> float:
    """Test accuracy of a ridge least-squares linear classifier on standardised features."""
    mean, std = train_features.mean(0), train_features.std(0) + 1e-6
    design = np.hstack([(train_features - mean) / std, np.ones((len(train_features), 1))])
    targets = np.eye(len(CLASSES))[train_labels]
    weights = np.linalg.solve(design.T @ design + ridge * len(design) * np.eye(design.shape[1]), design.T @ targets)
    test_design = np.hstack([(test_features - mean) / std, np.ones((len(test_features), 1))])
    return float(np.mean(np.argmax(test_design @ weights, axis=1) == test_labels))


def probes(run, data: dict) -> dict:
    """Test accuracy of the linear probes on `run`'s text and image backbones (`run`: `model`, `preprocessor`,
    `labels`)."""
    train_text, train_image, train_labels = pooled_features(run, data["train"])
    test_text, test_image, test_labels = pooled_features(run, data["test"])
    return {
        "text_probe": probe_accuracy(train_text, train_labels, test_text, test_labels),
        "image_probe": probe_accuracy(train_image, train_labels, test_image, test_labels),
    }


def measure(run_dir: Path, data: dict) -> dict:
    from mmkeras.quantization.run_loading import load_run

    figures = mmkeras_json("evaluate", str(run_dir), "--data", str(data["test"]), "--json")
    return {
        "fused": figures["accuracy"],
        "text_only": figures["modality_ablation"]["text_only"]["accuracy"],
        "image_only": figures["modality_ablation"]["image_only"]["accuracy"],
        **probes(load_run(run_dir), data),
    }


def untrained_probes(data: dict, seed: int) -> dict:
    """The probes on the backbones `train --seed SEED` starts from."""
    from types import SimpleNamespace

    from mmkeras.data.manifest import read_manifest
    from mmkeras.models.builder import build_model

    texts = [row.text for row in read_manifest(data["train"]).rows]
    model, preprocessor = build_model(num_classes=len(CLASSES), texts=texts, seed=seed)
    return probes(SimpleNamespace(model=model, preprocessor=preprocessor, labels=sorted(CLASSES)), data)


def summary(runs: list[dict]) -> dict:
    """Mean and sample standard deviation over seeds of every figure."""
    return {key: {"mean": round(float(np.mean([run[key] for run in runs])), 3),
                  "std": round(float(np.std([run[key] for run in runs], ddof=1)) if len(runs) > 1 else 0.0, 3)}
            for key in runs[0]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, help="keep the data and runs here (default: a temp folder)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--no-reference", action="store_true", help="skip the image-alone reference runs")
    parser.add_argument("train_flags", nargs="*", help="extra `mmkeras train` flags, after `--`")
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="modality-balance-"))
    datasets = {"multimodal": write_dataset(work / "data", TEXT_SIGNAL)}
    if not args.no_reference:
        datasets["image_alone"] = write_dataset(work / "data-image-alone", 0.0)
    trainings = [(mode, "multimodal") for mode in args.modes]
    trainings += [] if args.no_reference else [("none", "image_alone")]
    per_run = {}
    for mode, dataset in trainings:
        name = mode if dataset == "multimodal" else dataset
        data = datasets[dataset]
        for seed in args.seeds:
            run = work / "-".join(["run", name, f"seed{seed}", *args.train_flags]).replace("--", "")
            print(f"training {name} seed {seed}", file=sys.stderr)
            if not (run / "model.keras").is_file():
                mmkeras_json("train", "--data", str(data["train"]), "--val", str(data["val"]), "--out", str(run),
                        "--epochs", str(args.epochs), "--seed", str(seed), "--modality-balance", mode,
                        *args.train_flags, "--json")
            per_run.setdefault(name, []).append(measure(run, data))
            print(name, seed, per_run[name][-1], file=sys.stderr)
    if not args.no_reference:
        per_run["untrained"] = [untrained_probes(datasets["multimodal"], seed) for seed in args.seeds]
    print(json.dumps({"workdir": str(work), "epochs": args.epochs, "seeds": args.seeds, "train_flags": args.train_flags,
                      "text_signal": TEXT_SIGNAL, "summary": {name: summary(runs) for name, runs in per_run.items()},
                      "runs": per_run}))


if __name__ == "__main__":
    main()
