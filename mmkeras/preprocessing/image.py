"""`load_image`: one image file (or its bytes) to an RGB float array.

Training, evaluation and the device runtime all call this one function, so an
image is preprocessed identically everywhere by construction. The steps, in
order (what a mobile developer re-implements):

1. refuse what is not a regular file (a named pipe or a device would block or
   never end) and an image of more than `max_pixels` pixels (read from its
   header, before anything is decoded: a small PNG can hold a huge image);
   then decode the first frame (JPEG, PNG, BMP, GIF, WebP, and what else
   Pillow reads);
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

import io
import math
import os
import stat
import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

BACKGROUND = (255, 255, 255)
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
    name = "<bytes>" if isinstance(source, (bytes, bytearray)) else str(source)
    if not isinstance(source, (bytes, bytearray)):
        _check_regular_file(source, name)
    image = _decode(source, name, max_pixels)
    rgb = _to_rgb(ImageOps.exif_transpose(image), name)
    if crop_pct is None:
        return np.asarray(_resize(rgb, (width, height), resample), dtype=np.float32)
    scaled_size, box = centre_crop_geometry(rgb.size, image_size, crop_pct)
    return np.asarray(_resize(rgb, scaled_size, resample).crop(box), dtype=np.float32)


def _resize(rgb: Image.Image, size: tuple[int, int], resample: str) -> Image.Image:
    """Pillow's resize to `(width, height)`, the horizontal pass always first.

    Pillow resamples one axis, rounds to 8 bits, then the other; the Pillow
    13.0.0 wheel installed here sometimes runs the vertical pass first (up to
    one unit apart with bilinear, 22 with bicubic, whose kernel overshoots).
    Two one-axis resizes fix the order, so any port that runs the passes in
    this order (the browser's preprocessing.js) gets the same bytes.
    """
    width, height = size
    resample_filter = RESAMPLE_FILTERS[resample]
    if resample != "nearest" and rgb.width != width and rgb.height != height:
        rgb = rgb.resize((width, rgb.height), resample_filter)
    return rgb.resize((width, height), resample_filter)


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


def _decode(source: str | Path | bytes, name: str, max_pixels: int) -> Image.Image:
    """The first frame, fully decoded (so a truncated file fails here, not later)."""
    file = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with Image.open(file) as image:
            width, height = image.size  # from the header: nothing decoded yet
            if width * height > max_pixels:
                raise UnreadableImageError(
                    name, f"{width}x{height} pixels is more than the limit of {max_pixels} (max_image_pixels)"
                )
            image.load()
            return image
    except UnreadableImageError:
        raise
    except FileNotFoundError:
        raise UnreadableImageError(name, "file not found") from None
    except IsADirectoryError:
        raise UnreadableImageError(name, "it is a directory") from None
    except UnidentifiedImageError:
        raise UnreadableImageError(name, "not an image file, or a format Pillow cannot read") from None
    except Image.DecompressionBombError as error:
        raise UnreadableImageError(name, str(error)) from None
    except OSError as error:
        raise UnreadableImageError(name, error.strerror or str(error)) from None
    except (SyntaxError, EOFError, ValueError, struct.error, ZeroDivisionError) as error:
        # Pillow's plugins signal corrupt data with these (measured by fuzzing random bytes)
        raise UnreadableImageError(name, f"corrupt image data ({error})") from None


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
