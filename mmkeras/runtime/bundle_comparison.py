"""`compare_bundles`: several bundles measured side by side, interleaved, in one run.

For each bundle: the model's size; the cold start (from spawning a fresh
Python process to its first prediction) and that process's peak resident
memory (`ru_maxrss`); then, for every thread count from 1 to N and with
XNNPACK on and off, percentiles of preprocessing and of inference (of a
noise image at the bundle's size and a sample sentence, or the user's own
photo and text: a 12 MP JPEG's decode can cost more than the model). Timed runs
are interleaved (run i of every bundle before run i + 1 of any), so a noisy
neighbour on the machine slows all bundles alike and the ratios hold.
TensorFlow-free, like the rest of `mmkeras.runtime`.

Given a labelled manifest, each bundle's accuracy on it too
(`bundle_accuracies`), and a verdict: the fastest bundle, with XNNPACK, at 1
thread and at the most threads measured, among those whose accuracy is
within a tolerance of the best one's. Which bundle that is depends on the
CPU (int8 was 0.76x float on an AMD EPYC and 1.2x on an Intel Xeon for the
same graph, docs/design.md#int8-latency-on-xnnpack), so the figures name it
(`cpu_name`) and a user picks by measuring on the target.

Example:
>>> figures = compare_bundles(["bundles/float", "bundles/int8"], max_threads=2, runs=50)  # doctest: +SKIP
>>> [row["inference_ms"]["p50"] for row in figures["bundles"][1]["measurements"]]  # doctest: +SKIP
[0.28, 0.25, 0.61, 0.44]
>>> verdict = compare_bundles(["bundles/float", "bundles/int8"], data="test.csv")["verdict"]  # doctest: +SKIP
>>> verdict["fastest"][0]["bundle"]  # doctest: +SKIP
'bundles/int8'
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mmkeras.errors import UserError
from mmkeras.preprocessing import MultimodalPreprocessor
from mmkeras.preprocessing.image import UnreadableImageError
from mmkeras.runtime.benchmark import (
    DEFAULT_ACCURACY_TOLERANCE,
    DEFAULT_RUNS,
    SAMPLE_TEXT,
    WARMUP_RUNS,
    noise_image_bytes,
    percentiles_ms,
)
from mmkeras.runtime.bundle import MODEL_FILE, read_bundle
from mmkeras.runtime.bundle_accuracy import bundle_accuracies
from mmkeras.runtime.cpu import cpu_name
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


def cold_start(bundle_dir: str | Path, image_path: Path, text: str = SAMPLE_TEXT) -> dict:
    """Wall time from spawning a Python process to its first prediction, and its peak memory."""
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-c", COLD_START_SCRIPT, str(bundle_dir), text, str(image_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    return {"cold_start_ms": elapsed_ms, **json.loads(completed.stdout.splitlines()[-1])}


class _Subject:
    """One bundle under one setting: its preprocessing and its model, each timed on its own."""

    def __init__(self, bundle_dir: Path, image: bytes | Path, text: str, threads: int, xnnpack: bool):
        self.preprocessor = MultimodalPreprocessor.load(bundle_dir)
        self.model = LiteRTModel(bundle_dir / MODEL_FILE, num_threads=threads, default_delegates=xnnpack)
        self.image = image
        self.text = text
        self.inputs = self.preprocess()
        self.preprocess_seconds: list[float] = []
        self.inference_seconds: list[float] = []

    def preprocess(self):
        return self.preprocessor([self.text], [self.image])

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
    data: str | Path | None = None,
    columns: dict[str, str] | None = None,
    accuracy_tolerance: float = DEFAULT_ACCURACY_TOLERANCE,
    image: str | Path | None = None,
    text: str | None = None,
) -> dict:
    """Size, cold start, peak memory, interleaved latency and (given `data`) accuracy of bundles, side by side.

    Args:
        bundle_dirs: bundle folders, all taking the same image size or not
            (without `image`, each gets a noise image of its own size).
        max_threads: the largest interpreter thread count to measure (1..N;
            capped to `os.cpu_count()`, which is also the default).
        runs: timed runs per bundle and setting.
        warmup: untimed runs first.
        data: a labelled manifest to measure each bundle's accuracy on
            (bundles of one run; exact match for multilabel ones); `None`:
            latency alone.
        columns: `{role: column name}` of `data` where it differs from the
            run's (`mmkeras.runs.manifest_columns`).
        accuracy_tolerance: how far below the best accuracy (a fraction of
            the rows) a bundle may be and still count as equally accurate.
        image: a photo every bundle preprocesses (read from disk on every
            run, as an app does), also in the cold start; `None`: noise.
        text: the text every bundle preprocesses; `None`: a sample sentence.

    Returns:
        `threads` (the counts measured), `runs`, `cpu` (`cpu_name`),
        `cpu_count`, `data` (or `None`), `input` (`image`, `text`: the
        photo and text given, `None` where not), `bundles` and `verdict`
        (`fastest_at_equal_accuracy`). Per bundle: `bundle`, `quantization`,
        `model_size_bytes`, `cold_start_ms`, `peak_memory_bytes`, `accuracy`
        (`bundle_accuracies`' figures, or `None` without `data`) and
        `measurements`, one per (threads, xnnpack) with `preprocess_ms` and
        `inference_ms` percentiles (`p50`, `p90`, `p99`, `mean`).

    Raises:
        UserError: a folder that is not a bundle, an unreadable `image`,
            and with `data` every mistake `bundle_accuracies` finds (before
            anything is timed).

    Example:
    >>> compare_bundles(["bundles/float", "bundles/int8"], max_threads=1, runs=20)["threads"]  # doctest: +SKIP
    [1]
    """
    folders = [Path(directory) for directory in bundle_dirs]
    bundles = [read_bundle(directory) for directory in folders]
    accuracies = [None] * len(folders) if data is None else bundle_accuracies(folders, data, columns=columns)
    sentence = SAMPLE_TEXT if text is None else text
    if image is None:
        images = [noise_image_bytes(*bundle["preprocessing"]["image_size"]) for bundle in bundles]
    else:
        images = [Path(image)] * len(folders)
        _check_photo(folders, Path(image), sentence)
    settings = [(threads, xnnpack) for threads in thread_counts(max_threads) for xnnpack in (True, False)]
    with tempfile.TemporaryDirectory(prefix="mmkeras-benchmark-") as folder:
        starts = []
        for number, (directory, source) in enumerate(zip(folders, images)):
            image_path = source if isinstance(source, Path) else Path(folder) / f"{number}.png"
            if not isinstance(source, Path):
                image_path.write_bytes(source)
            starts.append(cold_start(directory, image_path, sentence))
    measurements = [[] for _ in folders]
    for threads, xnnpack in settings:
        subjects = [
            _Subject(directory, source, sentence, threads, xnnpack) for directory, source in zip(folders, images)
        ]
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
    figures = {
        "threads": thread_counts(max_threads),
        "runs": runs,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "data": None if data is None else str(data),
        "input": {"image": None if image is None else str(image), "text": text},
        "bundles": [
            {
                "bundle": str(directory),
                "quantization": bundle["quantization"],
                "model_size_bytes": (directory / MODEL_FILE).stat().st_size,
                "cold_start_ms": start["cold_start_ms"],
                "peak_memory_bytes": start["peak_memory_bytes"],
                "accuracy": accuracy,
                "measurements": rows,
            }
            for directory, bundle, start, accuracy, rows in zip(folders, bundles, starts, accuracies, measurements)
        ],
    }
    return {**figures, "verdict": fastest_at_equal_accuracy(figures, accuracy_tolerance)}


def _check_photo(folders: list[Path], image: Path, text: str):
    """Every bundle can read `image` (its size limit included), before anything is timed."""
    for directory in folders:
        try:
            MultimodalPreprocessor.load(directory)([text], [image])
        except UnreadableImageError as error:
            raise UserError(error.reason, path=image) from None


def fastest_at_equal_accuracy(figures: dict, tolerance: float = DEFAULT_ACCURACY_TOLERANCE) -> dict:
    """The fastest bundle with XNNPACK at 1 thread (and at the most threads measured) among the most accurate.

    A bundle is as accurate as the best when it gets at most `tolerance` of
    the rows fewer right, compared by counts of correct rows. Without
    accuracies every bundle takes part.

    Args:
        figures: `compare_bundles`' figures (without `verdict`).
        tolerance: the accuracy (a fraction of the rows) a bundle may lose
            against the best and still take part.

    Returns:
        `cpu`, `cpu_count`, `accuracy_measured`, `metric` (`accuracy`, or
        `exact match` for multilabel bundles; `None` unmeasured),
        `accuracy_tolerance`, `best_accuracy` (or `None`), `first` (the bundle the others are
        compared with), `candidates` (the bundles taking part)
        and `fastest`, per thread count: `threads`, `bundle`, `quantization`,
        `inference_p50_ms`, `vs_first` (its inference p50 over the first
        bundle's) and `accuracy` (or `None`).

    Example:
    >>> def bundle(name, p50, correct):
    ...     return {"bundle": name, "quantization": name, "accuracy": {"rows": 100, "correct": correct,
    ...             "accuracy": correct / 100, "metric": "accuracy"}, "measurements": [{"threads": 1, "xnnpack": True,
    ...             "inference_ms": {"p50": p50}}]}
    >>> figures = {"threads": [1], "cpu": "AMD EPYC", "cpu_count": 2,
    ...            "bundles": [bundle("float", 4.0, 64), bundle("int8", 3.0, 63), bundle("int16x8", 2.0, 60)]}
    >>> [(row["bundle"], row["vs_first"]) for row in fastest_at_equal_accuracy(figures)["fastest"]]
    [('int8', 0.75)]
    """
    bundles = figures["bundles"]
    measured = all(bundle["accuracy"] is not None for bundle in bundles)
    best = max(bundle["accuracy"]["correct"] for bundle in bundles) if measured else None
    candidates = bundles
    if best is not None:
        # From the counts, as the export's parity check: differences of float accuracies round.
        candidates = [
            bundle for bundle in bundles
            if (best - bundle["accuracy"]["correct"]) / bundle["accuracy"]["rows"] <= tolerance
        ]
    fastest = []
    for threads in sorted({1, max(figures["threads"])}):
        def p50(bundle, threads=threads):
            return _with_xnnpack(bundle, threads)["inference_ms"]["p50"]

        winner = min(candidates, key=p50)
        fastest.append({
            "threads": threads,
            "bundle": winner["bundle"],
            "quantization": winner["quantization"],
            "inference_p50_ms": p50(winner),
            "vs_first": p50(winner) / p50(bundles[0]),
            "accuracy": winner["accuracy"]["accuracy"] if measured else None,
        })
    return {
        "cpu": figures["cpu"],
        "cpu_count": figures["cpu_count"],
        "accuracy_measured": measured,
        "metric": bundles[0]["accuracy"]["metric"] if measured else None,
        "accuracy_tolerance": tolerance if measured else None,
        "best_accuracy": None if best is None else best / bundles[0]["accuracy"]["rows"],
        "first": bundles[0]["bundle"],
        "candidates": [bundle["bundle"] for bundle in candidates],
        "fastest": fastest,
    }


def _with_xnnpack(bundle: dict, threads: int) -> dict:
    """A bundle's measurement at `threads` with XNNPACK on."""
    return next(row for row in bundle["measurements"] if row["threads"] == threads and row["xnnpack"])


def comparison_table(figures: dict) -> str:
    """The figures of `compare_bundles` as one plain-text table, a row per bundle and setting, then the verdict.

    `vs first` is the inference p50 over the first bundle's at the same
    setting. Below the table: each bundle's accuracy (when measured) and a
    line per thread count of the verdict (`verdict_lines`).
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
    table = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines]
    return "\n".join([*table, input_line(figures["input"]), "", *accuracy_lines(figures),
                      *verdict_lines(figures["verdict"])])


def input_line(given: dict) -> str:
    """What `pre p50` timed: the photo given, or noise at each bundle's size (a camera photo decodes far slower).

    Example:
    >>> input_line({"image": None, "text": None})
    "pre: a noise image at each bundle's size and a sample sentence (--image PHOTO --text TEXT: your own)"
    >>> input_line({"image": "IMG_0001.jpg", "text": "my cat"})
    "pre: IMG_0001.jpg and the text 'my cat'"
    """
    image = "a noise image at each bundle's size" if given["image"] is None else given["image"]
    text = "a sample sentence" if given["text"] is None else f"the text {given['text']!r}"
    yours = " (--image PHOTO --text TEXT: your own)" if given["image"] is None and given["text"] is None else ""
    return f"pre: {image} and {text}{yours}"


def accuracy_lines(figures: dict) -> list[str]:
    """A line per bundle: its accuracy on `data` and its label agreement with the first bundle (none unmeasured)."""
    if figures["data"] is None:
        return []
    names = [Path(bundle["bundle"]).name for bundle in figures["bundles"]]
    width = max(map(len, names))
    lines = [f"{figures['bundles'][0]['accuracy']['metric']} on {figures['data']}:"]
    for name, bundle in zip(names, figures["bundles"]):
        accuracy = bundle["accuracy"]
        lines.append(
            f"  {name.ljust(width)}  {accuracy['accuracy']:.3f} ({accuracy['correct']}/{accuracy['rows']})"
            f"  agreement with {names[0]} {accuracy['agreement']:.3f}"
        )
    return lines


def verdict_lines(verdict: dict) -> list[str]:
    """The verdict in words, a line per thread count.

    Example:
    >>> verdict_lines({"cpu": "AMD EPYC", "cpu_count": 2, "accuracy_measured": True, "metric": "accuracy",
    ...     "best_accuracy": 0.645,
    ...     "fastest": [{"threads": 1, "bundle": "b/int8", "vs_first": 0.42, "accuracy": 0.645}],
    ...     "first": "b/float"})
    ['fastest at equal accuracy on AMD EPYC (2 CPUs), 1 thread, XNNPACK: int8 0.42x float (accuracy 0.645, best 0.645)']
    """
    first = Path(verdict["first"]).name
    lines = []
    for row in verdict["fastest"]:
        threads = f"{row['threads']} thread{'s' * (row['threads'] > 1)}, XNNPACK"
        where = f"on {verdict['cpu']} ({verdict['cpu_count']} CPUs), {threads}"
        speed = f"{Path(row['bundle']).name} {row['vs_first']:.2f}x {first}"
        if verdict["accuracy_measured"]:
            lines.append(f"fastest at equal {verdict['metric']} {where}: {speed} "
                         f"({verdict['metric']} {row['accuracy']:.3f}, best {verdict['best_accuracy']:.3f})")
        else:
            lines.append(f"fastest {where}: {speed} (accuracy not measured: pass --data)")
    return lines
