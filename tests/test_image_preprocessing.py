"""load_image: every supported kind of image file becomes the same RGB float array."""

import io
import math
import os

import numpy as np
import pytest
from PIL import Image

from mmkeras.preprocessing.image import UnreadableImageError, load_image

SIZE = (24, 32)  # (height, width)
RED = (200, 30, 10)


def solid(mode, color, size=(40, 30)):
    return Image.new(mode, size, color)


def save(image, path, **options):
    image.save(path, **options)
    return path


def assert_solid(pixels, color, tolerance=0.0):
    assert pixels.shape == (*SIZE, 3) and pixels.dtype == np.float32
    np.testing.assert_allclose(pixels, np.broadcast_to(np.float32(color), pixels.shape), atol=tolerance)


@pytest.mark.parametrize(
    "file_name, tolerance",
    [("image.png", 0), ("image.bmp", 0), ("image.webp", 6), ("image.jpg", 6), ("image.tiff", 0)],
)
def test_rgb_formats_decode_to_the_same_colour(tmp_path, file_name, tolerance):
    options = {"lossless": True} if file_name.endswith("webp") else {}
    path = save(solid("RGB", RED), tmp_path / file_name, **options)
    assert_solid(load_image(path, SIZE), RED, tolerance)


def test_str_path_and_bytes_give_identical_arrays(tmp_path):
    pattern = Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    path = save(pattern, tmp_path / "noise.png")
    from_path = load_image(path, SIZE)
    np.testing.assert_array_equal(from_path, load_image(str(path), SIZE))
    np.testing.assert_array_equal(from_path, load_image(path.read_bytes(), SIZE))
    assert from_path.min() >= 0 and from_path.max() <= 255


def pillow_two_pass(image, width, height, resample=Image.Resampling.BILINEAR):
    """Pillow's resize, the horizontal pass first (as load_image fixes it)."""
    return image.resize((width, image.height), resample).resize((width, height), resample)


def test_resize_is_pillow_bilinear_to_width_height(tmp_path):
    pattern = Image.fromarray(np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8))
    path = save(pattern, tmp_path / "noise.png")
    expected = np.asarray(pillow_two_pass(pattern, SIZE[1], SIZE[0]), np.float32)
    np.testing.assert_array_equal(load_image(path, SIZE), expected)


def test_the_horizontal_pass_always_runs_first(tmp_path):
    # 87x113 -> 71x47 bicubic: the installed Pillow runs the vertical pass first here, many units apart.
    pattern = Image.fromarray(np.random.default_rng(2).integers(0, 256, (113, 87, 3), dtype=np.uint8))
    expected = np.asarray(pillow_two_pass(pattern, 71, 47, Image.Resampling.BICUBIC), np.float32)
    np.testing.assert_array_equal(load_image(save(pattern, tmp_path / "noise.png"), (47, 71), "bicubic"), expected)


@pytest.mark.parametrize(("width", "height"), [(70, 50), (41, 97), (40, 40)])
def test_crop_pct_is_timms_centre_crop(tmp_path, width, height):
    pattern = Image.fromarray(np.random.default_rng(3).integers(0, 256, (height, width, 3), dtype=np.uint8))
    path = save(pattern, tmp_path / "noise.png")
    # timm's eval transform, written out: Resize(floor(32 / 0.875)) of the shorter side, then CenterCrop(32).
    scale_size = math.floor(32 / 0.875)
    short, long = sorted((width, height))
    resized_long = int(scale_size * long / short)
    new_width, new_height = (scale_size, resized_long) if width <= height else (resized_long, scale_size)
    top, left = int(round((new_height - 32) / 2.0)), int(round((new_width - 32) / 2.0))
    resized = pillow_two_pass(pattern, new_width, new_height, Image.Resampling.BICUBIC)
    expected = np.asarray(resized.crop((left, top, left + 32, top + 32)), np.float32)
    cropped = load_image(path, (32, 32), "bicubic", crop_pct=0.875)
    np.testing.assert_array_equal(cropped, expected)
    assert not np.array_equal(cropped, load_image(path, (32, 32), "bicubic"))
    with pytest.raises(ValueError, match="crop_pct must be in"):
        load_image(path, (32, 32), crop_pct=1.5)


