"""Regenerate the built-in `samples/` dataset; the same files every time.

Six classes `<colour>_<mood>`: the image shows a red, green or blue shape
(the shape itself is a random distractor), the text describes a calm or an
excited mood without naming a colour. Text alone can reach about 1/3 accuracy,
the image alone about 1/2; only both together name the class.

Usage:
    python samples/make_samples.py             # rewrites samples/{train,val,test}.csv and samples/images/
    python samples/make_samples.py --out DIR   # writes the same dataset into DIR
"""

import argparse
import sys
from pathlib import Path

SAMPLES_DIR = Path(__file__).resolve().parent
# benchmarks/ is a folder of scripts next to samples/, not an installed package.
sys.path.insert(0, str(SAMPLES_DIR.parent))

from benchmarks.synthetic_data import DatasetSpec, TextAttribute, generate  # noqa: E402

MOOD_TEXTS = TextAttribute(
    synonyms={
        "calm": ("calm", "quiet", "peaceful", "relaxed", "serene", "gentle", "tranquil", "mellow"),
        "excited": ("excited", "energetic", "lively", "thrilled", "wild", "restless", "buzzing", "hyper"),
    },
    templates=(
        "a {word} {noun}",
        "this {noun} looks {word}",
        "feeling {word} today",
        "the mood here is {word}",
        "my {noun} seems {word} to me",
        "so {word}!",
        "{word} vibes only",
        "someone called this {noun} {word}",
        "honestly a {word} kind of {noun}",
        "{word}",
    ),
    nouns=("sticker", "badge", "picture", "drawing", "icon", "card", "tile", "poster", "note", "token"),
    unicode_templates=(
        "très {word} ☕",
        "{word} ✨ {noun}",
        "„{word}“ — naïve {noun}",
        "{noun} № 7: {word} 🙂",
    ),
)

SAMPLES_SPEC = DatasetSpec(
    image_attribute="colour",
    image_values=("red", "green", "blue"),
    text=MOOD_TEXTS,
    split_sizes={"train": 600, "val": 150, "test": 150},
    missing_text_rows=6,
    missing_image_rows=6,
    unicode_rows={"train": 4, "val": 1, "test": 2},
    formats={"png": 0.36, "jpg": 0.52, "gif": 0.04, "webp": 0.04, "bmp": 0.04},
    image_size=32,
    seed=20240601,
)


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=SAMPLES_DIR, help="folder to write (default: samples/)")
    args = parser.parse_args(argv)
    rows = generate(SAMPLES_SPEC, args.out)
    for split, split_rows in rows.items():
        print(f"{args.out / split}.csv: {len(split_rows)} rows", file=sys.stderr)


if __name__ == "__main__":
    main()
