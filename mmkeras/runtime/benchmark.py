"""`benchmark_bundle`: on-device latency of a bundle through the runtime (no TensorFlow).

Times whole `Predictor.predict_inputs` calls on one preprocessed example (a
sample sentence and a random-noise image), after warm-up runs, and reports
percentiles; preprocessing is timed separately because a device pays it too.
"""

import io
import time
from pathlib import Path

import numpy as np
from PIL import Image

from mmkeras.runtime.bundle import MODEL_FILE
from mmkeras.runtime.predictor import Predictor

SAMPLE_TEXT = "a quick benchmark sentence about the picture"
DEFAULT_RUNS = 100
WARMUP_RUNS = 10


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
    bundle_dir, *, threads: int | None = None, runs: int = DEFAULT_RUNS, warmup: int = WARMUP_RUNS
) -> dict:
    """Latency percentiles (ms) of a bundle's model and preprocessing, and its size.

    Args:
        bundle_dir: a bundle folder written by `export_bundle`.
        threads: interpreter threads (`None`: the runtime's default).
        runs: timed runs.
        warmup: untimed runs first.

    Example:
    >>> benchmark_bundle("bundles/demo", threads=1)["latency_ms"]["p50"]  # doctest: +SKIP
    0.21
    """
    predictor = Predictor(bundle_dir, num_threads=threads)
    height, width = predictor.preprocessor.image_size
    image = noise_image_bytes(height, width)

    def preprocess():
        return predictor.preprocessor([SAMPLE_TEXT], [image])

    inputs = preprocess()
    timed(lambda: predictor.predict_inputs(inputs), warmup)
    model_path = Path(bundle_dir) / MODEL_FILE
    return {
        "bundle": str(bundle_dir),
        "quantization": predictor.bundle["quantization"],
        "threads": threads,
        "runs": runs,
        "latency_ms": percentiles_ms(timed(lambda: predictor.predict_inputs(inputs), runs)),
        "preprocess_ms": percentiles_ms(timed(preprocess, max(1, runs // 4))),
        "model_size_bytes": model_path.stat().st_size,
    }
