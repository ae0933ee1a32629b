"""Seeded synthetic text + image datasets in which neither modality alone is enough.

Every row pairs a small drawn image (one shape in one colour, on a random
background shade, at a random position, size and rotation, with pixel noise)
with a short text. The label combines one *image attribute* (the colour or the
shape, chosen by the spec; the other one is a random distractor) with one
*text attribute* (a word class written through synonyms, phrasing templates,
typos and case variations). Texts never mention colours or shapes and images
never depend on the text attribute, so a text-only classifier can at best
guess the image attribute and an image-only classifier the text attribute.

Both the built-in `samples/` dataset (`samples/make_samples.py`) and the
10-class benchmark dataset (`benchmarks/concat_baseline.py`) are
configurations of this one generator.

Example:
>>> spec = DatasetSpec(
...     image_attribute="colour",
...     image_values=("red", "blue"),
...     text=TextAttribute(
...         synonyms={"calm": ("calm", "quiet"), "excited": ("excited", "lively")},
...         templates=("a {word} {noun}",),
...         nouns=("sticker",),
...     ),
...     split_sizes={"train": 8, "test": 4},
... )
>>> rows = generate(spec, "/tmp/tiny_dataset")                  # doctest: +SKIP
>>> rows["train"][0].label                                      # doctest: +SKIP
'blue_calm'
"""

import csv
import dataclasses
import itertools
import re
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {
    "red": (215, 40, 40),
    "yellow": (230, 205, 35),
    "green": (40, 165, 60),
    "blue": (40, 85, 220),
    "purple": (145, 50, 190),
}
SHAPES = ("circle", "square", "triangle", "cross", "ring")
IMAGE_ATTRIBUTES = ("colour", "shape")

# Shapes are drawn this many times larger, then downsampled: smooth edges.
_SUPERSAMPLING = 4


@dataclasses.dataclass(frozen=True)
class TextAttribute:
    """How texts are written for each value of the text attribute.

    Args:
        synonyms: value -> words or phrases that express it (disjoint lists).
        templates: phrasings with a `{word}` placeholder (one synonym) and an
            optional `{noun}` placeholder (a distractor noun).
        nouns: distractor nouns; they carry no label information.
        unicode_templates: extra phrasings with non-ASCII characters, used for
            `DatasetSpec.unicode_rows` rows.
        typo_rate: share of texts with one typo in a word other than the synonym.
        case_weights: probabilities of leaving the text as written, capitalising
            it, writing it in title case, or in upper case.
    """

    synonyms: dict[str, tuple[str, ...]]
    templates: tuple[str, ...]
    nouns: tuple[str, ...]
    unicode_templates: tuple[str, ...] = ()
    typo_rate: float = 0.1
    case_weights: tuple[float, float, float, float] = (0.7, 0.15, 0.08, 0.07)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """One synthetic dataset: its attributes, splits, quirks and seed.

    Args:
        image_attribute: `colour` or `shape`: the image attribute the label uses.
        image_values: the values of that attribute (keys of `COLOURS` or
            members of `SHAPES`); the other attribute is drawn from all values.
        text: how the texts are written; its synonym keys are the text values.
        split_sizes: split name -> number of rows (labels balanced to +-1).
        missing_text_rows: rows of the `train` split whose text cell is empty.
        missing_image_rows: rows of the `train` split whose image cell is empty.
        unicode_rows: split name -> number of rows written with the unicode templates.
        formats: image file extension -> probability (`png`, `jpg`, `gif`, `webp`, `bmp`).
        image_size: side of the square RGB images, in pixels.
        noise_std: standard deviation of the Gaussian pixel noise.
        seed: everything random derives from it.
    """

    image_attribute: str
    image_values: tuple[str, ...]
    text: TextAttribute
    split_sizes: dict[str, int]
    missing_text_rows: int = 0
    missing_image_rows: int = 0
    unicode_rows: dict[str, int] = dataclasses.field(default_factory=dict)
    formats: dict[str, float] = dataclasses.field(default_factory=lambda: {"png": 1.0})
    image_size: int = 32
    noise_std: float = 6.0
    seed: int = 0

    def __post_init__(self):
        if self.image_attribute not in IMAGE_ATTRIBUTES:
            raise ValueError(f"image_attribute must be one of {IMAGE_ATTRIBUTES}, got {self.image_attribute!r}")
        known = COLOURS if self.image_attribute == "colour" else SHAPES
        unknown = [value for value in self.image_values if value not in known]
        if unknown:
            raise ValueError(f"unknown {self.image_attribute} value(s): {unknown}")

    @property
    def labels(self) -> list[str]:
        """All class names, `<image value>_<text value>`."""
        return [label_name(image, text) for image, text in itertools.product(self.image_values, self.text.synonyms)]


