"""The browser's image preprocessing (mmkeras/web/site/preprocessing.js) against Pillow, run in Node.

Needs `node` (skipped without it). Resizing (bilinear, bicubic, nearest), timm's centre crop and alpha
compositing are bit-identical to the Python runtime, which runs Pillow's two passes in a fixed order
(docs/design.md, "Pillow's resize in JavaScript").
"""

import base64
import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmkeras.preprocessing.image import load_image

PREPROCESSING_JS = Path(__file__).resolve().parents[1] / "mmkeras" / "web" / "site" / "preprocessing.js"
NODE_SCRIPT = f"""
import {{imageTensor}} from {json.dumps(str(PREPROCESSING_JS))};
let input = '';
for await (const chunk of process.stdin) input += chunk;
const results = JSON.parse(input).map((c) => Array.from(imageTensor(
  new Uint8Array(Buffer.from(c.rgba, 'base64')), c.width, c.height, c.size,
  {{alpha_background: [255, 255, 255], resample: c.resample, crop_pct: c.crop_pct}})));
process.stdout.write(JSON.stringify(results));
"""

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="needs node: apt-get install -y nodejs")


def browser_pixels(
    images: list[np.ndarray], sizes: list[tuple[int, int]], resample: str = "bilinear", crop_pct: float | None = None
) -> list[np.ndarray]:
    cases = [
        {"rgba": base64.b64encode(rgba.tobytes()).decode(), "width": rgba.shape[1], "height": rgba.shape[0],
         "size": list(size), "resample": resample, "crop_pct": crop_pct}
        for rgba, size in zip(images, sizes)
    ]
    completed = subprocess.run(
        ["node", "--input-type=module", "-e", NODE_SCRIPT], input=json.dumps(cases),
        capture_output=True, text=True, check=True,
    )
    decoded = json.loads(completed.stdout)
    return [np.asarray(pixels, np.float32).reshape(*size, 3) for pixels, size in zip(decoded, sizes)]


def pillow_pixels(
    rgba: np.ndarray, size: tuple[int, int], resample: str = "bilinear", crop_pct: float | None = None
) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG")
    return load_image(buffer.getvalue(), size, resample, crop_pct=crop_pct)


def random_rgba(rng, height, width):
    rgba = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    rgba[: height // 2, :, 3] = 255  # opaque and translucent regions both
    return rgba


def test_one_axis_resizes_and_compositing_are_bit_identical_to_pillow():
    rng = np.random.default_rng(0)
    shapes = [((37, 50), (37, 32)), ((37, 50), (16, 50)), ((7, 9), (7, 64)), ((300, 20), (224, 20)),
              ((32, 32), (32, 32))]
    images = [random_rgba(rng, *shape) for shape, _ in shapes]
    sizes = [size for _, size in shapes]
    for image, size, pixels in zip(images, sizes, browser_pixels(images, sizes)):
        np.testing.assert_array_equal(pixels, pillow_pixels(image, size), err_msg=f"{image.shape} -> {size}")


@pytest.mark.parametrize("resample", ["bilinear", "bicubic", "nearest"])
def test_any_resize_is_bit_identical_to_the_python_runtime(resample):
    rng = np.random.default_rng(1)
    images = [random_rgba(rng, *rng.integers(2, 90, 2)) for _ in range(30)]
    sizes = [tuple(int(side) for side in rng.integers(1, 90, 2)) for _ in images]
    for image, size, pixels in zip(images, sizes, browser_pixels(images, sizes, resample)):
        np.testing.assert_array_equal(pixels, pillow_pixels(image, size, resample), err_msg=f"{image.shape} -> {size}")


def quadrants(height, width):
    """Opaque RGBA: four coloured quadrants, a checkerboard in the top-left one, and a one-pixel red frame."""
    rgba = np.full((height, width, 4), 255, np.uint8)
    rgba[: height // 2, width // 2 :, :3] = (0, 0, 255)
    rgba[height // 2 :, : width // 2, :3] = (0, 160, 0)
    rgba[height // 2 :, width // 2 :, :3] = (250, 200, 0)
    checks = (np.add.outer(np.arange(height // 2), np.arange(width // 2)) % 2).astype(bool)
    rgba[: height // 2, : width // 2, :3][checks] = (0, 0, 0)
    rgba[[0, -1], :, :3] = rgba[:, [0, -1], :3] = (255, 0, 0)
    return rgba


@pytest.mark.parametrize("resample", ["bilinear", "bicubic", "nearest"])
def test_timms_centre_crop_is_the_same_in_the_browser(resample):
    images = [quadrants(60, 80), quadrants(97, 41), quadrants(33, 33)]
    sizes = [(32, 32), (24, 16), (32, 32)]
    for image, size, pixels in zip(images, sizes, browser_pixels(images, sizes, resample, crop_pct=0.875)):
        cropped = pillow_pixels(image, size, resample, crop_pct=0.875)
        np.testing.assert_array_equal(pixels, cropped, err_msg=f"{image.shape} -> {size}")
        assert not np.array_equal(cropped, pillow_pixels(image, size, resample))


@pytest.mark.parametrize("crop_pct", [0.875, 0.95, 1.0])
def test_the_centre_crop_is_the_same_for_any_sizes(crop_pct):
    rng = np.random.default_rng(3)
    images = [random_rgba(rng, *rng.integers(2, 90, 2)) for _ in range(20)]
    sizes = [tuple(int(side) for side in rng.integers(1, 60, 2)) for _ in images]
    for image, size, pixels in zip(images, sizes, browser_pixels(images, sizes, "bicubic", crop_pct)):
        expected = pillow_pixels(image, size, "bicubic", crop_pct)
        np.testing.assert_array_equal(pixels, expected, err_msg=f"{image.shape} -> {size}")
