import base64
import json
import re

import numpy as np
import pytest
from PIL import Image

from mmkeras.errors import UserError
from mmkeras.evaluation.multilabel_results import prediction_cells, write_multilabel_results
from mmkeras.evaluation.report import bundles_section, write_report
from mmkeras.tasks.multilabel_metrics import multilabel_figures, precision_recall_curve


def test_report_embeds_curves_figures_and_config(tmp_path):
    history = {"loss": [1.2, 0.8, 0.5], "val_loss": [1.3, 0.9, 0.7], "accuracy": [0.3, 0.6, 0.8]}
    (tmp_path / "history.json").write_text(json.dumps(history))
    (tmp_path / "metrics.json").write_text(json.dumps({"val_accuracy": 0.875}))
    (tmp_path / "config.yaml").write_text("fusion: <gated>\n")
    out = write_report(tmp_path, tmp_path / "r.html")
    page = out.read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 2  # loss and accuracy
    assert all(base64.b64decode(image).startswith(b"\x89PNG") for image in images)
    assert "0.875" in page
    assert "fusion: &lt;gated&gt;" in page  # config text is escaped


@pytest.mark.parametrize(("task", "accuracy"), [("multilabel", "exact_match@0.5"), ("classify", "accuracy")])
def test_the_report_names_the_accuracy_as_the_runs_task_measures_it(tmp_path, task, accuracy):
    # A multilabel run's `accuracy` is every label right at 0.5: shown as "val_accuracy 0.0" it read as broken.
    history = {"loss": [0.9, 0.5], "accuracy": [0.0, 0.25], "val_loss": [0.8, 0.6], "val_accuracy": [0.0, 0.0]}
    (tmp_path / "history.json").write_text(json.dumps(history))
    (tmp_path / "metrics.json").write_text(json.dumps({"val_accuracy": 0.0, "val_exact_match": 0.5}))
    (tmp_path / "config.yaml").write_text(f"task: {task}\n")
    page = write_report(tmp_path).read_text()
    assert f"<td>val_{accuracy}</td><td>0.0</td>" in page and "<td>val_exact_match</td><td>0.5</td>" in page
    assert f'alt="{accuracy} per epoch"' in page
    assert (accuracy == "accuracy") == ("<td>val_accuracy</td>" in page)


@pytest.mark.parametrize(("kept_epoch", "rows"), [
    (2, ["<td>kept epoch (lowest val_loss)</td><td>2</td>"]),  # the best epoch's weights kept: said once
    (None, ["<td>kept_epoch</td><td>–</td>", "<td>best epoch (lowest val_loss)</td><td>2</td>"]),  # QAT: the last
])  # fmt: skip
def test_the_kept_epoch_is_one_row_when_it_is_the_best(tmp_path, kept_epoch, rows):
    history = {"loss": [0.9, 0.5, 0.4], "val_loss": [0.8, 0.6, 0.7]}
    (tmp_path / "history.json").write_text(json.dumps(history))
    (tmp_path / "metrics.json").write_text(json.dumps({"val_loss": 0.6, "kept_epoch": kept_epoch}))
    page = write_report(tmp_path).read_text()
    assert [row for row in re.findall(r"<tr><td>[^<]*epoch[^<]*</td><td>[^<]*</td>", page)] == [
        f"<tr>{row}" for row in rows
    ]


def test_the_peak_memory_reads_in_gigabytes(tmp_path):
    (tmp_path / "history.json").write_text(json.dumps({"loss": [0.9]}))
    (tmp_path / "metrics.json").write_text(json.dumps({"loss": 0.9, "peak_memory_bytes": 1046228992}))
    assert "<td>peak memory</td><td>1.05 GB</td>" in write_report(tmp_path).read_text()  # was: 1046228992


def test_report_needs_a_history(tmp_path):
    with pytest.raises(UserError, match="history.json"):
        write_report(tmp_path)


def test_a_neighbours_damaged_bundle_does_not_stop_the_report(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "history.json").write_text(json.dumps({"loss": [1.0, 0.5]}))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "bundle.json").write_text('{\n  "format_version": 1,\n  oops\n}')
    assert write_report(run_dir, tmp_path / "r.html").is_file()


