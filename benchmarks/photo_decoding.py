"""Photo decoding cost, side by side in one run: 12 MP JPEGs to 224x224 (issue #18, items 1 and 6).

Prints one JSON object (progress on stderr):

- `python_runtime`: `load_image` with a full decode (what bundles without `jpeg_draft_factor` do) against
  reduced DCT scale keeping 1, 2 (the default) and 4 times the resize size: p50 ms, the ratio to the full
  decode, and the pixel difference from it (max and mean over every value, 0..255);
- `browser`: in headless Chromium, the page's options: a full decode + preprocessing.js's Pillow resize (today),
  WebCodecs ImageDecoder at the draft scale + the same resize (`decodeImage` with the bundle's policy),
  `createImageBitmap` resizing to the draft size then the JS resize, and `createImageBitmap` resizing straight
  to 224x224; each with its p50 ms and its pixel difference from the Python runtime's draft and full decodes;
- `training_pipeline`: the training input pipeline (`make_dataset`, whose map is the preprocessor's
  `load_images`) over the 12 MP photos, full and drafted, and over the same photos shrunk to 400x300: ms per
  photo and the extra cost of 12 MP over 400x300 as a share of today's 12 MP decode time.

Photos: scikit-image's chelsea, coffee, astronaut and rocket upscaled (Lanczos) to 4000x3000, JPEG quality 92.
Timings are interleaved (each round runs every option once), so a busy machine slows all options alike.

    python benchmarks/photo_decoding.py                  # everything, ~3 minutes on 2 busy cores
    python benchmarks/photo_decoding.py --skip-browser   # without Chromium
"""

import argparse
import base64
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.helpers.headless_chromium: the DevTools-over-a-pipe driver the tests use

from mmkeras.preprocessing.image import JPEG_DRAFT_FACTOR, load_image  # noqa: E402
from tests.helpers.headless_chromium import find_chromium, served_page_text  # noqa: E402

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
PHOTO_SIZE = (4000, 3000)
SMALL_SIZE = (400, 300)
IMAGE_SIZE = (224, 224)
FACTORS = (None, 1, 2, 4)
SETTINGS = {"alpha_background": [255, 255, 255], "resample": "bilinear", "crop_pct": None}
BROWSER_OPTIONS = ("full_decode_js_resize", "imagedecoder_draft_js_resize", "bitmap_to_draft_size_js_resize",
                   "bitmap_to_224")

PAGE = """<!doctype html><html><body><pre id="result"></pre><script type="module">
import {decodeImage, draftScale, imageTensor} from './preprocessing.js';
const {photos, rounds, preprocessing} = await (await fetch('cases.json')).json();
const [height, width] = preprocessing.image_size;
const full = {...preprocessing, image: {...preprocessing.image, jpeg_draft_factor: null}};
function drawn(bitmap) {
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext('2d', {willReadFrequently: true});
  context.drawImage(bitmap, 0, 0);
  return context.getImageData(0, 0, bitmap.width, bitmap.height).data;
}
const bitmapOptions = {imageOrientation: 'from-image', premultiplyAlpha: 'none', colorSpaceConversion: 'none'};
async function viaPolicy(blob, settings) {
  const {rgba, width: w, height: h, draft} = await decodeImage(blob, settings);
  return imageTensor(rgba, w, h, settings.image_size, settings.image, draft);
}
const options = {
  full_decode_js_resize: (blob) => viaPolicy(blob, full),
  imagedecoder_draft_js_resize: (blob) => viaPolicy(blob, preprocessing),
  bitmap_to_draft_size_js_resize: async (blob) => {
    const [fullWidth, fullHeight] = [%(width)d, %(height)d];  // known here: the header read is timed apart
    const scale = draftScale(fullWidth, fullHeight, width, height, preprocessing.image.jpeg_draft_factor);
    const [w, h] = [Math.ceil(fullWidth / scale), Math.ceil(fullHeight / scale)];
    const bitmap = await createImageBitmap(blob, {...bitmapOptions, resizeWidth: w, resizeHeight: h,
                                                  resizeQuality: 'high'});
    return imageTensor(drawn(bitmap), w, h, preprocessing.image_size, preprocessing.image);
  },
  bitmap_to_224: async (blob) => {
    const bitmap = await createImageBitmap(blob, {...bitmapOptions, resizeWidth: width, resizeHeight: height,
                                                  resizeQuality: 'high'});
    return imageTensor(drawn(bitmap), width, height, preprocessing.image_size, preprocessing.image);
  },
};
const blobs = await Promise.all(photos.map(async (file) => (await fetch(file)).blob()));
const times = Object.fromEntries(Object.keys(options).map((name) => [name, []]));
const pixels = Object.fromEntries(Object.keys(options).map((name) => [name, []]));
try {
  for (let round = 0; round < rounds; round++) {
    for (const [index, blob] of blobs.entries()) {
      for (const [name, run] of Object.entries(options)) {
        const started = performance.now();
        const tensor = await run(blob);
        times[name].push(performance.now() - started);
        if (round === 0) {
          const bytes = Uint8Array.from(tensor);
          let text = '';
          for (let i = 0; i < bytes.length; i += 8192) text += String.fromCharCode(...bytes.subarray(i, i + 8192));
          pixels[name].push(btoa(text));
        }
      }
    }
  }
  document.getElementById('result').textContent = JSON.stringify({times, pixels});
} catch (error) {
  document.getElementById('result').textContent = JSON.stringify({error: String(error)});
}
</script></body></html>
"""


