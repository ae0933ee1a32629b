"""`benchmark_bundle`: on-device latency of a bundle through the runtime (no TensorFlow).

Times whole `Predictor.predict_inputs` calls on one preprocessed example (a
sample sentence and a random-noise image at the model's size, or the user's
own photo and text), after warm-up runs, and reports percentiles;
preprocessing is timed separately because a device pays it too: decoding a
12 MP photo costs far more than the model
(docs/design.md#photo-decoding-at-reduced-dct-scale).
"""

import io
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from mmkeras.errors import UserError
from mmkeras.preprocessing.image import UnreadableImageError
from mmkeras.runtime.bundle import MODEL_FILE
from mmkeras.runtime.cpu import cpu_name
from mmkeras.runtime.predictor import Predictor

SAMPLE_TEXT = "a quick benchmark sentence about the picture"
DEFAULT_RUNS = 100
WARMUP_RUNS = 10
# Bundles whose accuracy is at most this far below the best one's count as equally accurate (1 point) in a
# comparison (`bundle_comparison`): the export warns about a quantized bundle losing more
# (export/conversion_report.py's ACCURACY_DROP_LIMIT).
DEFAULT_ACCURACY_TOLERANCE = 0.01


def noise_image_bytes(height: int, width: int, seed: int = 0) -> bytes:
    """A PNG of random pixels (the worst case for nothing; the model runs the same ops)."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def percentiles_ms(seconds: list[float]) -> dict:
    milliseconds = np.asarray(seconds) * 1000.0
    return {
        "p50": float(np.percentile(milliseconds, 50)),
        "p90": float(np.percentile(milliseconds, 90)),
        "p99": float(np.percentile(milliseconds, 99)),
        "mean": float(milliseconds.mean()),
    }


def timed(call, runs: int) -> list[float]:
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return seconds


def benchmark_bundle(
    bundle_dir,
    *,
    threads: int | None = None,
    runs: int = DEFAULT_RUNS,
    warmup: int = WARMUP_RUNS,
    image: str | Path | None = None,
    text: str | None = None,
) -> dict:
    """Latency percentiles (ms) of a bundle's model and preprocessing, its size, and the CPU that ran them.

    Args:
        bundle_dir: a bundle folder written by `export_bundle`.
        threads: interpreter threads (`None`: the runtime's default).
        runs: timed runs.
        warmup: untimed runs first.
        image: a photo to preprocess (read from disk on every run, as an
            app does); `None`: random noise at the model's image size.
        text: the text to preprocess; `None`: a sample sentence.

    Raises:
        UserError: `image` cannot be read (missing, not an image, too large).

    Example:
    >>> benchmark_bundle("bundles/demo", image="photo.jpg")["preprocess_ms"]["p50"]  # doctest: +SKIP
    21.4
    """
    predictor = Predictor(bundle_dir, num_threads=threads)
    height, width = predictor.preprocessor.image_size
    source = noise_image_bytes(height, width) if image is None else Path(image)
    sentence = SAMPLE_TEXT if text is None else text

    def preprocess():
        return predictor.preprocessor([sentence], [source])

    try:
        inputs = preprocess()
    except UnreadableImageError as error:
        raise UserError(error.reason, path=image) from None
    timed(lambda: predictor.predict_inputs(inputs), warmup)
    model_path = Path(bundle_dir) / MODEL_FILE
    return {
        "bundle": str(bundle_dir),
        "input": {"image": None if image is None else str(image), "text": text, **_image_settings(predictor)},
        "quantization": predictor.bundle["quantization"],
        "threads": threads,
        "runs": runs,
        "latency_ms": percentiles_ms(timed(lambda: predictor.predict_inputs(inputs), runs)),
        "preprocess_ms": percentiles_ms(timed(preprocess, max(1, runs // 4))),
        "model_size_bytes": model_path.stat().st_size,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
    }


def _image_settings(predictor: Predictor) -> dict:
    """What preprocessing costs depend on: the model's image size and the JPEG decode policy."""
    preprocessor = predictor.preprocessor
    return {"image_size": list(preprocessor.image_size), "jpeg_draft_factor": preprocessor.jpeg_draft_factor}
