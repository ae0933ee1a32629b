"""The committed `samples/` dataset: reproducible, readable, balanced, truly multimodal."""

import collections
import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import synthetic_data
from mmkeras.config import RunConfig
from mmkeras.preprocessing.image import load_image
from mmkeras.preprocessing.text import TextTokenizer

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "samples"
SPLITS = ("train", "val", "test")
LOSSLESS_FORMATS = ("png", "bmp", "webp")


def _import_make_samples():
    spec = importlib.util.spec_from_file_location("make_samples", SAMPLES_DIR / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_samples = _import_make_samples()


@pytest.fixture(scope="module")
def regenerated_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("samples")
    make_samples.main(["--out", str(out)])
    return out


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    return synthetic_data.generate(make_samples.SAMPLES_SPEC, tmp_path_factory.mktemp("rows"))


def _read_manifest(split):
    with open(SAMPLES_DIR / f"{split}.csv", newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def _pixels(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def _image_files(root):
    return sorted(path.relative_to(root).as_posix() for path in (root / "images").rglob("*") if path.is_file())


@pytest.mark.parametrize("split", SPLITS)
def test_committed_manifest_is_what_the_script_writes(regenerated_dir, split):
    committed = (SAMPLES_DIR / f"{split}.csv").read_bytes()
    assert (regenerated_dir / f"{split}.csv").read_bytes() == committed


def test_committed_images_are_what_the_script_writes(regenerated_dir):
    files = _image_files(SAMPLES_DIR)
    assert files == _image_files(regenerated_dir)
    for relative in files:
        committed, regenerated = _pixels(SAMPLES_DIR / relative), _pixels(regenerated_dir / relative)
        if relative.rsplit(".", 1)[1] in LOSSLESS_FORMATS:
            np.testing.assert_array_equal(regenerated, committed, err_msg=relative)
        else:
            # Lossy encoders may round differently across library versions; an
            # unseeded generator would differ by the noise itself (~5 levels).
            assert np.abs(regenerated - committed).mean() < 1.0, relative


def test_regenerating_replaces_stale_images(tmp_path):
    stale = tmp_path / "images" / "train" / "99999.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left over")
    synthetic_data.generate(make_samples.SAMPLES_SPEC, tmp_path)
    assert not stale.exists()
    assert _image_files(tmp_path) == _image_files(SAMPLES_DIR)


@pytest.mark.parametrize("split", SPLITS)
def test_every_image_cell_loads_with_the_pipeline_image_loader(split):
    for line, row in enumerate(_read_manifest(split), start=2):
        if not row["image"]:
            continue
        path = SAMPLES_DIR / row["image"]
        with Image.open(path) as image:
            assert image.format.lower().replace("jpeg", "jpg") == path.suffix[1:], (split, line)
            assert image.size == (32, 32), (split, line)
        pixels = load_image(path, (32, 32))
        assert pixels.shape == (32, 32, 3) and pixels.dtype == np.float32
        assert pixels.std() > 10, f"{split}.csv line {line}: blank image"


def test_image_formats_are_mostly_png_and_jpeg_with_a_few_others():
    extensions = collections.Counter(path.rsplit(".", 1)[1] for path in _image_files(SAMPLES_DIR))
    total = sum(extensions.values())
    assert (extensions["png"] + extensions["jpg"]) / total > 0.8
    assert all(extensions[other] > 0 for other in ("gif", "webp", "bmp"))


def test_missing_modalities_only_in_train_and_never_both():
    for split in SPLITS:
        manifest = _read_manifest(split)
        missing_text = sum(not row["text"] for row in manifest)
        missing_image = sum(not row["image"] for row in manifest)
        assert not any(not row["text"] and not row["image"] for row in manifest)
        assert (missing_text, missing_image) == ((6, 6) if split == "train" else (0, 0))


def test_some_texts_are_unicode():
    for split in ("train", "test"):
        assert any(not row["text"].isascii() for row in _read_manifest(split))


@pytest.mark.parametrize("split", SPLITS)
def test_labels_are_balanced(split):
    counts = collections.Counter(row["label"] for row in _read_manifest(split))
    assert sorted(counts) == sorted(make_samples.SAMPLES_SPEC.labels)
    assert max(counts.values()) - min(counts.values()) <= 1


def test_metadata_matches_the_committed_manifests(rows):
    for split in SPLITS:
        cells = [(row.text, row.image, row.label) for row in rows[split]]
        assert cells == [(row["text"], row["image"], row["label"]) for row in _read_manifest(split)]


def test_neither_modality_alone_is_enough(rows):
    spec = make_samples.SAMPLES_SPEC
    for split in SPLITS:
        split_rows = rows[split]
        for row in split_rows:
            assert row.image_value == row.colour
            assert row.label == synthetic_data.label_name(row.colour, row.text_value)
        # Every (colour, mood) pair is equally frequent, so knowing one attribute
        # leaves the other to chance: 1/3 from the text, 1/2 from the image.
        pairs = collections.Counter((row.colour, row.text_value) for row in split_rows)
        assert len(pairs) == len(spec.labels) and max(pairs.values()) - min(pairs.values()) <= 1
        text_only = synthetic_data.best_single_modality_accuracy(split_rows, "text_value")
        image_only = synthetic_data.best_single_modality_accuracy(split_rows, "image_value")
        assert text_only == pytest.approx(1 / 3, abs=0.01)
        assert image_only == pytest.approx(1 / 2, abs=0.01)


def test_texts_carry_the_mood_and_never_the_colour_or_shape(rows):
    synonyms = make_samples.SAMPLES_SPEC.text.synonyms
    image_words = set(synthetic_data.COLOURS) | set(synthetic_data.SHAPES)
    for split in SPLITS:
        for row in rows[split]:
            if not row.text:
                continue
            words = set(synthetic_data.words_of(row.text))
            assert words & set(synonyms[row.text_value]), row.text
            other_moods = {
                word for mood, mood_words in synonyms.items() if mood != row.text_value for word in mood_words
            }
            assert not words & other_moods, row.text
            assert not words & image_words, row.text


def test_run_yaml_is_a_run_config_whose_sequence_length_fits_the_texts():
    config = RunConfig.from_yaml(SAMPLES_DIR / "run.yaml")
    texts = [row["text"] for split in SPLITS for row in _read_manifest(split) if row["text"]]
    # A vocabulary large enough to keep every word whole: the count is words plus [CLS]/[SEP].
    tokenizer = TextTokenizer.train_from_texts(texts, vocabulary_size=2000, sequence_length=config.sequence_length)
    _, padding_mask = tokenizer.encode_batch(texts)
    assert padding_mask[:, -1].max() == 0, "some sample text is truncated by run.yaml's sequence_length"


# The generated matching and VQA datasets (samples/matching, samples/vqa) live beside the built-in one.
OTHER_DATASETS = ("matching", "vqa")


def test_samples_folder_stays_small():
    files = [path for path in SAMPLES_DIR.rglob("*") if path.is_file() and "__pycache__" not in path.parts]
    built_in = [path for path in files if path.relative_to(SAMPLES_DIR).parts[0] not in OTHER_DATASETS]
    assert sum(path.stat().st_size for path in built_in) < 2_000_000
    assert sum(path.stat().st_size for path in files) < 8_000_000
