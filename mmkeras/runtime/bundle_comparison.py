"""`compare_bundles`: several bundles measured side by side, interleaved, in one run.

For each bundle: the model's size; the cold start (from spawning a fresh
Python process to its first prediction) and that process's peak resident
memory (`ru_maxrss`); then, for every thread count from 1 to N and with
XNNPACK on and off, percentiles of preprocessing and of inference. Timed runs
are interleaved (run i of every bundle before run i + 1 of any), so a noisy
neighbour on the machine slows all bundles alike and the ratios hold.
TensorFlow-free, like the rest of `mmkeras.runtime`.

Example:
>>> figures = compare_bundles(["bundles/float", "bundles/int8"], max_threads=2, runs=50)  # doctest: +SKIP
>>> [row["inference_ms"]["p50"] for row in figures["bundles"][1]["measurements"]]  # doctest: +SKIP
[0.28, 0.25, 0.61, 0.44]
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mmkeras.preprocessing import MultimodalPreprocessor
from mmkeras.runtime.benchmark import (
    DEFAULT_RUNS,
    SAMPLE_TEXT,
    WARMUP_RUNS,
    noise_image_bytes,
    percentiles_ms,
)
from mmkeras.runtime.bundle import MODEL_FILE, read_bundle
from mmkeras.runtime.interpreter import LiteRTModel

# The child process of a cold start: the device's first request, from nothing to a label.
COLD_START_SCRIPT = """
import json, resource, sys
from mmkeras.runtime.predictor import Predictor
label = Predictor(sys.argv[1], num_threads=1).predict(sys.argv[2], sys.argv[3]).label
# Linux reports ru_maxrss in KiB.
print(json.dumps({"label": label, "peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def thread_counts(max_threads: int | None) -> list[int]:
    """1..N, N capped to this machine's CPU count (default: all of them)."""
    cpus = os.cpu_count() or 1
    return list(range(1, min(max_threads or cpus, cpus) + 1))


def cold_start(bundle_dir: str | Path, image_path: Path) -> dict:
    """Wall time from spawning a Python process to its first prediction, and its peak memory."""
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-c", COLD_START_SCRIPT, str(bundle_dir), SAMPLE_TEXT, str(image_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    return {"cold_start_ms": elapsed_ms, **json.loads(completed.stdout.splitlines()[-1])}


class _Subject:
    """One bundle under one setting: its preprocessing and its model, each timed on its own."""

    def __init__(self, bundle_dir: Path, image: bytes, threads: int, xnnpack: bool):
        self.preprocessor = MultimodalPreprocessor.load(bundle_dir)
        self.model = LiteRTModel(bundle_dir / MODEL_FILE, num_threads=threads, default_delegates=xnnpack)
        self.image = image
        self.inputs = self.preprocess()
        self.preprocess_seconds: list[float] = []
        self.inference_seconds: list[float] = []

    def preprocess(self):
        return self.preprocessor([SAMPLE_TEXT], [self.image])

    def run_once(self, timed: bool):
        started = time.perf_counter()
        self.inputs = self.preprocess()
        preprocessed = time.perf_counter()
        self.model(self.inputs)
        finished = time.perf_counter()
        if timed:
            self.preprocess_seconds.append(preprocessed - started)
            self.inference_seconds.append(finished - preprocessed)


def measure_interleaved(subjects: list[_Subject], runs: int, warmup: int):
    """Warm every subject up, then time run i of each before run i + 1 of any."""
    for round_number in range(warmup + runs):
        for subject in subjects:
            subject.run_once(timed=round_number >= warmup)


def compare_bundles(
    bundle_dirs: list[str | Path],
    *,
    max_threads: int | None = None,
    runs: int = DEFAULT_RUNS,
    warmup: int = WARMUP_RUNS,
) -> dict:
    """Size, cold start, peak memory and interleaved latency of bundles, side by side.

    Args:
        bundle_dirs: bundle folders, all taking the same image size or not
            (each gets a noise image of its own size and the same text).
        max_threads: the largest interpreter thread count to measure (1..N;
            capped to `os.cpu_count()`, which is also the default).
        runs: timed runs per bundle and setting.
        warmup: untimed runs first.

    Returns:
        `threads` (the counts measured), `runs`, `cpu_count` and `bundles`:
        per bundle `bundle`, `quantization`, `model_size_bytes`,
        `cold_start_ms`, `peak_memory_bytes` and `measurements`, one per
        (threads, xnnpack) with `preprocess_ms` and `inference_ms`
        percentiles (`p50`, `p90`, `p99`, `mean`).

    Example:
    >>> compare_bundles(["bundles/float", "bundles/int8"], max_threads=1, runs=20)["threads"]  # doctest: +SKIP
    [1]
    """
    folders = [Path(directory) for directory in bundle_dirs]
    bundles = [read_bundle(directory) for directory in folders]
    images = [noise_image_bytes(*bundle["preprocessing"]["image_size"]) for bundle in bundles]
    settings = [(threads, xnnpack) for threads in thread_counts(max_threads) for xnnpack in (True, False)]
    with tempfile.TemporaryDirectory(prefix="mmkeras-benchmark-") as folder:
        starts = []
        for number, (directory, image) in enumerate(zip(folders, images)):
            image_path = Path(folder) / f"{number}.png"
            image_path.write_bytes(image)
            starts.append(cold_start(directory, image_path))
    measurements = [[] for _ in folders]
    for threads, xnnpack in settings:
        subjects = [_Subject(directory, image, threads, xnnpack) for directory, image in zip(folders, images)]
        measure_interleaved(subjects, runs, warmup)
        for rows, subject in zip(measurements, subjects):
            rows.append(
                {
                    "threads": threads,
                    "xnnpack": xnnpack,
                    "preprocess_ms": percentiles_ms(subject.preprocess_seconds),
                    "inference_ms": percentiles_ms(subject.inference_seconds),
                }
            )
    return {
        "threads": thread_counts(max_threads),
        "runs": runs,
        "cpu_count": os.cpu_count(),
        "bundles": [
            {
                "bundle": str(directory),
                "quantization": bundle["quantization"],
                "model_size_bytes": (directory / MODEL_FILE).stat().st_size,
                "cold_start_ms": start["cold_start_ms"],
                "peak_memory_bytes": start["peak_memory_bytes"],
                "measurements": rows,
            }
            for directory, bundle, start, rows in zip(folders, bundles, starts, measurements)
        ],
    }


def comparison_table(figures: dict) -> str:
    """The figures of `compare_bundles` as one plain-text table, a row per bundle and setting.

    `vs first` is the inference p50 over the first bundle's at the same setting.
    """
    header = ("bundle", "quant", "size KB", "cold ms", "peak MB", "thr", "xnnpack", "pre p50",
              "inf p50", "inf p90", "inf p99", "vs first")
    lines: list[tuple[str, ...]] = [header]
    first = figures["bundles"][0]["measurements"]
    for bundle in figures["bundles"]:
        for reference, row in zip(first, bundle["measurements"]):
            inference = row["inference_ms"]
            lines.append((
                Path(bundle["bundle"]).name, bundle["quantization"], f"{bundle['model_size_bytes'] / 1024:.0f}",
                f"{bundle['cold_start_ms']:.0f}", f"{bundle['peak_memory_bytes'] / 2**20:.0f}",
                str(row["threads"]), "on" if row["xnnpack"] else "off", f"{row['preprocess_ms']['p50']:.3f}",
                f"{inference['p50']:.3f}", f"{inference['p90']:.3f}", f"{inference['p99']:.3f}",
                f"{inference['p50'] / reference['inference_ms']['p50']:.2f}x",
            ))
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)