def log(message: str):
    print(message, file=sys.stderr, flush=True)


def cpu_name() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or platform.machine()


def make_photos(folder: Path) -> tuple[list[Path], list[Path]]:
    """The 12 MP JPEGs and the same photos shrunk to 400x300 (both quality 92)."""
    from skimage import data

    large, small = [], []
    for name in PHOTOS:
        image = Image.fromarray(getattr(data, name)()).convert("RGB").resize(PHOTO_SIZE, Image.Resampling.LANCZOS)
        large.append(folder / f"{name}_12mp.jpg")
        image.save(large[-1], format="JPEG", quality=92)
        small.append(folder / f"{name}_400x300.jpg")
        image.resize(SMALL_SIZE, Image.Resampling.LANCZOS).save(small[-1], format="JPEG", quality=92)
    return large, small


def difference(pixels: np.ndarray, reference: np.ndarray) -> dict:
    gap = np.abs(pixels.astype(np.float64) - reference.astype(np.float64))
    return {"max": float(gap.max()), "mean": round(float(gap.mean()), 4)}


def merged(differences: list[dict]) -> dict:
    return {"max": max(d["max"] for d in differences),
            "mean": round(float(np.mean([d["mean"] for d in differences])), 4)}


def python_runtime(photos: list[Path], rounds: int) -> tuple[dict, dict]:
    """p50 ms per factor (interleaved) and pixel differences from the full decode; the full and default tensors."""
    times = {factor: [] for factor in FACTORS}
    for round_index in range(rounds):
        for path in photos:
            for factor in FACTORS:
                started = time.perf_counter()
                load_image(path, IMAGE_SIZE, jpeg_draft_factor=factor)
                times[factor].append(time.perf_counter() - started)
        log(f"python runtime: round {round_index + 1}/{rounds}")
    full = [load_image(path, IMAGE_SIZE) for path in photos]
    results = {}
    for factor in FACTORS:
        tensors = [load_image(path, IMAGE_SIZE, jpeg_draft_factor=factor) for path in photos]
        p50 = float(np.median(times[factor]) * 1000)
        results["full_decode" if factor is None else f"draft_factor_{factor}"] = {
            "p50_ms": round(p50, 2),
            "ratio_to_full": round(float(p50 / (np.median(times[None]) * 1000)), 3),
            "difference_from_full": merged([difference(t, f) for t, f in zip(tensors, full)]),
        }
    drafted = [load_image(path, IMAGE_SIZE, jpeg_draft_factor=JPEG_DRAFT_FACTOR) for path in photos]
    return results, {"full": full, "draft": drafted}


def browser(photos: list[Path], rounds: int, references: dict) -> dict:
    if find_chromium() is None:
        return {"skipped": "no chromium"}
    with tempfile.TemporaryDirectory(prefix="photo-decoding-site-") as folder:
        site = Path(folder)
        shutil.copy(ROOT / "mmkeras" / "web" / "site" / "preprocessing.js", site)
        for path in photos:
            shutil.copy(path, site)
        (site / "index.html").write_text(PAGE % {"width": PHOTO_SIZE[0], "height": PHOTO_SIZE[1]})
        settings = {"image_size": list(IMAGE_SIZE), "image": {**SETTINGS, "jpeg_draft_factor": JPEG_DRAFT_FACTOR}}
        (site / "cases.json").write_text(json.dumps(
            {"photos": [path.name for path in photos], "rounds": rounds, "preprocessing": settings}))
        log("browser: headless Chromium")
        page = json.loads(served_page_text(site, "index.html", "result", timeout=900))
    if "error" in page:
        return {"error": page["error"]}
    version = subprocess.run([find_chromium(), "--version"], capture_output=True, text=True, check=False).stdout.strip()
    results = {"chromium": version}
    for name in BROWSER_OPTIONS:
        tensors = [np.frombuffer(base64.b64decode(encoded), np.uint8).reshape(*IMAGE_SIZE, 3)
                   for encoded in page["pixels"][name]]
        results[name] = {
            "p50_ms": round(float(np.median(page["times"][name])), 1),
            "difference_from_python_draft": merged([difference(t, r) for t, r in zip(tensors, references["draft"])]),
            "difference_from_python_full": merged([difference(t, r) for t, r in zip(tensors, references["full"])]),
        }
    full_ms = results["full_decode_js_resize"]["p50_ms"]
    for name in BROWSER_OPTIONS:
        results[name]["ratio_to_full"] = round(results[name]["p50_ms"] / full_ms, 3)
    return results


