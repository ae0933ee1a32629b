"""The results folder `evaluate` writes for each manifest it evaluates a run or a bundle on.

```
TARGET/results/<manifest stem>/
  metrics.json                     every figure `evaluate --json` prints
  per_class.csv                    precision, recall, F1, support, average precision (one class against
                                   the rest), text-only and image-only recall per class
  predictions.csv                  per row: line and manifest (where the row is written: for a `cv` fold,
                                   in the user's file), text, image (as the manifest names it), image_file
                                   (the file read), true and predicted label, scores, ablated predictions
  confusion_matrix.png             counts (rows true, columns predicted)
  confusion_matrix_normalized.png  each row divided by its support
  reliability.png                  the reliability diagram
  modality_ablation.png            per-class accuracy: fused, text only, image only
  pr_curves.png                    each class's precision-recall curve against the rest (its score
                                   alone as the threshold) with its average precision, and the
                                   precision and recall of the argmax prediction (per_class.csv's) marked
  attention/line-<N>.png           a cross-attention run: the text's attention over the image of the
                                   sample rows the report shows (N: the row's `line`, one per row: the
                                   rows of a results folder are all written in one file)
```

The PNG files need matplotlib (the training extra); where only the device
runtime is installed the folder holds the JSON and CSV files alone.
TensorFlow-free.
"""

import csv
import io
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mmkeras.atomic_files import write_atomically, write_json_atomically
from mmkeras.data.manifest import SOURCE_IMAGE_COLUMN
from mmkeras.data.parquet_manifest import embedded_image_name
from mmkeras.evaluation import plots
from mmkeras.runtime.bundle import RESULTS_FOLDER

logger = logging.getLogger("mmkeras")

ATTENTION_FOLDER = "attention"
# Right and wrong predictions the report shows (the most confident of each).
SAMPLES_PER_KIND = 6
METRICS_FILE = "metrics.json"
PER_CLASS_FILE = "per_class.csv"
PREDICTIONS_FILE = "predictions.csv"
PR_CURVES_CHART = "pr_curves.png"
# The column of predictions.csv naming the file its `line` is a line of: the manifest evaluated, or for a `cv` fold
# the user's own (`Manifest.where`). Results folders written before it have none: their `line` is the folder's.
MANIFEST_COLUMN = "manifest"
# The column of predictions.csv naming the image file read (`image` names it as the manifest does: for a Parquet
# manifest's image bytes, the struct's path or `<image bytes of row N>`, not the file they were written to).
IMAGE_FILE_COLUMN = "image_file"


def results_dir(target, data) -> Path:
    """`TARGET/results/<stem of the manifest>`: where `evaluate` writes the figures of `data`."""
    return Path(target) / RESULTS_FOLDER / Path(data).stem


def write_results(folder, figures: dict, predictions: list[dict], curves: dict[str, tuple]) -> Path:
    """Write metrics.json, per_class.csv, predictions.csv and (with matplotlib) the figures.

    Args:
        folder: the results folder (created).
        figures: what `evaluate` returns.
        predictions: one dict per row (the columns of predictions.csv, in order).
        curves: `{label: (precision, recall, thresholds)}`, each class against the rest (`one_vs_rest_curves`).

    Returns:
        The folder.
    """
    labels = list(figures["per_class"])
    return write_folder(
        folder,
        figures,
        {PER_CLASS_FILE: per_class_rows(figures), PREDICTIONS_FILE: predictions},
        lambda: {
            "confusion_matrix.png": plots.confusion_png(figures["confusion_matrix"], labels),
            "confusion_matrix_normalized.png": plots.confusion_png(
                figures["confusion_matrix"], labels, normalized=True
            ),
            "reliability.png": plots.reliability_png(figures["calibration"]),
            "modality_ablation.png": ablation_png(figures),
            PR_CURVES_CHART: precision_recall_png(figures["per_class"], curves, "precision-recall, each class against "
                                                  "the rest", "argmax prediction (per_class.csv)"),
        },
    )