def tagged_results_folder(run_dir, image):
    """A multilabel results folder of 3 rows (written as `evaluate_multilabel` writes one), the first with `image`."""
    labels, thresholds = ["red", "ring", "square"], [0.5, 0.4, 0.6]
    truth = np.array([[1, 1, 0], [0, 0, 1], [1, 0, 1]], np.float32)
    scores = np.array([[0.9, 0.7, 0.1], [0.2, 0.1, 0.8], [0.8, 0.45, 0.3]])  # the last row: ring extra, square missed
    figures = multilabel_figures(truth, scores, thresholds, labels)
    rows = [
        {"line": index + 2, "manifest": "/data/tags.csv", "text": f"row {index}", "image": "",
         "image_file": str(image) if index == 0 else "", **prediction_cells(labels, truth[index], scores[index],
                                                                               thresholds)}
        for index in range(3)
    ]
    curves = {label: precision_recall_curve(truth[:, column], scores[:, column]) for column, label in enumerate(labels)}
    write_multilabel_results(run_dir / "results" / "tags", figures, rows, curves)
    return figures


def test_the_report_shows_a_multilabel_evaluation_with_its_label_sets(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "history.json").write_text(json.dumps({"loss": [1.0, 0.5]}))
    Image.new("RGB", (8, 8), "red").save(tmp_path / "red.png")
    figures = tagged_results_folder(run_dir, tmp_path / "red.png")
    page = write_report(run_dir, tmp_path / "r.html").read_text()
    evaluation = page[page.index('<section id="evaluation">'):page.index('<section id="bundles">')]
    assert "On tags" in evaluation and "exact match (every label right)" in evaluation
    assert f"<td>mAP</td><td>{figures['mAP']}</td>" in evaluation
    assert "<th>average precision</th>" in evaluation and "<td>ring</td><td>0.4</td>" in evaluation
    assert "Sample predictions (2 exact, 1 with a label wrong)" in evaluation
    assert "true <b>{red, square}</b>, predicted <b>{red, ring}</b>" in evaluation
    assert "missed square; extra ring" in evaluation and "square 0.300 &lt; 0.600, ring 0.450 ≥ 0.400" in evaluation
    assert "line 2 of tags.csv" in evaluation and evaluation.count('<div class="card ') == 3
    # The per-label chart, the precision-recall curves (the results folder's own file) and the one row's photo.
    assert evaluation.count("data:image/png") == 3
    curves = (run_dir / "results" / "tags" / "pr_curves.png").read_bytes()
    assert f'<img alt="precision-recall curves" src="data:image/png;base64,{base64.b64encode(curves).decode()}">' in (
        evaluation)
    (run_dir / "results" / "tags" / "pr_curves.png").unlink()  # a results folder written before the curves
    page = write_report(run_dir, tmp_path / "r.html").read_text()
    assert "No pr_curves.png in this results folder: evaluate again to draw it." in page


def test_a_results_folder_the_report_cannot_read_is_named_not_fatal(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "history.json").write_text(json.dumps({"loss": [1.0, 0.5]}))
    tagged_results_folder(run_dir, tmp_path / "gone.png")
    (run_dir / "results" / "old").mkdir()
    (run_dir / "results" / "old" / "metrics.json").write_text(json.dumps({"accuracy": 0.5}))  # no per_class
    page = write_report(run_dir, tmp_path / "r.html").read_text()
    assert ('On old</h3><p class="missing">not shown: its files could not be read (KeyError: &#x27;per_class&#x27;)'
            in page)
    assert "On tags" in page and "image not found" in page


def test_the_bundles_table_shows_a_multilabel_bundles_exact_match(tmp_path):
    folder = tmp_path / "bundles" / "tags"
    (folder / "results" / "tags_test").mkdir(parents=True)
    (folder / "results" / "tags_test" / "metrics.json").write_text(json.dumps({"exact_match": 0.675, "mAP": 0.9}))
    page = bundles_section([{"path": folder, "bundle": {"quantization": "int8"}, "status": "present"}])
    assert "accuracy or exact match (evaluate)" in page and "0.675" in page


def test_a_cv_folds_report_is_titled_with_its_fold(tmp_path):
    run_dir = tmp_path / "cv" / "fold-2" / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "history.json").write_text(json.dumps({"loss": [0.9, 0.5]}))
    page = write_report(run_dir).read_text()
    assert "<h1>Run fold-2/run</h1>" in page and "<title>mmkeras run fold-2/run</title>" in page