def training_pipeline(large: list[Path], small: list[Path], rounds: int, copies: int) -> dict:
    """ms per photo through `make_dataset` (fresh each pass, so every pass decodes), interleaved."""
    from mmkeras.data.dataset import make_dataset
    from mmkeras.data.manifest import read_manifest
    from mmkeras.preprocessing import MultimodalPreprocessor, TextTokenizer

    tokenizer = TextTokenizer.train_from_texts(["a photo of a cat", "a rocket"], vocabulary_size=64, sequence_length=8)
    folder = large[0].parent
    manifests = {}
    for name, photos in (("12mp", large), ("400x300", small)):
        rows = [f"a photo,{path.name},{index % 2}" for index, path in enumerate(photos * copies)]
        (folder / f"{name}.csv").write_text("text,image,label\n" + "\n".join(rows) + "\n")
        manifests[name] = read_manifest(folder / f"{name}.csv")
    cases = {
        "12mp_full_decode": (manifests["12mp"], None),
        "12mp_draft": (manifests["12mp"], JPEG_DRAFT_FACTOR),
        "400x300": (manifests["400x300"], JPEG_DRAFT_FACTOR),
    }
    times = {name: [] for name in cases}
    for round_index in range(rounds):
        for name, (manifest, factor) in cases.items():
            preprocessor = MultimodalPreprocessor(tokenizer, IMAGE_SIZE, jpeg_draft_factor=factor)
            dataset = make_dataset(manifest, manifest.labels(), preprocessor, batch_size=8, shuffle=False, seed=0)
            started = time.perf_counter()
            for _ in dataset:
                pass
            times[name].append((time.perf_counter() - started) / len(manifest.rows))
        log(f"training pipeline: round {round_index + 1}/{rounds}")
    per_photo = {name: round(float(np.median(values) * 1000), 2) for name, values in times.items()}
    today = per_photo["12mp_full_decode"]
    return {
        "photos_per_pass": len(manifests["12mp"].rows),
        "ms_per_photo": per_photo,
        "extra_cost_of_12mp_over_400x300_share_of_todays_decode": {
            "today_full_decode": round((today - per_photo["400x300"]) / today, 3),
            "draft": round((per_photo["12mp_draft"] - per_photo["400x300"]) / today, 3),
        },
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of every option (default 5)")
    parser.add_argument("--browser-rounds", type=int, default=3, help="rounds in Chromium (default 3)")
    parser.add_argument("--copies", type=int, default=4, help="each photo's rows in the training manifest")
    parser.add_argument("--skip-browser", action="store_true")
    parser.add_argument("--skip-training", action="store_true")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="photo-decoding-") as folder:
        large, small = make_photos(Path(folder))
        runtime, references = python_runtime(large, arguments.rounds)
        figures = {
            "cpu": cpu_name(),
            "cores": len(os.sched_getaffinity(0)),
            "photos": f"{len(large)} skimage photos upscaled to {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]}, JPEG quality 92",
            "image_size": list(IMAGE_SIZE),
            "python_runtime": runtime,
            "browser": {"skipped": "--skip-browser"} if arguments.skip_browser
            else browser(large, arguments.browser_rounds, references),
            "training_pipeline": {"skipped": "--skip-training"} if arguments.skip_training
            else training_pipeline(large, small, arguments.rounds, arguments.copies),
        }
    draft = runtime[f"draft_factor_{JPEG_DRAFT_FACTOR}"]
    figures["targets"] = {
        "python_draft_ratio_at_most_0.15": draft["ratio_to_full"] <= 0.15,
        "browser_at_most_100_ms": figures["browser"].get("imagedecoder_draft_js_resize", {}).get("p50_ms", 1e9) <= 100,
        "training_extra_cost_at_most_0.25": figures["training_pipeline"]
        .get("extra_cost_of_12mp_over_400x300_share_of_todays_decode", {}).get("draft", 1e9) <= 0.25,
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
