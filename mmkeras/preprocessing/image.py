"""`load_image`: one image file (or its bytes) to an RGB float array.

Training, evaluation and the device runtime all call this one function, so an
image is preprocessed identically everywhere by construction. The steps, in
order (what a mobile developer re-implements):

1. refuse what is not a regular file (a named pipe or a device would block or
   never end) and an image of more than `max_pixels` pixels (read from its
   header, before anything is decoded: a small PNG can hold a huge image);
   then decode the first frame (JPEG, PNG, BMP, GIF, WebP, and what else
   Pillow reads); with a `jpeg_draft_factor` (new runs: 2) a JPEG is
   decoded at the smallest DCT scale (1/2, 1/4 or 1/8; libjpeg's
   `scale_denom`, Pillow's `draft`) whose size stays at least that factor
   times the resize size on both axes, ten times faster for a phone photo
   and within a few units of the full decode
   (docs/design.md#photo-decoding-at-reduced-dct-scale);
2. apply the EXIF orientation tag;
3. convert to 8-bit RGB: 16-bit grayscale is scaled by 255/65535; an alpha
   channel or a transparent palette colour is composited onto white; palette,
   grayscale, bilevel and CMYK images are converted by Pillow;
4. resize to (width, height) with Pillow's bilinear resampling (which
   averages over the source area when shrinking), or the bicubic or nearest
   resampling a pretrained vision checkpoint was trained with; with a
   `crop_pct` (timm's evaluation transform), resize keeping the aspect ratio
   to cover `floor(size / crop_pct)` and cut the centre `size` out
   (`centre_crop_geometry`);
5. return float32 values in 0..255 (normalisation happens inside the model).
"""

import contextlib
import io
import math
import os
import stat
import struct
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

BACKGROUND = (255, 255, 255)
# The file suffixes a folder of images is searched for (`mmkeras index`, `mmkeras manifest`).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
# The resampling filters a checkpoint's preprocessing may name (Pillow's).
RESAMPLE_FILTERS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}
DEFAULT_RESAMPLE = "bilinear"
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa")
# Modes holding integers wider than 8 bits; their data are 16-bit (Pillow
# opens 16-bit grayscale PNG/TIFF as `I;16*`, older versions as `I`).
_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
_SIXTEEN_BIT_MAX = 65535
# The default largest image, in pixels: 40 megapixels (a 7300x5500 photo) decode to 120 MB of RGB,
# far below Pillow's own bomb limit (89 MP warns, 179 MP fails) that lets one image take gigabytes.
MAX_IMAGE_PIXELS = 40_000_000
# The `ftyp` brands of HEIF files (an iPhone's default photo format, `.HEIC`), which Pillow cannot open: their
# error says what the file is and what to do, where "not an image file" left a phone user guessing.
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")
HEIF_REASON = ("a HEIC (HEIF) photo, which mmkeras cannot read: convert it to JPEG (an iPhone saves JPEG with "
               "Settings > Camera > Formats > Most Compatible)")
# What new runs decode JPEGs with: a DCT scale keeping at least twice the resize size, so the resize
# still averages over two source pixels or more (measured on 12 MP photos to 224x224: at most 2 units
# and 0.16 on average from the full decode, 0.14x its time; a factor of 1 is 0.10x but up to 10 units).
JPEG_DRAFT_FACTOR = 2
# EXIF orientations that swap width and height (transpose, rotations by 90 and 270 degrees).
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)
# Where the file's top-left corner is once `exif_transpose` displays it: (on the right, at the bottom).
_ORIGIN_CORNER = {2: (1, 0), 3: (1, 1), 4: (0, 1), 6: (1, 0), 7: (1, 1), 8: (0, 1)}


class UnreadableImageError(ValueError):
    """An image that is missing, not an image, truncated or otherwise undecodable.

    Args:
        source: the path of the image, or `<bytes>` when it was given as bytes.
        reason: what is wrong with it, e.g. `file not found`.

    Example:
    >>> str(UnreadableImageError("cat.png", "file not found"))
    "cannot read image 'cat.png': file not found"
    """

    def __init__(self, source: str, reason: str):
        self.source = source
        self.reason = reason
        super().__init__(f"cannot read image {source!r}: {reason}")