@dataclasses.dataclass(frozen=True)
class Row:
    """One generated row: the manifest cells plus the attributes behind them.

    `text` and `image` are the manifest cells (`""` for a missing modality;
    `image` is relative to the manifest's folder).
    """

    text: str
    image: str
    label: str
    colour: str
    shape: str
    text_value: str
    image_value: str


def label_name(image_value: str, text_value: str) -> str:
    return f"{image_value}_{text_value}"


def generate(spec: DatasetSpec, out_dir: str | Path) -> dict[str, list[Row]]:
    """Write `<split>.csv` manifests and `images/<split>/` files into `out_dir`.

    Existing `images/<split>/` folders are replaced, so regenerating leaves no
    stale images behind. The same spec always writes the same files.

    Returns:
        split name -> its rows, in manifest order.
    """
    out_dir = Path(out_dir)
    rows = {}
    for split_index, (split, size) in enumerate(spec.split_sizes.items()):
        image_dir = out_dir / "images" / split
        if image_dir.exists():
            shutil.rmtree(image_dir)
        image_dir.mkdir(parents=True)
        rows[split] = _generate_split(spec, split, split_index, size, out_dir)
        write_manifest(out_dir / f"{split}.csv", rows[split])
    return rows


def write_manifest(path: Path, rows: list[Row]):
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(["text", "image", "label"])
        writer.writerows([row.text, row.image, row.label] for row in rows)


def _generate_split(spec: DatasetSpec, split: str, split_index: int, size: int, out_dir: Path) -> list[Row]:
    split_rng = np.random.default_rng([spec.seed, split_index])
    combinations = list(itertools.product(spec.image_values, spec.text.synonyms))
    order = split_rng.permutation(np.resize(np.arange(len(combinations)), size))
    # Disjoint row sets for the quirks: a row never misses both modalities.
    quirky = split_rng.permutation(size)
    missing_text_count = spec.missing_text_rows if split == "train" else 0
    missing_image_count = spec.missing_image_rows if split == "train" else 0
    unicode_count = spec.unicode_rows.get(split, 0)
    cuts = np.cumsum([missing_text_count, missing_image_count, unicode_count])
    missing_text, missing_image, unicode = (set(part) for part in np.split(quirky[: cuts[-1]], cuts[:-1]))

    extensions = list(spec.formats)
    weights = np.array(list(spec.formats.values()), dtype=float)
    rows = []
    for index in range(size):
        # One generator per row: a row's content does not depend on the rows before it.
        rng = np.random.default_rng([spec.seed, split_index, index])
        image_value, text_value = combinations[order[index]]
        colour, shape = _image_attributes(spec, image_value, rng)
        extension = extensions[rng.choice(len(extensions), p=weights / weights.sum())]
        text = write_text(spec.text, text_value, rng, use_unicode=index in unicode)
        image = draw_image(shape, COLOURS[colour], rng, spec.image_size, spec.noise_std)
        relative_path = f"images/{split}/{index + 1:05d}.{extension}"
        if index not in missing_image:
            save_image(image, out_dir / relative_path)
        rows.append(
            Row(
                text="" if index in missing_text else text,
                image="" if index in missing_image else relative_path,
                label=label_name(image_value, text_value),
                colour=colour,
                shape=shape,
                text_value=text_value,
                image_value=image_value,
            )
        )
    return rows


def _image_attributes(spec: DatasetSpec, image_value: str, rng: np.random.Generator) -> tuple[str, str]:
    """(colour, shape): the labelled attribute from the row, the distractor at random."""
    if spec.image_attribute == "colour":
        return image_value, SHAPES[rng.integers(len(SHAPES))]
    colour_names = list(COLOURS)
    return colour_names[rng.integers(len(colour_names))], image_value


def write_text(text: TextAttribute, value: str, rng: np.random.Generator, *, use_unicode: bool = False) -> str:
    """One phrasing of `value`: a template, a synonym, maybe a typo and a case change."""
    templates = text.unicode_templates if use_unicode else text.templates
    template = templates[rng.integers(len(templates))]
    synonyms = text.synonyms[value]
    word = synonyms[rng.integers(len(synonyms))]
    noun = text.nouns[rng.integers(len(text.nouns))]
    pieces = [(piece.format(word=word, noun=noun), "{word}" in piece) for piece in template.split()]
    if rng.random() < text.typo_rate:
        # Typos go into the filler words only, so every text still names its value.
        candidates = [i for i, (piece, is_word) in enumerate(pieces) if not is_word and len(piece) >= 4]
        if candidates:
            position = candidates[rng.integers(len(candidates))]
            pieces[position] = (_typo(pieces[position][0], rng), False)
    sentence = " ".join(piece for piece, _ in pieces)
    case = rng.choice(4, p=text.case_weights)
    return (sentence, sentence[:1].upper() + sentence[1:], sentence.title(), sentence.upper())[case]