def write_folder(folder, figures: dict, tables: dict[str, list[dict]], charts: Callable[[], dict[str, bytes]]) -> Path:
    """A results folder: metrics.json, the CSV tables and, with matplotlib, the charts; each file atomically.

    Args:
        folder: the results folder (created).
        figures: written as metrics.json.
        tables: `{file name: rows}` (`write_csv`).
        charts: returns `{file name: PNG bytes}`; called only where matplotlib is installed.

    Returns:
        The folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomically(folder / METRICS_FILE, figures)
    for name, rows in tables.items():
        write_csv(folder / name, rows)
    if plots.can_plot():
        for name, png in charts().items():
            write_atomically(folder / name, lambda partial, png=png: partial.write_bytes(png))
    else:
        logger.info("matplotlib is not installed: %s holds no figures", folder)
    return folder


def per_class_rows(figures: dict) -> list[dict]:
    """The rows of per_class.csv."""
    ablation = figures["modality_ablation"]
    return [
        {
            "label": label,
            **{key: round_figure(value) for key, value in values.items()},
            "text_only_recall": round_figure(ablation["text_only"]["per_class_recall"][label]),
            "image_only_recall": round_figure(ablation["image_only"]["per_class_recall"][label]),
        }
        for label, values in figures["per_class"].items()
    ]


def ablation_png(figures: dict) -> bytes:
    """Per-class recall with both modalities, the text only and the image only."""
    ablation = figures["modality_ablation"]
    groups = {
        "fused": {label: values["recall"] for label, values in figures["per_class"].items()},
        "text only": ablation["text_only"]["per_class_recall"],
        "image only": ablation["image_only"]["per_class_recall"],
    }
    return plots.bar_chart_png(groups, title="modality ablation: per-class accuracy", ylabel="recall")


def precision_recall_png(
    per_class: dict[str, dict], curves: dict[str, tuple], title: str, operating_point: str
) -> bytes:
    """`plots.precision_recall_png` of a results folder's classes or labels: their average precision and the
    precision and recall its table reports (`per_class` or `per_label` figures) as the operating point."""
    return plots.precision_recall_png(
        curves,
        {label: values["average_precision"] for label, values in per_class.items()},
        {label: (values["recall"], values["precision"]) for label, values in per_class.items()},
        {label: values["support"] for label, values in per_class.items()},
        title=title,
        operating_point=operating_point,
    )


def write_csv(path: Path, rows: list[dict]):
    """Rows of dicts (the first row's keys are the header) as a UTF-8 CSV file, atomically."""
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    text = buffer.getvalue()
    write_atomically(path, lambda partial: partial.write_text(text, encoding="utf-8"))


def example_columns(manifest, row, image_column: str) -> dict:
    """The first columns of a predictions.csv row: where the row is and what it holds.

    `line` and `manifest` say where a person finds the row
    (`Manifest.where`: for a `cv` fold, the line of the user's file, not of
    the fold's `test.csv`); `image` names the picture as the manifest does
    (`shown_image`); `image_file` is the file that was read, which the
    report's thumbnails and attention overlays open.
    """
    source, line = manifest.where(row)
    return {
        "line": line,
        MANIFEST_COLUMN: str(source),
        "text": row.text or "",
        "image": shown_image(row, image_column),
        IMAGE_FILE_COLUMN: "" if row.image is None else str(row.image),
    }


def shown_image(row, image_column: str) -> str:
    """A row's image as predictions.csv shows it: the path read, or for image bytes the Parquet file's own cell.

    A picture written from a Parquet manifest's bytes is shown as
    `predict --data` shows it (`ParquetRecord.as_written`: the Hugging Face
    struct's `path`, else `<image bytes of row N>`), not as the hashed file
    it was written to: that name says nothing to a person and goes with
    `mmkeras cache clear`. A manifest listing such files (a `cv` fold's)
    names the user's picture in its `source_image` column.
    """
    if row.image is None:
        return ""
    if embedded_image_name(row.image) is None:
        return str(row.image)
    return row.cells.get(SOURCE_IMAGE_COLUMN) or row.cells[image_column]


def round_figure(value):
    """A float rounded to 4 decimals for tables (other values unchanged)."""
    return round(float(value), 4) if isinstance(value, (float, np.floating)) else value


def sample_rows(rows: list[dict]) -> list[dict]:
    """Up to `SAMPLES_PER_KIND` right then wrong predictions (predictions.csv rows), most confident first."""
    by_score = sorted(rows, key=lambda row: -float(row["score"]))
    right = [row for row in by_score if int(row["correct"])][:SAMPLES_PER_KIND]
    wrong = [row for row in by_score if not int(row["correct"])][:SAMPLES_PER_KIND]
    return right + wrong


def image_file(row: dict) -> str:
    """The image file a predictions.csv row's picture was read from (`""`: no image).

    Results folders written before the `image_file` column named the file
    in `image`.
    """
    return row.get(IMAGE_FILE_COLUMN, row["image"])


def attention_overlay_path(folder, line) -> Path:
    return Path(folder) / ATTENTION_FOLDER / f"line-{line}.png"


def write_attention_overlays(run, folder, rows: list[dict]):
    """The text-to-image attention of a cross-attention run over the image of each row that has both modalities."""
    from mmkeras.evaluation.attention_maps import cross_attention_maps, has_cross_attention

    rows = [row for row in rows if row["text"] and image_file(row)]
    if not plots.can_plot() or not rows or not has_cross_attention(run.model):
        return
    texts, images = [row["text"] for row in rows], [image_file(row) for row in rows]
    maps = cross_attention_maps(run, texts, images)["image"]
    pixels = run.preprocessor(texts, images)["image"]
    (Path(folder) / ATTENTION_FOLDER).mkdir(exist_ok=True)
    for row, heatmap, image in zip(rows, maps, pixels):
        png = plots.heatmap_overlay_png(image, heatmap, title="text's attention over the image")
        write_atomically(attention_overlay_path(folder, row["line"]), lambda partial, png=png: partial.write_bytes(png))
