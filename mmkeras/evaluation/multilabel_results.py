"""The results folder a `--task multilabel` evaluation writes: beside a single-label one's, per label not per class.

```
TARGET/results/<manifest stem>/
  metrics.json     every figure `evaluate --json` prints (`evaluate_multilabel`)
  per_label.csv    per label: threshold, precision, recall, F1, average precision, support
  predictions.csv  per row: line, manifest, text, image, image_file (as a single-label one's,
                   `example_columns`), label (the true set, `a|b` as in a manifest), predicted
                   (the labels at or above their thresholds), exact (1: the two sets are equal),
                   wrong (how many labels differ), every label's score
  per_label.png    precision, recall and F1 per label
  pr_curves.png    each label's precision-recall curve with its average precision (per_label.csv's),
                   the precision and recall at its threshold marked (`plots.precision_recall_png`)
```

The same location (`results_dir`) and writers as a single-label results
folder (`write_folder`); the PNG needs matplotlib. TensorFlow-free.

Example:
>>> row = prediction_cells(["red", "ring", "square"], [1, 1, 0], [0.9, 0.2, 0.7], [0.5, 0.5, 0.5])
>>> row["label"], row["predicted"], row["exact"], row["wrong"]
('red|ring', 'red|square', 0, 2)
"""

from pathlib import Path

from mmkeras.data.label_sets import LABEL_SEPARATOR
from mmkeras.evaluation import plots
from mmkeras.evaluation.results_folder import (
    PR_CURVES_CHART,
    PREDICTIONS_FILE,
    SAMPLES_PER_KIND,
    example_columns,
    precision_recall_png,
    round_figure,
    write_folder,
)

PER_LABEL_FILE = "per_label.csv"
PER_LABEL_CHART = "per_label.png"
# The columns of per_label.csv after `label`, in order (keys of `multilabel_figures`' per-label figures).
PER_LABEL_COLUMNS = ("threshold", "precision", "recall", "f1", "average_precision", "support")


def write_multilabel_results(folder, figures: dict, predictions: list[dict], curves: dict[str, tuple]) -> Path:
    """Write metrics.json, per_label.csv, predictions.csv and (with matplotlib) per_label.png and pr_curves.png.

    Args:
        folder: the results folder (created).
        figures: what `evaluate_multilabel` returns.
        predictions: one dict per row (`prediction_rows`).
        curves: `{label: (precision, recall, thresholds)}` (`multilabel_metrics.precision_recall_curve`).

    Returns:
        The folder.
    """
    tables = {PER_LABEL_FILE: per_label_rows(figures), PREDICTIONS_FILE: predictions}
    return write_folder(folder, figures, tables, lambda: {
        PER_LABEL_CHART: per_label_png(figures),
        PR_CURVES_CHART: precision_recall_png(figures["per_label"], curves, "precision-recall per label",
                                              "its threshold (per_label.csv)"),
    })


def per_label_rows(figures: dict) -> list[dict]:
    """The rows of per_label.csv."""
    return [
        {"label": label, **{column: round_figure(values[column]) for column in PER_LABEL_COLUMNS}}
        for label, values in figures["per_label"].items()
    ]


def per_label_png(figures: dict) -> bytes:
    """Precision, recall and F1 of each label, at its threshold."""
    per_label = figures["per_label"]
    groups = {
        name: {label: values[key] for label, values in per_label.items()}
        for name, key in (("precision", "precision"), ("recall", "recall"), ("F1", "f1"))
    }
    return plots.bar_chart_png(groups, title="per label, at its threshold", ylabel="")


def prediction_rows(manifest, image_column: str, labels: list[str], truth, scores, thresholds) -> list[dict]:
    """The rows of predictions.csv: the example (`example_columns`), the two label sets and every label's score.

    Args:
        manifest: the manifest evaluated (`Manifest.where` places each row).
        image_column: the manifest's image column (`shown_image`).
        labels: the run's labels, in score order.
        truth: [rows, labels] 0/1, the label cells (`multi_hot`).
        scores: [rows, labels] sigmoid scores.
        thresholds: per label, the score at or above which it is predicted.
    """
    return [
        {**example_columns(manifest, row, image_column), **prediction_cells(labels, truth[index], scores[index],
                                                                             thresholds)}
        for index, row in enumerate(manifest.rows)
    ]


def prediction_cells(labels: list[str], truth, scores, thresholds) -> dict:
    """One row's true and predicted label sets, `exact`, `wrong` (labels in one set only) and scores."""
    true = [label for label, present in zip(labels, truth) if present]
    predicted = [label for label, score, cut in zip(labels, scores, thresholds) if score >= cut]
    return {
        "label": LABEL_SEPARATOR.join(true),
        "predicted": LABEL_SEPARATOR.join(predicted),
        "exact": int(true == predicted),
        "wrong": len(set(true) ^ set(predicted)),
        **{f"score_{label}": round(float(score), 4) for label, score in zip(labels, scores)},
    }


def sample_rows(rows: list[dict]) -> list[dict]:
    """Up to `SAMPLES_PER_KIND` exact rows, then as many wrong ones (predictions.csv rows), most labels wrong first."""
    exact = [row for row in rows if int(row["exact"])][:SAMPLES_PER_KIND]
    wrong = sorted((row for row in rows if not int(row["exact"])), key=lambda row: -int(row["wrong"]))
    return exact + wrong[:SAMPLES_PER_KIND]