def _typo(word: str, rng: np.random.Generator) -> str:
    """Swap two neighbouring letters, drop one, or double one."""
    position = int(rng.integers(len(word) - 1))
    kind = rng.integers(3)
    if kind == 0:
        return word[:position] + word[position + 1] + word[position] + word[position + 2 :]
    if kind == 1:
        return word[:position] + word[position + 1 :]
    return word[: position + 1] + word[position:]


def draw_image(
    shape: str, colour: tuple[int, int, int], rng: np.random.Generator, size: int, noise_std: float
) -> np.ndarray:
    """A `size` x `size` uint8 RGB image of one jittered-colour shape on a noisy background."""
    canvas = size * _SUPERSAMPLING
    grey = rng.uniform(70, 200)
    background = tuple(int(np.clip(grey + rng.uniform(-15, 15), 0, 255)) for _ in range(3))
    fill = tuple(int(np.clip(channel + rng.uniform(-25, 25), 0, 255)) for channel in colour)
    radius = rng.uniform(0.22, 0.38) * canvas
    centre = rng.uniform(radius, canvas - radius, size=2)
    angle = rng.uniform(0, 2 * np.pi)

    image = Image.new("RGB", (canvas, canvas), background)
    _draw_shape(ImageDraw.Draw(image), shape, centre, radius, angle, fill, background)
    small = np.asarray(image.resize((size, size), Image.Resampling.LANCZOS), dtype=np.float64)
    noisy = small + rng.normal(0.0, noise_std, size=small.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _draw_shape(draw, shape, centre, radius, angle, fill, background):
    x, y = centre
    if shape in ("circle", "ring"):
        box = (x - radius, y - radius, x + radius, y + radius)
        draw.ellipse(box, fill=fill)
        if shape == "ring":
            hole = 0.55 * radius
            draw.ellipse((x - hole, y - hole, x + hole, y + hole), fill=background)
        return
    draw.polygon([tuple(point) for point in _polygon(shape, centre, radius, angle)], fill=fill)


def _polygon(shape: str, centre: np.ndarray, radius: float, angle: float) -> np.ndarray:
    """Corner points of a square, triangle or plus-shaped cross, rotated by `angle`."""
    if shape == "square":
        corners = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]]) * radius / np.sqrt(2)
    elif shape == "triangle":
        turns = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        corners = np.stack([np.cos(turns), np.sin(turns)], axis=1) * radius
    elif shape == "cross":
        arm, half = radius, radius / 3
        corners = np.array(
            [
                [half, half], [half, arm], [-half, arm], [-half, half],
                [-arm, half], [-arm, -half], [-half, -half], [-half, -arm],
                [half, -arm], [half, -half], [arm, -half], [arm, half],
            ]
        )  # fmt: skip
    else:
        raise ValueError(f"unknown shape {shape!r}")
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return corners @ rotation.T + centre


def save_image(pixels: np.ndarray, path: Path):
    """Save in the format the extension names; GIF gets a fixed 64-colour palette."""
    image = Image.fromarray(pixels)
    extension = path.suffix.lower()
    if extension == ".jpg":
        image.save(path, format="JPEG", quality=90)
    elif extension == ".gif":
        image.quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, format="GIF")
    elif extension == ".webp":
        image.save(path, format="WEBP", lossless=True)
    elif extension in (".png", ".bmp"):
        image.save(path, format=extension[1:].upper())
    else:
        raise ValueError(f"unsupported image format {extension!r}")


def best_single_modality_accuracy(rows: list[Row], attribute: str) -> float:
    """Accuracy of the best classifier that knows only `attribute` of each row.

    It predicts, for each value of the attribute, the label most frequent
    among the rows with that value: the ceiling of a text-only
    (`attribute="text_value"`) or image-only (`"image_value"`) model.
    """
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        per_label = counts.setdefault(getattr(row, attribute), {})
        per_label[row.label] = per_label.get(row.label, 0) + 1
    return sum(max(per_label.values()) for per_label in counts.values()) / len(rows)


def words_of(text: str) -> list[str]:
    """Lowercased words (letters and digits) of a text."""
    return re.findall(r"\w+", text.lower())
