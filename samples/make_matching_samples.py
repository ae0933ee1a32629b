"""Regenerate `samples/matching/`: an image-text matching and retrieval dataset; the same files every time.

Each image shows one shape in one colour (5 x 5 = 25 concepts, e.g. "red
ring"); each text is a claim about a shape and a colour, in one of several
phrasings. The match label says whether the claim is true of the image.
Neither modality alone says anything about the label (every concept is as
often matched as mismatched), and a mismatch differs from the image in the
colour, the shape or both: only comparing the two answers it.

Files (image paths relative to the manifest):

- `pairs.csv`, `val_pairs.csv`: true pairs for `mmkeras align`; the label is the
  concept, so two rows of one concept are not negatives of each other.
- `train.csv`, `val.csv`, `test.csv`: claims labelled `match` or `mismatch`
  for `mmkeras train --task match`.
- `concepts.csv`: test images labelled by their concept, for
  `mmkeras evaluate ALIGN_RUN --zero-shot`.

Usage:
    python samples/make_matching_samples.py                  # rewrites samples/matching/
    python samples/make_matching_samples.py --out DIR --seed 7   # another draw of the same task elsewhere
"""

import argparse
import csv
import shutil
import sys
from pathlib import Path

import numpy as np

SAMPLES_DIR = Path(__file__).resolve().parent
# benchmarks/ is a folder of scripts next to samples/, not an installed package.
sys.path.insert(0, str(SAMPLES_DIR.parent))

from benchmarks.synthetic_data import COLOURS, SHAPES, draw_image, save_image  # noqa: E402

DEFAULT_SEED = 20261201
IMAGE_SIZE = 32
NOISE_STD = 6.0
CLAIM_TEMPLATES = (
    "a {colour} {shape}",
    "this is a {colour} {shape}",
    "a {shape} in {colour}",
    "the {shape} here is {colour}",
    "i see a {colour} {shape}",
    "{colour} {shape}",
    "there is a {shape} and it is {colour}",
    "a picture of a {colour} {shape}",
)
# Rows per file: small enough to commit (about 1 KB an image), enough to align 25 concepts.
PAIR_ROWS = {"pairs": 500, "val_pairs": 100}
MATCH_ROWS = {"train": 300, "val": 100, "test": 200}
CONCEPT_ROWS = 100


def concepts() -> list[tuple[str, str]]:
    """Every `(colour, shape)` of the dataset."""
    return [(colour, shape) for colour in COLOURS for shape in SHAPES]


def concept_name(concept: tuple[str, str]) -> str:
    return f"{concept[0]} {concept[1]}"


def generate(out_dir: Path, seed: int = DEFAULT_SEED) -> dict[str, int]:
    """Write every manifest and image into `out_dir` (replaced); returns the rows per manifest."""
    if (out_dir / "images").exists():
        shutil.rmtree(out_dir / "images")
    rng = np.random.default_rng(seed)
    written = {}
    for name, size in PAIR_ROWS.items():
        written[name] = write_manifest(out_dir, name, [_pair(rng, out_dir, name, index) for index in range(size)])
    for name, size in MATCH_ROWS.items():
        # Half true claims, half false ones: every concept's image is as often matched as mismatched.
        rows = [_claim(rng, out_dir, name, index, matches=index % 2 == 0) for index in range(size)]
        written[name] = write_manifest(out_dir, name, [rows[i] for i in rng.permutation(size)])
    written["concepts"] = write_manifest(
        out_dir, "concepts", [_concept_row(rng, out_dir, index) for index in range(CONCEPT_ROWS)]
    )
    return written


def _pair(rng, out_dir: Path, split: str, index: int) -> dict:
    concept = concepts()[rng.integers(len(concepts()))]
    return {"text": _claim_text(rng, concept), "image": draw_concept(rng, out_dir, split, index, concept),
            "label": concept_name(concept)}


def _claim(rng, out_dir: Path, split: str, index: int, *, matches: bool) -> dict:
    concept = concepts()[rng.integers(len(concepts()))]
    claimed = concept if matches else _other_concept(rng, concept)
    return {"text": _claim_text(rng, claimed), "image": draw_concept(rng, out_dir, split, index, concept),
            "label": "match" if matches else "mismatch"}


def _concept_row(rng, out_dir: Path, index: int) -> dict:
    concept = concepts()[index % len(concepts())]
    return {"text": "", "image": draw_concept(rng, out_dir, "concepts", index, concept), "label": concept_name(concept)}


def _other_concept(rng, concept: tuple[str, str]) -> tuple[str, str]:
    """A wrong claim: another colour, another shape, or both (a third each)."""
    colour, shape = concept
    change = rng.integers(3)
    if change in (0, 2):
        colour = rng.choice([other for other in COLOURS if other != colour])
    if change in (1, 2):
        shape = rng.choice([other for other in SHAPES if other != shape])
    return str(colour), str(shape)


def _claim_text(rng, concept: tuple[str, str]) -> str:
    template = CLAIM_TEMPLATES[rng.integers(len(CLAIM_TEMPLATES))]
    return template.format(colour=concept[0], shape=concept[1])


def draw_concept(rng, out_dir: Path, split: str, index: int, concept: tuple[str, str]) -> str:
    """Draw `concept` as `images/<split>/<index>.png` under `out_dir`; returns that relative path."""
    relative = Path("images") / split / f"{index:05d}.png"
    (out_dir / relative).parent.mkdir(parents=True, exist_ok=True)
    save_image(draw_image(concept[1], COLOURS[concept[0]], rng, IMAGE_SIZE, NOISE_STD), out_dir / relative)
    return relative.as_posix()


def write_manifest(out_dir: Path, name: str, rows: list[dict]) -> int:
    """Write `<name>.csv` (text, image, label) into `out_dir`; returns the rows written."""
    with open(out_dir / f"{name}.csv", "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=("text", "image", "label"), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def generator_main(argv, *, description: str, write, default_out: Path, default_seed: int):
    """The command line of a samples generator: `--out DIR --seed N`, then `write(out, seed)`."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=default_out, help="folder to write")
    parser.add_argument("--seed", type=int, default=default_seed, help="another seed draws another dataset")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in write(args.out, args.seed).items():
        print(f"{args.out / name}.csv: {rows} rows", file=sys.stderr)


def main(argv: list[str] | None = None):
    generator_main(
        argv, description=__doc__, write=generate, default_out=SAMPLES_DIR / "matching", default_seed=DEFAULT_SEED
    )


if __name__ == "__main__":
    main()
