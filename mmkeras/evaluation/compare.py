"""`compare_runs`: runs side by side (fusions, LoRA vs full fine-tuning, ...).

For each run: its settings that tell runs apart (fusion, backbones, freeze,
LoRA rank), parameters, median epoch time, peak memory of its training
process, validation figures, and, with a
test manifest, `evaluate`'s headline figures (accuracy, macro-F1, ECE,
text-only and image-only accuracy, consistency). Every bundle exported or evaluated from a run
(the run's `bundles.json`, as the report finds them) adds their size and a latency benchmark
(batch 1, one thread, through the TensorFlow-free runtime).

Example:
>>> comparison = compare_runs(["runs/concat", "runs/gated"], data="samples/test.csv")  # doctest: +SKIP
>>> [run["figures"]["accuracy"] for run in comparison["runs"]]  # doctest: +SKIP
[0.99, 1.0]
"""

import json
import statistics
from pathlib import Path

from mmkeras.atomic_files import write_atomically, write_json_atomically
from mmkeras.evaluation import plots
from mmkeras.evaluation.report import run_bundles
from mmkeras.evaluation.scalar_figures import scalar_figures
from mmkeras.evaluation.tables import text_table
from mmkeras.peak_memory import format_bytes
from mmkeras.runs import METRICS_FILE, load_run_config

# The run settings a comparison shows (the ones that usually differ between compared runs).
COMPARED_SETTINGS = ("fusion", "text_backbone", "vision_backbone", "freeze", "lora_rank", "modality_dropout")
BENCHMARK_RUNS = 100
COMPARISON_FILE = "comparison.json"
CHART_FILE = "comparison.png"


def compare_runs(run_dirs, data=None, *, out=None) -> dict:
    """Compare run folders; with `data`, evaluate each on it (saving its results folder).

    Args:
        run_dirs: run folders written by `train` or `qat`.
        data: a labelled manifest to evaluate every run on, or `None` (the
            runs' own validation figures only).
        out: a folder for comparison.json and comparison.png (the chart
            needs matplotlib), or `None`.

    Returns:
        `{"data", "runs": [{"name", "path", "settings", "trainable_params",
        "total_params", "median_epoch_seconds", "peak_memory_bytes", "val_accuracy", "figures",
        "bundles": [{"name", "path", "status", "quantize", "size_bytes", "p50_ms"}]}]}`
        (a bundle moved or deleted since: `status` `missing`, its recorded size, no latency).
    """
    runs = [describe_run(Path(run_dir), data) for run_dir in run_dirs]
    comparison = {"data": None if data is None else str(data), "runs": runs}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomically(out / COMPARISON_FILE, comparison)
        if plots.can_plot():
            png = comparison_chart(comparison)
            write_atomically(out / CHART_FILE, lambda partial: partial.write_bytes(png))
    return comparison


def describe_run(run_dir: Path, data) -> dict:
    config = load_run_config(run_dir).to_dict()
    metrics_path = run_dir / METRICS_FILE
    metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else {}
    # The first epoch also traces the training step: leave it out when there are others.
    seconds = metrics.get("epoch_seconds") or []
    figures = None
    if data is not None:
        from mmkeras.evaluation.evaluate import evaluate

        figures = scalar_figures(evaluate(run_dir, data))
    return {
        "name": run_dir.name,
        "path": str(run_dir),
        "settings": {name: config[name] for name in COMPARED_SETTINGS},
        "trainable_params": metrics.get("trainable_params"),
        "total_params": metrics.get("total_params"),
        "median_epoch_seconds": statistics.median(seconds[1:] or seconds) if seconds else None,
        "peak_memory_bytes": metrics.get("peak_memory_bytes"),  # runs trained before it was recorded: None
        "val_accuracy": metrics.get("val_accuracy"),
        "figures": figures,
        "bundles": [describe_bundle(entry) for entry in run_bundles(run_dir)],
    }


def describe_bundle(entry: dict) -> dict:
    """A `run_bundles` entry's size and latency; a bundle that is gone keeps its recorded size and no latency."""
    folder = entry["path"]
    if entry["bundle"] is None:
        return {"name": folder.name, "path": str(folder), "status": entry["status"],
                "quantize": entry.get("quantization"), "size_bytes": entry.get("size_bytes"), "p50_ms": None}
    from mmkeras.runtime.benchmark import benchmark_bundle

    figures = benchmark_bundle(folder, threads=1, runs=BENCHMARK_RUNS)
    return {
        "name": folder.name,
        "path": str(folder),
        "status": entry["status"],
        "quantize": entry["bundle"]["quantization"],
        "size_bytes": figures["model_size_bytes"],
        "p50_ms": figures["latency_ms"]["p50"],
    }


def bundle_cell(bundle: dict) -> str:
    """`NAME QUANTIZE SIZE KB P50` for the table; a bundle that is gone says so."""
    size = "? KB" if bundle["size_bytes"] is None else f"{bundle['size_bytes'] / 1024:.0f} KB"
    latency = bundle["status"] if bundle["p50_ms"] is None else f"{bundle['p50_ms']:.3f} ms"
    return f"{bundle['name']} {bundle['quantize']} {size} {latency}"


def comparison_table(comparison: dict) -> str:
    """The comparison as a terminal table, one row per run (and per bundle)."""
    evaluated = comparison["data"] is not None
    header = ["run", "fusion", "trainable", "s/epoch", "peak mem", "val acc"]
    header += ["accuracy", "macro-F1", "ECE", "text only", "image only"] if evaluated else []
    header += ["bundles (quantization, size, p50 ms)"]
    rows = []
    for run in comparison["runs"]:
        peak = run["peak_memory_bytes"]
        row = [run["name"], run["settings"]["fusion"], run["trainable_params"], run["median_epoch_seconds"],
               peak and format_bytes(peak), run["val_accuracy"]]
        if evaluated:
            figures = run["figures"]
            row += [figures["accuracy"], figures["macro_f1"], figures["ece"], figures["text_only_accuracy"],
                    figures["image_only_accuracy"]]
        row.append("; ".join(bundle_cell(bundle) for bundle in run["bundles"]) or None)
        rows.append(row)
    return text_table(header, rows)


def comparison_chart(comparison: dict) -> bytes:
    """Bars per run: test accuracy, text-only and image-only accuracy (or the validation accuracy)."""
    runs = comparison["runs"]
    if comparison["data"] is None:
        groups = {"val accuracy": {run["name"]: run["val_accuracy"] or 0.0 for run in runs}}
    else:
        groups = {
            label: {run["name"]: run["figures"][key] for run in runs}
            for label, key in (("fused", "accuracy"), ("text only", "text_only_accuracy"),
                               ("image only", "image_only_accuracy"))
        }
    return plots.bar_chart_png(groups, title="runs compared", ylabel="accuracy")
