"""The image check before training decodes as the run will: JPEGs at their reduced DCT scale, broken files found."""

import io

import numpy as np
import pytest
from PIL import Image

from mmkeras.config import RunConfig
from mmkeras.data.manifest import decoded_as, read_manifest
from mmkeras.errors import UserError
from mmkeras.preprocessing import MultimodalPreprocessor
from mmkeras.preprocessing.image import JPEG_DRAFT_FACTOR, UnreadableImageError, load_image
from mmkeras.preprocessing.text import TextTokenizer

SIZE = (16, 16)
# A 600x400 JPEG decodes at 1/8 (75x50 = 3750 pixels) for a 16x16 image: under this limit reduced, over it whole.
MAX_PIXELS = 10_000


def jpeg_bytes() -> bytes:
    rng = np.random.default_rng(0)
    pixels = np.kron(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8), np.ones((10, 10, 1), np.uint8))
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def broken_files() -> dict[str, bytes]:
    """Each broken file a reduced decode must still find, by name."""
    jpeg, png = jpeg_bytes(), png_bytes()
    middle = len(jpeg) // 2
    # These random bytes break the entropy-coded stream (with other seeds they decode to wrong pixels without an
    # error, reduced or whole alike: libjpeg cannot tell them from data).
    garbage = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    return {
        "truncated.jpg": jpeg[:middle],
        "garbage.jpg": jpeg[:middle] + garbage + jpeg[middle + len(garbage):],
        "empty.jpg": b"",
        "truncated.png": png[: len(png) // 2],
    }


@pytest.fixture
def photo_manifest(tmp_path):
    """`good.jpg` (600x400) and the broken files, one row each, in `train.csv`."""
    files = {"good.jpg": jpeg_bytes(), **broken_files()}
    lines = ["text,image,label"]
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
        lines.append(f"{name},{name},a")
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "train.csv"


def preprocessor(max_image_pixels: int) -> MultimodalPreprocessor:
    tokenizer = TextTokenizer.train_from_texts(["good", "broken photo"], vocabulary_size=16, sequence_length=4)
    return MultimodalPreprocessor(tokenizer, SIZE, max_image_pixels=max_image_pixels)


@pytest.mark.parametrize("name", list(broken_files()))
def test_a_reduced_decode_finds_what_the_whole_decode_finds(name):
    content = broken_files()[name]
    reasons = []
    for factor in (None, JPEG_DRAFT_FACTOR):
        with pytest.raises(UnreadableImageError) as caught:
            load_image(content, SIZE, jpeg_draft_factor=factor)
        reasons.append(caught.value.reason)
    assert reasons[0] == reasons[1]


@pytest.mark.parametrize("remember", [False, True])
def test_a_reduced_decode_still_finds_every_broken_file(photo_manifest, remember):
    checked, dropped = read_manifest(photo_manifest).validate_images(
        SIZE, "skip", **decoded_as(preprocessor(MAX_PIXELS)), remember=remember
    )
    assert [row.text for row in checked.rows] == ["good.jpg"] and dropped == 4
    reasons = {bad.reason.split("'")[1]: bad.reason.split(": ", 1)[1] for bad in checked.skipped}
    assert {name: reason.split(" (")[0] for name, reason in reasons.items()} == {
        "truncated.jpg": "image file is truncated",
        "garbage.jpg": "broken data stream when reading image file",
        "empty.jpg": "not an image file, or a format Pillow cannot read",
        "truncated.png": "image file is truncated",
    }


def test_the_check_remembers_each_decoding_apart(photo_manifest):
    # The same files checked whole: the good JPEG is over the limit now; a remembered reduced outcome must not say
    # otherwise.
    read_manifest(photo_manifest).validate_images(SIZE, "skip", **decoded_as(preprocessor(MAX_PIXELS)))
    with pytest.raises(UserError, match=r"good.jpg': 600x400 pixels is more than the limit of 10000"):
        read_manifest(photo_manifest).validate_images(SIZE, "fail", max_pixels=MAX_PIXELS)


def test_training_checks_a_jpeg_by_its_reduced_decode_as_predict_does(tmp_path):
    # train, qat and align check their manifests in `checked_manifests`; the run's preprocessor decodes JPEGs
    # reduced, so a JPEG over `max_image_pixels` whole but not reduced trains, as the bundle then predicts it.
    from mmkeras.training.run_setup import checked_manifests

    (tmp_path / "good.jpg").write_bytes(jpeg_bytes())
    (tmp_path / "train.csv").write_text("text,image,label\na photo,good.jpg,a\n")
    config = RunConfig(data=str(tmp_path / "train.csv"), max_image_pixels=MAX_PIXELS)
    run_preprocessor = preprocessor(MAX_PIXELS)
    manifest, _, skipped = checked_manifests(
        config, read_manifest(config.data), ["a"], run_preprocessor, read_manifest=read_manifest
    )
    assert len(manifest.rows) == 1 and skipped == []
    assert run_preprocessor([None], [tmp_path / "good.jpg"])["image"].shape == (1, *SIZE, 3)  # as predict reads it
    with pytest.raises(UnreadableImageError, match="600x400 pixels is more than the limit"):  # over it whole
        MultimodalPreprocessor(run_preprocessor.tokenizer, SIZE, max_image_pixels=MAX_PIXELS,
                               jpeg_draft_factor=None)([None], [tmp_path / "good.jpg"])


def test_cross_validation_checks_jpegs_as_its_runs_decode_them(tmp_path):
    from mmkeras.training.cross_validation import usable_rows

    (tmp_path / "good.jpg").write_bytes(jpeg_bytes())
    (tmp_path / "train.csv").write_text("text,image,label\na photo,good.jpg,a\n")
    config = RunConfig(image_size=SIZE[0], max_image_pixels=MAX_PIXELS)
    assert JPEG_DRAFT_FACTOR == MultimodalPreprocessor(None, SIZE).jpeg_draft_factor  # what its new runs decode with
    assert len(usable_rows(config, tmp_path / "train.csv").rows) == 1