def load_image(
    source: str | Path | bytes,
    image_size: tuple[int, int],
    resample: str = DEFAULT_RESAMPLE,
    *,
    crop_pct: float | None = None,
    max_pixels: int = MAX_IMAGE_PIXELS,
    jpeg_draft_factor: int | None = None,
) -> np.ndarray:
    """Decode, orient, convert to RGB and resize one image.

    Args:
        source: a file path, or the encoded file's bytes.
        image_size: `(height, width)` of the result.
        resample: the resize filter: `bilinear`, `bicubic` or `nearest`.
        crop_pct: `None` resizes the whole image to `image_size`; a share in
            (0, 1] resizes it to cover `image_size / crop_pct` and keeps the
            centre `image_size` (timm's centre crop).
        max_pixels: the largest width x height accepted.
        jpeg_draft_factor: `None` decodes every pixel; an integer `k`
            decodes a JPEG at the smallest DCT scale (1/2, 1/4, 1/8) whose
            size is at least `k` times the resize size on both axes (a JPEG
            under `2k` times that size is decoded whole, so small images
            stay exact); the resize then runs as without it.

    Returns:
        float32 array `[height, width, 3]`, RGB values in 0..255.

    Raises:
        UnreadableImageError: the file is missing, not a regular file, too
            large or cannot be decoded.

    Example:
    >>> from PIL import Image
    >>> buffer = io.BytesIO()
    >>> Image.new("RGB", (64, 48), (255, 0, 0)).save(buffer, format="PNG")
    >>> pixels = load_image(buffer.getvalue(), (32, 32))
    >>> pixels.shape, pixels.dtype, pixels[0, 0].tolist()
    ((32, 32, 3), dtype('float32'), [255.0, 0.0, 0.0])
    """
    height, width = image_size
    if height < 1 or width < 1:
        raise ValueError(f"image_size must be positive (height, width), got {image_size}")
    if jpeg_draft_factor is not None and jpeg_draft_factor < 1:
        raise ValueError(f"jpeg_draft_factor must be None or a positive integer, got {jpeg_draft_factor}")
    name = "<bytes>" if isinstance(source, (bytes, bytearray)) else str(source)
    if not isinstance(source, (bytes, bytearray)):
        _check_regular_file(source, name)
    file = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    with _decoding_errors(name, source), Image.open(file) as image:
        # Whole decodes are checked before getexif(), which decodes a PNG; a reduced JPEG once its scale is known.
        decoded_whole = jpeg_draft_factor is None or not isinstance(image, JpegImagePlugin.JpegImageFile)
        if decoded_whole:
            _check_pixel_count(image.size, 1, name, max_pixels)
        orientation = image.getexif().get(ExifTags.Base.Orientation)
        full_size = image.size
        # The geometry comes from the full size, so a reduced decode resizes and crops to the same sizes.
        resize_size, crop_box = resize_geometry(_turned(full_size, orientation), image_size, crop_pct)
        if jpeg_draft_factor is None:
            scale = 1
        else:  # the resize size in the file's orientation
            scale = _draft_jpeg(image, _turned(resize_size, orientation), jpeg_draft_factor)
        if not decoded_whole:
            _check_pixel_count(full_size, scale, name, max_pixels)
        image.load()  # the first frame, fully decoded (so a truncated file fails here, not later)
    source_box = None if scale == 1 else draft_source_box(full_size, scale, orientation)
    rgb = _to_rgb(ImageOps.exif_transpose(image), name)
    resized = _resize(rgb, resize_size, resample, source_box)
    return np.asarray(resized if crop_box is None else resized.crop(crop_box), dtype=np.float32)


def resize_geometry(
    source_size: tuple[int, int], image_size: tuple[int, int], crop_pct: float | None
) -> tuple[tuple[int, int], tuple[int, int, int, int] | None]:
    """The `(width, height)` an oriented image is resized to, and the box then kept (`None`: all of it).

    Example:
    >>> resize_geometry((640, 480), (224, 224), None)
    ((224, 224), None)
    """
    if crop_pct is None:
        height, width = image_size
        return (width, height), None
    return centre_crop_geometry(source_size, image_size, crop_pct)


