"""Average precision and the precision-recall curves of a results folder (pr_curves.png), without a model."""

import csv
import json

import numpy as np
import pytest

from mmkeras.evaluation import plots
from mmkeras.evaluation.metrics import average_precision_figures, one_vs_rest_curves
from mmkeras.evaluation.multilabel_results import write_multilabel_results
from mmkeras.evaluation.results_folder import precision_recall_png
from mmkeras.tasks.multilabel_metrics import average_precision, multilabel_figures, precision_recall_curve


def test_tied_scores_are_one_operating_point_whatever_the_rows_order():
    # Ranked 0.9 (yes), 0.8 (no), 0.8 (yes), 0.1 (no): the two rows at 0.8 are predicted together, so the curve has
    # the points (recall 0.5, precision 1) and (recall 1, precision 2/3): AP = 0.5 * 1 + 0.5 * 2/3 = 0.8333.
    # Ranked by row order within the tie, it was 1.0 with the positive row first and 0.8333 after it.
    truth, scores = np.array([1, 1, 0, 0]), np.array([0.9, 0.8, 0.8, 0.1])
    for order in ([0, 1, 2, 3], [0, 2, 1, 3]):
        assert average_precision(truth[order], scores[order]) == 0.8333
        precision, recall, thresholds = precision_recall_curve(truth[order], scores[order])
        assert precision.tolist() == pytest.approx([1.0, 2 / 3, 0.5])
        assert recall.tolist() == [0.5, 1.0, 1.0] and thresholds.tolist() == [0.9, 0.8, 0.1]


def test_each_classs_average_precision_one_against_the_rest_by_hand():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.5, 0.4, 0.1], [0.3, 0.6, 0.1], [0.1, 0.3, 0.6], [0.6, 0.3, 0.1]])
    y_true = [0, 1, 1, 2, 1]
    figures = average_precision_figures(probabilities, y_true, ["cat", "dog", "owl"])
    # cat, ranked 0.7 (yes), 0.6, 0.5, 0.3, 0.1: AP 1.
    # dog, ranked 0.6 (yes), 0.4 (yes), 0.3 (row 4: yes; row 3: no, tied), 0.2: precision 1 at recall 1/3,
    #   1 at 2/3, 3/4 at 1: (1 + 1 + 0.75) / 3 = 0.9167.
    # owl, ranked 0.6 (yes) first: AP 1.
    assert figures == {"macro_average_precision": 0.9722, "per_class": {"cat": 1.0, "dog": 0.9167, "owl": 1.0}}
    # A class no row has scores 0 and stays out of the mean.
    absent = average_precision_figures(probabilities[:, :2] / 0.9, [0, 0, 0, 0, 0], ["cat", "dog"])
    assert absent["per_class"]["dog"] == 0.0 and absent["macro_average_precision"] == absent["per_class"]["cat"]


def drawn_figure(monkeypatch, *args, **kwargs):
    figures = []
    monkeypatch.setattr(plots, "_png", lambda figure: figures.append(figure) or b"")
    precision_recall_png(*args, **kwargs)
    return figures[0]


def step_area(line) -> float:
    """The area under a line drawn `steps-pre` (each x interval at the value of its right end)."""
    x, y = (np.asarray(values, dtype=np.float64) for values in line.get_data())
    assert line.get_drawstyle() == "steps-pre"
    return float(np.sum(np.diff(x) * y[1:]))


def tagged_figures(labels: int, rows: int = 60, seed: int = 0):
    random = np.random.default_rng(seed)
    truth = (random.random((rows, labels)) < 0.3).astype(np.int64)
    scores = np.clip(0.4 * truth + random.random((rows, labels)) * 0.8, 0, 1)
    thresholds = [0.5] * labels
    figures = multilabel_figures(truth, scores, thresholds, [f"tag{index}" for index in range(labels)])
    curves = {label: precision_recall_curve(truth[:, column], scores[:, column])
              for column, label in enumerate(figures["per_label"])}
    return figures, curves


def test_each_curve_encloses_the_average_precision_its_legend_and_table_show(monkeypatch):
    figures, curves = tagged_figures(4)
    figure = drawn_figure(monkeypatch, figures["per_label"], curves, "per label", "its threshold")
    [axes] = figure.axes
    curves_drawn = [line for line in axes.get_lines() if line.get_label().startswith("tag")]
    assert len(curves_drawn) == 4
    for line, (label, values) in zip(curves_drawn, figures["per_label"].items()):
        assert line.get_label() == f"{label} (AP {values['average_precision']:.4f})"
        assert step_area(line) == pytest.approx(values["average_precision"], abs=5e-5)
    # The operating points: each label's precision and recall at its threshold, in its curve's colour.
    points = [line for line in axes.get_lines() if line.get_marker() == "o" and len(line.get_xdata()) == 1]
    assert [(float(point.get_xdata()[0]), float(point.get_ydata()[0])) for point in points] == [
        (values["recall"], values["precision"]) for values in figures["per_label"].values()]
    assert [point.get_color() for point in points] == [line.get_color() for line in curves_drawn]
    assert "its threshold" in [text.get_text() for text in axes.get_legend().get_texts()]


def test_many_labels_are_small_multiples_of_those_with_the_most_rows(monkeypatch):
    figures, curves = tagged_figures(plots.PANELS_AT_MOST + 6)
    per_label = figures["per_label"]
    per_label["tag0"]["support"] = 0  # a label no row has: no recall, no curve
    figure = drawn_figure(monkeypatch, per_label, curves, "per label", "its threshold")
    shown = [axes.get_title().split()[0] for axes in figure.axes if axes.axison]
    assert len(shown) == plots.PANELS_AT_MOST and "tag0" not in shown
    assert shown == [label for label in per_label if label in shown]  # in the table's order
    left_out = set(per_label) - set(shown) - {"tag0"}
    assert len(left_out) == 5
    assert min(per_label[label]["support"] for label in shown) >= max(per_label[label]["support"] for label in left_out)
    assert "not drawn: 5 with the fewest rows and 1 without a row" in figure.get_suptitle()


def test_a_results_folder_has_pr_curves_where_matplotlib_is_and_the_figures_everywhere(tmp_path, monkeypatch):
    figures, curves = tagged_figures(3)
    write_multilabel_results(tmp_path / "with", figures, [], curves)
    assert (tmp_path / "with" / "pr_curves.png").read_bytes().startswith(b"\x89PNG")
    monkeypatch.setattr(plots, "can_plot", lambda: False)  # the device-only install
    write_multilabel_results(tmp_path / "without", figures, [], curves)
    assert not list((tmp_path / "without").glob("*.png"))
    with (tmp_path / "without" / "per_label.csv").open(newline="") as file:
        table = {row["label"]: float(row["average_precision"]) for row in csv.DictReader(file)}
    saved = json.loads((tmp_path / "without" / "metrics.json").read_text())
    assert table == {label: values["average_precision"] for label, values in saved["per_label"].items()}


def test_one_vs_rest_curves_are_each_classs_column_against_the_rest():
    probabilities = np.array([[0.7, 0.3], [0.4, 0.6], [0.2, 0.8]])
    curves = one_vs_rest_curves(probabilities, [0, 1, 0], ["cat", "dog"])
    precision, recall, thresholds = curves["dog"]
    assert thresholds.tolist() == [0.8, 0.6, 0.3] and precision.tolist() == [0.0, 0.5, 1 / 3]
    assert recall.tolist() == [0.0, 1.0, 1.0]
