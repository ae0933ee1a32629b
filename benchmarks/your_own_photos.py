"""Your own photos, end to end through the CLI: the README's recommended configuration against the defaults.

Prints one JSON object on stdout (progress on stderr). Measures, asserts nothing.

The photo set is made here (`--workdir/photos`, kept between runs): 4 classes of skimage's photos (chelsea,
coffee, rocket, astronaut), 15 per class, each a random crop (60-100% of the side), maybe flipped, brightness
0.7-1.3x, resized to 4000x3000 and saved as JPEG quality 92; captions name the class 80% of the time, else any
class. The CSV has its own column names (`notes,photo,caption,category`), split 36 / 12 / 12
(train / val / test), seeded. Each arm runs `mmkeras` in a child process, as a user would:

- `tiny`: the default backbones at `--image-size 96`;
- `frozen_cached`: `--text-backbone TEXT --vision-backbone VISION --freeze both --cache-features`;
- `lora`: LoRA rank 4 on the text folder, the vision folder frozen (no cache: LoRA trains the text tower);
- `qat`: `mmkeras qat` of the `lora` run (2 epochs), exported `--quantize int8`.

Every run: `--early-stopping-patience 3 --epochs 30`; every bundle: `predict --data test.csv` accuracy, size.

    python benchmarks/your_own_photos.py --text-backbone DIR --vision-backbone DIR [--workdir DIR]
"""

import argparse
import csv
import json
import random
import subprocess
import sys
import time
from pathlib import Path

CLASSES = ("cat", "coffee", "rocket", "astronaut")
CAPTIONS = {
    "cat": ["my cat on the sofa", "the tabby again", "sleepy kitty", "whiskers close up", "猫咪 🐱"],
    "coffee": ["morning coffee", "a cup on the table", "espresso break ☕", "latte at the cafe", "coffee time"],
    "rocket": ["launch day", "the rocket on the pad", "space trip 🚀", "liftoff soon", "tall rocket"],
    "astronaut": ["portrait of an astronaut", "the suit and flag", "NASA portrait", "astronaut smiling", "space hero"],
}
COLUMNS = ["--text-column", "caption", "--image-column", "photo", "--label-column", "category"]
ENTRY = "import sys; from mmkeras.cli.app import main; sys.exit(main())"


def make_photos(folder: Path, seed: int = 0) -> Path:
    """The photo set and its train/val/test CSVs in `folder` (made once)."""
    if (folder / "test.csv").is_file():
        return folder
    from PIL import Image, ImageEnhance
    from skimage import data

    sources = {"cat": data.chelsea(), "coffee": data.coffee(), "rocket": data.rocket(), "astronaut": data.astronaut()}
    rng = random.Random(seed)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for label in CLASSES:
        base = Image.fromarray(sources[label])
        for index in range(15):
            width, height = base.size
            share = rng.uniform(0.6, 1.0)
            crop_width, crop_height = int(width * share), int(height * share)
            left, top = rng.randint(0, width - crop_width), rng.randint(0, height - crop_height)
            image = base.crop((left, top, left + crop_width, top + crop_height))
            if rng.random() < 0.5:
                image = image.transpose(Image.FLIP_LEFT_RIGHT)
            image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 1.3)).resize((4000, 3000), Image.LANCZOS)
            name = f"img/IMG_{label}_{index:02d}.jpg"
            image.save(folder / name, quality=92)
            pool = CAPTIONS[label] if rng.random() < 0.8 else [text for texts in CAPTIONS.values() for text in texts]
            rows.append({"notes": f"shot {index}", "photo": name, "caption": rng.choice(pool), "category": label})
    rng.shuffle(rows)
    for name, part in (("train.csv", rows[:36]), ("val.csv", rows[36:48]), ("test.csv", rows[48:])):
        with (folder / name).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["notes", "photo", "caption", "category"])
            writer.writeheader()
            writer.writerows(part)
    return folder


def mmkeras(*args) -> tuple[dict, float]:
    """`mmkeras ARGS --json` in a child process: its JSON and wall seconds."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", ENTRY, *map(str, args), "--json"], capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise SystemExit(f"mmkeras {' '.join(map(str, args))} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout), round(time.perf_counter() - started, 1)


def bundle_figures(bundle: Path, photos: Path, out: Path) -> dict:
    """Test accuracy of `predict --data` with the bundle, and its size."""
    mmkeras("predict", bundle, "--data", photos / "test.csv", "--out", out, "--overwrite")
    with out.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    correct = sum(row["prediction"] == row["category"] for row in rows)
    size = sum(path.stat().st_size for path in bundle.iterdir() if path.is_file())
    return {"test_accuracy": round(correct / len(rows), 4), "rows": len(rows), "bundle_mb": round(size / 2**20, 2)}


def train_arm(name: str, photos: Path, work: Path, *flags) -> dict:
    metrics, seconds = mmkeras(
        "train", "--data", photos / "train.csv", "--val", photos / "val.csv", "--out", work / "runs" / name,
        "--epochs", 30, "--early-stopping-patience", 3, *COLUMNS, *flags,
    )
    keys = ("val_accuracy", "epochs_completed", "kept_epoch", "trainable_params", "total_params")
    return {**{key: metrics[key] for key in keys}, "train_seconds": seconds}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text-backbone", required=True, help="A pretrained text folder (all-MiniLM-L6-v2).")
    parser.add_argument("--vision-backbone", required=True, help="A pretrained vision folder (timm layout).")
    parser.add_argument("--workdir", type=Path, default=Path("your_own_photos"))
    args = parser.parse_args()
    work = args.workdir.resolve()
    photos = make_photos(work / "photos")
    pretrained = ["--text-backbone", args.text_backbone, "--vision-backbone", args.vision_backbone,
                  "--sequence-length", 16]
    arms = {
        "tiny": train_arm("tiny", photos, work, "--image-size", 96),
        "frozen_cached": train_arm("frozen_cached", photos, work, *pretrained, "--freeze", "both",
                                   "--cache-features"),
        "lora": train_arm("lora", photos, work, *pretrained, "--freeze", "vision", "--lora-rank", 4),
    }
    qat, qat_seconds = mmkeras("qat", work / "runs" / "lora", "--data", photos / "train.csv", "--val",
                               photos / "val.csv", "--out", work / "runs" / "qat", "--epochs", 2)
    arms["qat"] = {"val_accuracy": qat["val_accuracy"], "initial_loss": qat["initial_loss"],
                   "final_loss": qat["final_loss"], "train_seconds": qat_seconds}
    for name, run, quantize in (("tiny", "tiny", "none"), ("frozen_cached", "frozen_cached", "none"),
                                ("lora", "lora", "none"), ("qat", "qat", "int8")):
        bundle = work / "bundles" / f"{name}-{quantize}"
        mmkeras("export", work / "runs" / run, "--out", bundle, "--quantize", quantize)
        arms[name]["bundle"] = {"quantize": quantize, **bundle_figures(bundle, photos, work / f"{name}.csv")}
    print(json.dumps({"photos": 60, "split": [36, 12, 12], "arms": arms}, indent=2))


if __name__ == "__main__":
    main()
