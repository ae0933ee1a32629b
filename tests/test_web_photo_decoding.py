"""The browser's reduced JPEG decoding (preprocessing.js `decodeImage` with `jpeg_draft_factor`) against Python.

The resize from a draft's source box runs in Node; the decode itself in headless Chromium, whose WebCodecs
ImageDecoder scales a JPEG by the same DCT factor as Pillow's `draft` (both libjpeg-turbo).
docs/design.md#photo-decoding-at-reduced-dct-scale says what is exact and what is within a tolerance.
"""

import base64
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_jpeg_draft import jpeg_bytes, photo

from mmkeras.preprocessing.image import _resize, load_image
from tests.helpers.headless_chromium import find_chromium, served_page_text

SITE = Path(__file__).resolve().parents[1] / "mmkeras" / "web" / "site"
NODE_SCRIPT = f"""
import {{resizeImage}} from {json.dumps(str(SITE / "preprocessing.js"))};
let input = '';
for await (const chunk of process.stdin) input += chunk;
const results = JSON.parse(input).map((c) => Array.from(resizeImage(
  new Uint8Array(Buffer.from(c.rgb, 'base64')), c.width, c.height, c.size, c.resample, null,
  {{fullWidth: c.width, fullHeight: c.height, box: c.box}})));
process.stdout.write(JSON.stringify(results));
"""
# The page decodes each listed photo as app.js does and returns the model's image input as bytes.
PAGE = """<!doctype html><html><body><pre id="result"></pre><script type="module">
import {decodeImage, imageTensor} from './preprocessing.js';
const cases = await (await fetch('cases.json')).json();
const results = [];
try {
  for (const {file, preprocessing} of cases) {
    const blob = await (await fetch(file)).blob();
    const {rgba, width, height, draft} = await decodeImage(blob, preprocessing);
    const pixels = Uint8Array.from(imageTensor(rgba, width, height, preprocessing.image_size,
                                               preprocessing.image, draft));
    let text = '';
    for (let i = 0; i < pixels.length; i += 8192) text += String.fromCharCode(...pixels.subarray(i, i + 8192));
    results.push({pixels: btoa(text), drafted: draft !== null});
  }
  document.getElementById('result').textContent = JSON.stringify(results);
} catch (error) {
  document.getElementById('result').textContent = JSON.stringify({error: String(error)});
}
</script></body></html>
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node: apt-get install -y nodejs")
@pytest.mark.parametrize("resample", ["bilinear", "bicubic", "nearest"])
def test_resizing_from_a_fractional_source_box_is_bit_identical_to_pillow(resample):
    rng = np.random.default_rng(2)
    cases, expected = [], []
    for _ in range(20):
        height, width = (int(side) for side in rng.integers(8, 90, 2))
        rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        left, top = rng.uniform(0, 1, 2) * rng.integers(0, 2, 2)  # often 0, as a draft's box is
        box = [float(left), float(top), float(width - rng.uniform(0, 1)), float(height - rng.uniform(0, 1))]
        size = [int(side) for side in rng.integers(1, 60, 2)]
        cases.append({"rgb": base64.b64encode(rgb.tobytes()).decode(), "width": width, "height": height,
                      "size": size, "resample": resample, "box": box})
        expected.append(np.asarray(_resize(Image.fromarray(rgb), (size[1], size[0]), resample, tuple(box))))
    completed = subprocess.run(["node", "--input-type=module", "-e", NODE_SCRIPT], input=json.dumps(cases),
                               capture_output=True, text=True, check=True)
    for case, pixels, reference in zip(cases, json.loads(completed.stdout), expected):
        np.testing.assert_array_equal(np.asarray(pixels, np.uint8).reshape(reference.shape), reference,
                                      err_msg=f"{case['width']}x{case['height']} {case['box']} -> {case['size']}")


def preprocessing(image_size, crop_pct=None, factor=2, resample="bilinear"):
    return {"image_size": list(image_size), "image": {"alpha_background": [255, 255, 255], "resample": resample,
                                                      "crop_pct": crop_pct, "jpeg_draft_factor": factor}}


def browser_tensors(folder: Path, cases: list[dict]) -> list[dict]:
    shutil.copy(SITE / "preprocessing.js", folder)
    (folder / "index.html").write_text(PAGE)
    (folder / "cases.json").write_text(json.dumps(cases))
    results = json.loads(served_page_text(folder, "index.html", "result"))
    assert "error" not in results, results
    return results


@pytest.mark.browser
@pytest.mark.skipif(find_chromium() is None, reason="needs chromium: apt-get install -y chromium")
def test_chromium_decodes_large_jpegs_at_the_python_draft_scale_with_the_same_pixels(tmp_path):
    # Odd sizes (partly padded last decoded column and row) in every EXIF orientation, a centre crop, bicubic,
    # a photo too small to draft, and a bundle without the key (full decode).
    cases, expected = [], []
    for orientation in range(1, 9):
        cases.append(("odd", orientation, preprocessing((40, 56))))
    cases += [("odd", 6, preprocessing((56, 56), crop_pct=0.875, resample="bicubic")),
              ("small", 1, preprocessing((32, 32))), ("odd", 1, preprocessing((40, 56), factor=None))]
    sizes = {"odd": (1003, 751), "small": (120, 90)}
    page_cases = []
    for index, (kind, orientation, settings) in enumerate(cases):
        source = jpeg_bytes(photo(*sizes[kind]), orientation=orientation)
        (tmp_path / f"{index}.jpg").write_bytes(source)
        page_cases.append({"file": f"{index}.jpg", "preprocessing": settings})
        image = settings["image"]
        expected.append(load_image(source, tuple(settings["image_size"]), image["resample"],
                                   crop_pct=image["crop_pct"], jpeg_draft_factor=image["jpeg_draft_factor"]))
    results = browser_tensors(tmp_path, page_cases)
    for (kind, orientation, settings), result, reference in zip(cases, results, expected):
        pixels = np.frombuffer(base64.b64decode(result["pixels"]), np.uint8).reshape(reference.shape)
        assert result["drafted"] == (kind == "odd" and settings["image"]["jpeg_draft_factor"] is not None)
        np.testing.assert_array_equal(pixels, reference, err_msg=f"{kind} orientation {orientation} {settings}")

