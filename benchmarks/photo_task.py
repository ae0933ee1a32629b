"""A 10-class text+image task of real photos, for measuring quantization on pretrained backbones.

Each class is one of scikit-image's photos (no download); a row is a random
crop of it (1-12% of the area), maybe flipped, colour-shifted, blurred and noised,
saved as a 320x240 JPEG, with a short caption that names the class in only
30% of the rows (the image carries the task). Writes `train.csv`, `val.csv`,
`test.csv` and `images/` into `--out`; the rows are fixed by `--seed`.

    python benchmarks/photo_task.py --out /tmp/photo-task --train 600 --val 100 --test 200
"""

import argparse
import csv
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image, ImageEnhance, ImageFilter

# Class name -> scikit-image loader: photos that ship with the package (no download).
PHOTOS = {
    "astronaut": skimage.data.astronaut,
    "camera": skimage.data.camera,
    "cat": skimage.data.chelsea,
    "coffee": skimage.data.coffee,
    "rocket": skimage.data.rocket,
    "coins": skimage.data.coins,
    "motorcycle": lambda: skimage.data.stereo_motorcycle()[0],
    "brick": skimage.data.brick,
    "grass": skimage.data.grass,
    "gravel": skimage.data.gravel,
}
GENERIC_CAPTIONS = ("a photo", "taken today", "a picture from the archive", "close up", "seen from here", "an image")
NAMED_CAPTION_SHARE = 0.3
ROW_SIZE = (320, 240)


def photo_row(photo: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A random crop of `photo`, flipped, colour-shifted, blurred and noised at random."""
    width, height = photo.size
    area = rng.uniform(0.01, 0.12) * width * height
    aspect = rng.uniform(3 / 4, 4 / 3)
    crop_w = int(min(width, np.sqrt(area * aspect)))
    crop_h = int(min(height, np.sqrt(area / aspect)))
    left, top = rng.integers(0, width - crop_w + 1), rng.integers(0, height - crop_h + 1)
    image = photo.crop((left, top, left + crop_w, top + crop_h)).resize(ROW_SIZE, Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.3, 1.7))
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.6, 1.4))
    shift = rng.integers(-40, 41, size=3)
    image = Image.fromarray(np.clip(np.asarray(image, np.int16) + shift, 0, 255).astype(np.uint8))
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 4)))
    noise = rng.normal(0, rng.uniform(0, 30), size=(ROW_SIZE[1], ROW_SIZE[0], 3))
    return Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8))


def caption(label: str, rng: np.random.Generator) -> str:
    generic = GENERIC_CAPTIONS[rng.integers(len(GENERIC_CAPTIONS))]
    return f"{generic} of a {label}" if rng.random() < NAMED_CAPTION_SHARE else generic


def write_split(out: Path, split: str, rows: int, photos: dict, rng: np.random.Generator):
    (out / "images" / split).mkdir(parents=True, exist_ok=True)
    with open(out / f"{split}.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "image", "label"])
        for index in range(rows):
            label = list(photos)[index % len(photos)]
            path = f"images/{split}/{index:05d}.jpg"
            photo_row(photos[label], rng).save(out / path, quality=92)
            writer.writerow([caption(label, rng), path, label])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--train", type=int, default=600)
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    photos = {name: Image.fromarray(load()).convert("RGB") for name, load in PHOTOS.items()}
    rng = np.random.default_rng(args.seed)
    for split in ("train", "val", "test"):
        write_split(args.out, split, getattr(args, split), photos, rng)


if __name__ == "__main__":
    main()
