"""Regenerate `samples/vqa/`: visual question answering as answer classification; the same files every time.

The text is a question about the image, the label its answer: "what colour is
the shape?" (red, yellow, green, blue, purple), "what shape is it?" (circle,
square, triangle, cross, ring) or "is it red?" (yes, no). The image alone
cannot tell which question was asked, and the question alone not the answer:
`mmkeras train` learns it like any classification (`--init-from` an align run
of `samples/matching/` starts from towers that already name colours and shapes).

Usage:
    python samples/make_vqa_samples.py                  # rewrites samples/vqa/
    python samples/make_vqa_samples.py --out DIR --seed 7
"""

import shutil
import sys
from pathlib import Path

import numpy as np

SAMPLES_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(SAMPLES_DIR.parent))

from benchmarks.synthetic_data import COLOURS  # noqa: E402
from samples.make_matching_samples import concepts, draw_concept, generator_main, write_manifest  # noqa: E402

DEFAULT_SEED = 20261202
SPLIT_ROWS = {"train": 400, "val": 100, "test": 200}
COLOUR_QUESTIONS = ("what colour is the shape?", "which colour do you see?", "what is its colour?")
SHAPE_QUESTIONS = ("what shape is it?", "which shape is drawn?", "what is the shape?")
YES_NO_QUESTION = "is it {colour}?"


def question_and_answer(rng, concept: tuple[str, str]) -> tuple[str, str]:
    """One of the three kinds of question about `concept`, a third each, and its answer."""
    colour, shape = concept
    kind = rng.integers(3)
    if kind == 0:
        return COLOUR_QUESTIONS[rng.integers(len(COLOUR_QUESTIONS))], colour
    if kind == 1:
        return SHAPE_QUESTIONS[rng.integers(len(SHAPE_QUESTIONS))], shape
    asked = colour if rng.random() < 0.5 else str(rng.choice([other for other in COLOURS if other != colour]))
    return YES_NO_QUESTION.format(colour=asked), "yes" if asked == colour else "no"


def generate(out_dir: Path, seed: int = DEFAULT_SEED) -> dict[str, int]:
    """Write every manifest and image into `out_dir` (images replaced); returns the rows per manifest."""
    if (out_dir / "images").exists():
        shutil.rmtree(out_dir / "images")
    rng = np.random.default_rng(seed)
    written = {}
    for split, size in SPLIT_ROWS.items():
        rows = []
        for index in range(size):
            concept = concepts()[rng.integers(len(concepts()))]
            question, answer = question_and_answer(rng, concept)
            rows.append({"text": question, "image": draw_concept(rng, out_dir, split, index, concept), "label": answer})
        written[split] = write_manifest(out_dir, split, rows)
    return written


def main(argv: list[str] | None = None):
    generator_main(
        argv, description=__doc__, write=generate, default_out=SAMPLES_DIR / "vqa", default_seed=DEFAULT_SEED
    )


if __name__ == "__main__":
    main()
