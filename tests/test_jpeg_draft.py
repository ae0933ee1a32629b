"""JPEGs decoded at reduced DCT scale (`jpeg_draft_factor`): exact where it does not apply, close where it does.

docs/design.md#photo-decoding-at-reduced-dct-scale: a draft decode is Pillow's `draft` then the same
resize; its pixels differ from a full decode by a few units on photo-like content.
"""

import io
import json

import numpy as np
import pytest
from PIL import Image

from mmkeras.errors import UserError
from mmkeras.preprocessing import MultimodalPreprocessor, TextTokenizer
from mmkeras.preprocessing.image import JPEG_DRAFT_FACTOR, _resize, load_image

# Measured on these synthetic photos: at most 4 units apart, 0.09-0.23 on average (sharp edges, no noise);
# the bounds leave room for other libjpeg-turbo builds.
MAX_DIFFERENCE = 6
MEAN_DIFFERENCE = 0.6


def photo(width: int, height: int) -> Image.Image:
    """A smooth picture with edges: gradients, a disc and a bar (JPEG-friendly, like a photo, unlike noise)."""
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    red = 128 + 100 * np.sin(6 * x + 2 * y)
    green = 128 + 100 * np.cos(5 * y - 3 * x)
    blue = np.where((x - 0.4) ** 2 + (y - 0.35) ** 2 < 0.04, 230.0, 40.0)
    pixels = np.stack([red, green, blue], axis=-1)
    pixels[(x > 0.7) & (x < 0.75)] = (250, 250, 20)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def jpeg_bytes(image: Image.Image, orientation: int | None = None) -> bytes:
    buffer = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    image.save(buffer, format="JPEG", quality=92, exif=exif.tobytes())
    return buffer.getvalue()


def reference_draft(source: bytes, draft_size: tuple[int, int], size: tuple[int, int], resample="bilinear"):
    """Pillow's draft at `draft_size` (width, height), then the two-pass resize to `size` (height, width)."""
    with Image.open(io.BytesIO(source)) as image:
        image.draft(None, draft_size)
        image.load()
        rgb = image.convert("RGB")
    return np.asarray(_resize(rgb, (size[1], size[0]), resample), np.float32)


def test_new_preprocessors_decode_large_jpegs_at_reduced_scale_and_say_so_in_their_config():
    tokenizer = TextTokenizer.train_from_texts(["a photo"], vocabulary_size=32, sequence_length=4)
    preprocessor = MultimodalPreprocessor(tokenizer, (48, 64))
    source = jpeg_bytes(photo(1024, 768))
    assert preprocessor.get_config()["image"]["jpeg_draft_factor"] == JPEG_DRAFT_FACTOR == 2
    pixels, _ = preprocessor.load_images([source])
    # 1024x768 to 64x48 asks for 128x96: Pillow picks 1/8 and decodes exactly 128x96 pixels
    np.testing.assert_array_equal(pixels[0], reference_draft(source, (128, 96), (48, 64)))
    assert not np.array_equal(pixels[0], load_image(source, (48, 64)))


@pytest.mark.parametrize("resample", ["bilinear", "bicubic"])
def test_a_draft_decode_is_within_a_few_units_of_the_full_decode(resample):
    source = jpeg_bytes(photo(1600, 1200))
    full = load_image(source, (56, 56), resample)
    drafted = load_image(source, (56, 56), resample, jpeg_draft_factor=2)
    difference = np.abs(drafted - full)
    assert 0 < difference.max() <= MAX_DIFFERENCE and difference.mean() <= MEAN_DIFFERENCE
    # 1600 // 112 = 14 allows 1/8: a decode of 200x150, at least twice 56x56 on both axes
    np.testing.assert_array_equal(drafted, reference_draft(source, (112, 112), (56, 56), resample))