def test_exif_orientation_6_rotates_a_non_square_jpeg(tmp_path):
    # 60 wide, 30 tall: left half blue, right half red. Tag 6 = "rotate 90° clockwise to display".
    image = solid("RGB", (255, 0, 0), size=(60, 30))
    image.paste((0, 0, 255), (0, 0, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save(image, tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    pixels = load_image(path, (60, 30))  # displayed: 30 wide, 60 tall
    assert pixels.shape == (60, 30, 3)
    np.testing.assert_allclose(pixels[5, 15], [0, 0, 255], atol=8)  # the left (blue) half is now on top
    np.testing.assert_allclose(pixels[55, 15], [255, 0, 0], atol=8)


def test_grayscale_and_bilevel_become_gray_rgb(tmp_path):
    assert_solid(load_image(save(solid("L", 77), tmp_path / "gray.png"), SIZE), (77, 77, 77))
    assert_solid(load_image(save(solid("1", 1), tmp_path / "bits.png"), SIZE), (255, 255, 255))


@pytest.mark.parametrize("value", [0, 257 * 100, 65535, 12345])
def test_sixteen_bit_grayscale_is_scaled_by_257(tmp_path, value):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((30, 40), value, np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I;16")
    expected = round(value / 257)
    assert_solid(load_image(path, SIZE), (expected,) * 3)


def test_thirty_two_bit_integer_mode_is_read_as_sixteen_bit(tmp_path):
    path = tmp_path / "int.tiff"
    Image.fromarray(np.full((30, 40), 257 * 200, np.int32)).save(path)
    assert Image.open(path).mode == "I"
    assert_solid(load_image(path, SIZE), (200, 200, 200))


def test_alpha_is_composited_onto_white(tmp_path):
    half_red = solid("RGBA", (255, 0, 0, 128))
    expected = 255 * (1 - 128 / 255) + np.float32([255, 0, 0]) * 128 / 255
    assert_solid(load_image(save(half_red, tmp_path / "rgba.png"), SIZE), expected, tolerance=1)
    transparent_gray = solid("LA", (0, 0))
    assert_solid(load_image(save(transparent_gray, tmp_path / "la.png"), SIZE), (255, 255, 255))
    assert_solid(load_image(save(solid("RGBA", (*RED, 255)), tmp_path / "opaque.webp", lossless=True), SIZE), RED)


def test_palette_with_transparency_and_gif_first_frame(tmp_path):
    palette = solid("P", 1)
    palette.putpalette([0, 255, 0, 255, 0, 0] + [0] * 762)  # index 0 green, index 1 red
    assert_solid(load_image(save(palette, tmp_path / "opaque.png"), SIZE), (255, 0, 0))
    assert_solid(load_image(save(palette, tmp_path / "clear.png", transparency=1), SIZE), (255, 255, 255))

    frames = [solid("RGB", (0, 0, 255)), solid("RGB", (255, 0, 0))]
    path = save(frames[0], tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert Image.open(path).n_frames == 2
    assert_solid(load_image(path, SIZE), (0, 0, 255))


def test_cmyk_jpeg_becomes_rgb_like_pillow_converts_it(tmp_path):
    cmyk = solid("CMYK", (0, 255, 255, 0))  # pure red ink
    path = save(cmyk, tmp_path / "cmyk.jpg", quality=100)
    expected = np.asarray(Image.open(path).convert("RGB").resize((SIZE[1], SIZE[0])), np.float32)
    pixels = load_image(path, SIZE)
    np.testing.assert_array_equal(pixels, expected)
    np.testing.assert_allclose(pixels[0, 0], [255, 0, 0], atol=6)


def test_missing_file_directory_and_non_image_are_unreadable(tmp_path):
    with pytest.raises(UnreadableImageError, match="file not found") as caught:
        load_image(tmp_path / "missing.png", SIZE)
    assert isinstance(caught.value, ValueError) and caught.value.reason == "file not found"
    assert caught.value.source == str(tmp_path / "missing.png")
    with pytest.raises(UnreadableImageError, match="directory"):
        load_image(tmp_path, SIZE)
    (tmp_path / "notes.png").write_text("just some text")
    with pytest.raises(UnreadableImageError, match="not an image"):
        load_image(tmp_path / "notes.png", SIZE)
    with pytest.raises(UnreadableImageError, match="'<bytes>'"):
        load_image(b"\x00\x01garbage", SIZE)


@pytest.mark.parametrize("file_name", ["cut.jpg", "cut.png"])
def test_truncated_file_is_unreadable(tmp_path, file_name):
    pattern = Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    pattern.save(buffer, format="JPEG" if file_name.endswith("jpg") else "PNG")
    path = tmp_path / file_name
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(UnreadableImageError, match=file_name):
        load_image(path, SIZE)


def test_image_size_must_be_positive(tmp_path):
    path = save(solid("RGB", RED), tmp_path / "image.png")
    with pytest.raises(ValueError, match="image_size"):
        load_image(path, (0, 10))


def test_a_named_pipe_is_refused_without_opening_it(tmp_path):
    pipe = tmp_path / "photo.png"
    os.mkfifo(pipe)  # opening it for reading would block until a writer appears
    with pytest.raises(UnreadableImageError, match="not a regular file"):
        load_image(pipe, (8, 8))


def test_an_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path, monkeypatch):
    path = save(solid("RGB", (1, 2, 3), size=(300, 200)), tmp_path / "wide.png")
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded an image over the limit"))
    with pytest.raises(UnreadableImageError) as caught:
        load_image(path, (8, 8), max_pixels=300 * 200 - 1)
    assert caught.value.reason == "300x200 pixels is more than the limit of 59999 (max_image_pixels)"


def test_a_huge_image_in_a_small_png_is_refused_at_the_default_limit():
    buffer = io.BytesIO()
    Image.new("1", (7000, 6000)).save(buffer, format="PNG")  # 42 megapixels in a few kilobytes
    assert len(buffer.getvalue()) < 100_000
    with pytest.raises(UnreadableImageError, match="7000x6000 pixels is more than the limit of 40000000"):
        load_image(buffer.getvalue(), (8, 8))


# The first box of an iPhone photo (`IMG_1234.HEIC`): an ISO media `ftyp` box of brand `heic`.
HEIC_START = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"


def test_a_heic_photo_is_named_as_one_with_what_to_do(tmp_path):
    # Pillow cannot open HEIC: the reason was "not an image file, or a format Pillow cannot read".
    path = tmp_path / "IMG_1234.HEIC"
    path.write_bytes(HEIC_START + bytes(2000))
    for source in (path, path.read_bytes()):
        with pytest.raises(UnreadableImageError) as caught:
            load_image(source, SIZE)
        assert caught.value.reason.startswith("a HEIC (HEIF) photo, which mmkeras cannot read: convert it to JPEG")


def test_the_pixel_limit_counts_a_jpegs_reduced_decode(tmp_path):
    # A 48 MP phone photo (8064x6048) was refused at the 40 MP default though a 224x224 model decodes it at 1/8:
    # here a 300x200 JPEG under a limit of 59999 pixels, decoded at 1/8 for an 8x8 image.
    photo = save(solid("RGB", RED, size=(300, 200)), tmp_path / "photo.jpg", quality=95)
    pixels = load_image(photo, (8, 8), max_pixels=59999, jpeg_draft_factor=2)
    np.testing.assert_allclose(pixels, np.broadcast_to(np.float32(RED), (8, 8, 3)), atol=3)
    with pytest.raises(UnreadableImageError) as caught:  # decoded whole: refused, as a PNG of that size is
        load_image(photo, (8, 8), max_pixels=59999)
    assert caught.value.reason == "300x200 pixels is more than the limit of 59999 (max_image_pixels)"
    with pytest.raises(UnreadableImageError) as caught:  # its reduced decode (38x25) over the limit too
        load_image(photo, (8, 8), max_pixels=949, jpeg_draft_factor=2)
    assert caught.value.reason == "300x200 pixels (decoded at 1/8) is more than the limit of 949 (max_image_pixels)"