def draft_source_box(
    full_size: tuple[int, int], scale: int, orientation: int | None
) -> tuple[float, float, float, float]:
    """The region of a displayed 1/`scale` JPEG decode that holds the photo (Pillow's `thumbnail` box).

    A 1/s decode of a W x H JPEG has `ceil(W / s) x ceil(H / s)` pixels, of which the photo covers
    `W / s x H / s` from the file's top-left corner; the last column and row are partly padding. Resizing
    from this box keeps the full decode's geometry (a 1003x751 photo at 1/4, centre-cropped to 56x56: at
    most 3 units from the full decode with the box, 13 without).

    Args:
        full_size: the JPEG's `(width, height)` in the file.
        scale: the DCT scale's denominator (2, 4 or 8).
        orientation: the EXIF orientation tag (`None`: upright).

    Returns:
        `(left, top, right, bottom)` in the pixels of the decode once `exif_transpose` has oriented it.

    Example:
    >>> draft_source_box((1003, 751), 4, None)
    (0.0, 0.0, 250.75, 187.75)
    >>> draft_source_box((1003, 751), 4, 6)  # rotated 90 degrees clockwise: the padding is on the left
    (0.25, 0.0, 188.0, 250.75)
    """
    width, height = full_size[0] / scale, full_size[1] / scale
    decoded_width, decoded_height = math.ceil(width), math.ceil(height)
    if orientation in _SWAPPING_ORIENTATIONS:
        width, height, decoded_width, decoded_height = height, width, decoded_height, decoded_width
    right, bottom = _ORIGIN_CORNER.get(orientation or 1, (0, 0))
    left, top = (decoded_width - width) * right, (decoded_height - height) * bottom
    return (float(left), float(top), left + width, top + height)


def _turned(size: tuple[int, int], orientation: int | None) -> tuple[int, int]:
    """`size` with width and height swapped when the EXIF orientation turns the photo by 90 or 270 degrees."""
    return (size[1], size[0]) if orientation in _SWAPPING_ORIENTATIONS else size


def _draft_jpeg(image: Image.Image, size: tuple[int, int], factor: int) -> int:
    """Ask libjpeg for the smallest DCT scale keeping `factor` x `size`; the scale's denominator.

    Pillow's `draft` picks the scale `s` in 8, 4, 2, 1 with `s <= min(W // w, H // h)` for the
    requested `(w, h)` (in the file's orientation) and decodes `ceil(W / s) x ceil(H / s)` pixels.
    """
    if not isinstance(image, JpegImagePlugin.JpegImageFile):  # MPO, a phone's JPEG with previews, is one
        return 1
    full_width = image.width
    drafted = image.draft(None, (size[0] * factor, size[1] * factor))  # None, or (mode, (0, 0, W / s, H / s))
    return 1 if drafted is None else round(full_width / drafted[1][2])


def _resize(
    rgb: Image.Image,
    size: tuple[int, int],
    resample: str,
    source_box: tuple[float, float, float, float] | None = None,
) -> Image.Image:
    """Pillow's resize to `(width, height)` (of `source_box` when given), the horizontal pass always first.

    Pillow resamples one axis, rounds to 8 bits, then the other; the Pillow
    13.0.0 wheel installed here sometimes runs the vertical pass first (up to
    one unit apart with bilinear, 22 with bicubic, whose kernel overshoots).
    Two one-axis resizes fix the order, so any port that runs the passes in
    this order (the browser's preprocessing.js) gets the same bytes.
    """
    width, height = size
    resample_filter = RESAMPLE_FILTERS[resample]
    left, top, right, bottom = source_box or (0, 0, rgb.width, rgb.height)
    horizontal = (rgb.width, left, right) != (width, 0, width)  # Pillow's need_horizontal
    vertical = (rgb.height, top, bottom) != (height, 0, height)
    if resample != "nearest" and horizontal and vertical:
        rgb = rgb.resize((width, rgb.height), resample_filter, box=(left, 0, right, rgb.height))
        left, right = 0, width
    return rgb.resize((width, height), resample_filter, box=(left, top, right, bottom))


def centre_crop_geometry(
    source_size: tuple[int, int], image_size: tuple[int, int], crop_pct: float
) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """Where timm's centre crop resizes an image to and which box it keeps.

    timm's evaluation transform resizes to `floor(size / crop_pct)` keeping
    the aspect ratio (torchvision's `Resize`: the shorter side gets the target,
    the longer one `int(target * long / short)`) and cuts the centre out
    (`CenterCrop`: offsets `round(margin / 2)`, halves to even).

    Args:
        source_size: the image's `(width, height)`, as Pillow gives it.
        image_size: `(height, width)` of the result.
        crop_pct: the share of the resized image kept, in (0, 1].

    Returns:
        `((width, height) to resize to, (left, top, right, bottom) box to keep)`.

    Example:
    >>> centre_crop_geometry((640, 480), (224, 224), 0.875)
    ((341, 256), (58, 16, 282, 240))
    """
    if not 0.0 < crop_pct <= 1.0:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    source_width, source_height = source_size
    height, width = image_size
    target_height, target_width = math.floor(height / crop_pct), math.floor(width / crop_pct)
    if source_width * target_height <= source_height * target_width:  # the width is the shorter side
        scaled_width, scaled_height = target_width, max(int(target_width * source_height / source_width), height)
    else:
        scaled_width, scaled_height = max(int(target_height * source_width / source_height), width), target_height
    top, left = round((scaled_height - height) / 2), round((scaled_width - width) / 2)
    return (scaled_width, scaled_height), (left, top, left + width, top + height)