def test_small_images_pngs_and_a_factor_of_none_decode_every_pixel():
    small = jpeg_bytes(photo(120, 90))  # under four times the target: scale 1, nothing to gain
    np.testing.assert_array_equal(load_image(small, (32, 32), jpeg_draft_factor=2), load_image(small, (32, 32)))
    buffer = io.BytesIO()
    photo(1024, 768).save(buffer, format="PNG")  # only JPEGs have DCT scaling
    png = buffer.getvalue()
    np.testing.assert_array_equal(load_image(png, (48, 64), jpeg_draft_factor=2), load_image(png, (48, 64)))


def test_exif_rotated_photos_draft_in_the_file_orientation():
    # Stored 1200 wide, 800 tall; tag 6 displays it 800 wide, 1200 tall. The target 60x40 (h, w) is
    # 40x60 (w, h) displayed, 60x40 in the file: the draft request is 120x80 there, not 80x120.
    source = jpeg_bytes(photo(1200, 800), orientation=6)
    drafted = load_image(source, (60, 40), jpeg_draft_factor=2)
    full = load_image(source, (60, 40))
    assert drafted.shape == (60, 40, 3)
    assert np.abs(drafted - full).max() <= MAX_DIFFERENCE
    with Image.open(io.BytesIO(source)) as image:
        image.draft(None, (120, 80))
        image.load()
        rotated = image.transpose(Image.Transpose.ROTATE_270).convert("RGB")
    assert rotated.size == (100, 150)  # 1/8 of the file's 1200x800, displayed upright
    np.testing.assert_array_equal(drafted, np.asarray(_resize(rotated, (40, 60), "bilinear"), np.float32))


def test_the_centre_crop_keeps_the_full_decode_geometry():
    source = jpeg_bytes(photo(1003, 751))  # odd sizes: the 1/4 decode (251x188) has another aspect ratio
    full = load_image(source, (56, 56), crop_pct=0.875)
    drafted = load_image(source, (56, 56), crop_pct=0.875, jpeg_draft_factor=2)
    assert np.abs(drafted - full).max() <= MAX_DIFFERENCE
    assert np.abs(drafted - full).mean() <= MEAN_DIFFERENCE


def test_preprocessor_files_without_the_key_keep_the_full_decode(tmp_path):
    tokenizer = TextTokenizer.train_from_texts(["a photo"], vocabulary_size=32, sequence_length=4)
    MultimodalPreprocessor(tokenizer, (48, 64)).save(tmp_path)
    config_path = tmp_path / "preprocessor.json"
    config = json.loads(config_path.read_text())
    del config["image"]["jpeg_draft_factor"]  # as written before reduced decoding existed
    config_path.write_text(json.dumps(config))
    loaded = MultimodalPreprocessor.load(tmp_path)
    assert loaded.jpeg_draft_factor is None
    source = jpeg_bytes(photo(1024, 768))
    np.testing.assert_array_equal(loaded.load_images([source])[0][0], load_image(source, (48, 64)))
    config["image"]["jpeg_draft_factor"] = 2
    config_path.write_text(json.dumps(config))
    assert MultimodalPreprocessor.load(tmp_path).jpeg_draft_factor == 2


@pytest.mark.parametrize("value", [0, 1.5, "2", True])
def test_an_invalid_factor_in_the_file_is_one_clear_error(tmp_path, value):
    tokenizer = TextTokenizer.train_from_texts(["a photo"], vocabulary_size=32, sequence_length=4)
    MultimodalPreprocessor(tokenizer, (48, 64)).save(tmp_path)
    config_path = tmp_path / "preprocessor.json"
    config = json.loads(config_path.read_text())
    config["image"]["jpeg_draft_factor"] = value
    config_path.write_text(json.dumps(config))
    with pytest.raises(UserError, match="jpeg_draft_factor must be null or a positive integer"):
        MultimodalPreprocessor.load(tmp_path)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_keeps_the_full_decode_geometry(orientation):
    # Odd sizes leave a partly padded last column and row in the 1/4 decode, on a side set by the orientation.
    source = jpeg_bytes(photo(1003, 751), orientation=orientation)
    full = load_image(source, (40, 56))
    drafted = load_image(source, (40, 56), jpeg_draft_factor=2)
    assert np.abs(drafted - full).max() <= MAX_DIFFERENCE