def _check_regular_file(path: str | Path, name: str):
    """Only regular files are opened: reading a named pipe or a device could block forever."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise UnreadableImageError(name, "file not found") from None
    except (OSError, ValueError) as error:  # ValueError: a NUL in the path
        raise UnreadableImageError(name, getattr(error, "strerror", None) or str(error)) from None
    if stat.S_ISDIR(mode):
        raise UnreadableImageError(name, "it is a directory")
    if not stat.S_ISREG(mode):
        raise UnreadableImageError(name, "not a regular file (a pipe, socket or device)")


def _check_pixel_count(full_size: tuple[int, int], scale: int, name: str, max_pixels: int):
    """Refuse an image whose decode (at the DCT scale 1/`scale`) has more than `max_pixels` pixels.

    The limit bounds what decoding costs, so a JPEG counts the pixels of its reduced decode: a 48 MP phone
    photo (8064x6048) decodes 1008x756 pixels for a 224x224 model, and is refused only where it is decoded whole.
    """
    width, height = full_size  # from the header: nothing decoded yet
    if math.ceil(width / scale) * math.ceil(height / scale) > max_pixels:
        decoded = "" if scale == 1 else f" (decoded at 1/{scale})"
        raise UnreadableImageError(
            name, f"{width}x{height} pixels{decoded} is more than the limit of {max_pixels} (max_image_pixels)"
        )


@contextlib.contextmanager
def _decoding_errors(name: str, source: str | Path | bytes):
    """Pillow's and the file system's errors while opening and decoding `source`, as `UnreadableImageError`."""
    try:
        yield
    except UnreadableImageError:
        raise
    except FileNotFoundError:
        raise UnreadableImageError(name, "file not found") from None
    except IsADirectoryError:
        raise UnreadableImageError(name, "it is a directory") from None
    except UnidentifiedImageError:
        reason = HEIF_REASON if _is_heif(source) else "not an image file, or a format Pillow cannot read"
        raise UnreadableImageError(name, reason) from None
    except Image.DecompressionBombError as error:
        raise UnreadableImageError(name, str(error)) from None
    except OSError as error:
        raise UnreadableImageError(name, error.strerror or str(error)) from None
    except (SyntaxError, EOFError, ValueError, struct.error, ZeroDivisionError) as error:
        # Pillow's plugins signal corrupt data with these (measured by fuzzing random bytes)
        raise UnreadableImageError(name, f"corrupt image data ({error})") from None


def _is_heif(source: str | Path | bytes) -> bool:
    """Whether `source` starts as a HEIF file does: an ISO media `ftyp` box of a HEIF brand."""
    if isinstance(source, (bytes, bytearray)):
        head = bytes(source[:12])
    else:
        try:
            with open(source, "rb") as file:
                head = file.read(12)
        except OSError:
            return False
    return head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS


def _to_rgb(image: Image.Image, name: str) -> Image.Image:
    if image.mode in _SIXTEEN_BIT_MODES:
        image = _sixteen_bit_to_gray(image)
    try:
        if image.mode in _ALPHA_MODES or "transparency" in image.info:
            background = Image.new("RGBA", image.size, (*BACKGROUND, 255))
            return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
        return image.convert("RGB")
    except ValueError as error:  # a mode Pillow cannot convert, e.g. "La"
        raise UnreadableImageError(name, f"unsupported image mode {image.mode} ({error})") from None


def _sixteen_bit_to_gray(image: Image.Image) -> Image.Image:
    """16-bit grayscale to 8-bit by value range (x * 255 / 65535, rounded)."""
    values = np.asarray(image).astype(np.float64)
    scaled = np.rint(np.clip(values, 0, _SIXTEEN_BIT_MAX) * (255 / _SIXTEEN_BIT_MAX))
    return Image.fromarray(scaled.astype(np.uint8))
