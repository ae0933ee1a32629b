"""`train --task multilabel`: label cells with several labels, sigmoid outputs, tuned thresholds, mAP and F1."""

import contextlib
import csv
import io
import json
import logging
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import mmkeras
from mmkeras.cli.app import main
from mmkeras.data.label_sets import multi_hot, split_labels
from mmkeras.data.manifest import read_manifest
from mmkeras.evaluation.multilabel_results import PER_LABEL_COLUMNS
from mmkeras.evaluation.report import write_report
from mmkeras.export.converter import export_bundle
from mmkeras.runtime.bundle_accuracy import bundle_accuracies
from mmkeras.runtime.predictor import Predictor
from mmkeras.runtime.test_vectors import read_test_vectors, verify_bundle
from mmkeras.tasks.multilabel_loss import MultiLabelLoss
from mmkeras.tasks.multilabel_metrics import multilabel_figures, tune_thresholds
from tests.helpers.cli import SAMPLES, WITHOUT_TENSORFLOW, LogLines, run_cli, write_subset


def tagged_manifest(source, out, rows):
    """The first `rows` matching pairs, labelled `colour|shape` instead of `colour shape` (the last column)."""
    lines = write_subset(source, out, rows).read_text(encoding="utf-8").splitlines()
    tagged = [line.rsplit(",", 1)[0] + "," + line.rsplit(",", 1)[1].replace(" ", "|") for line in lines[1:]]
    out.write_text("\n".join([lines[0], *tagged]) + "\n", encoding="utf-8")
    return out


def test_multilabel_loss_is_the_mean_sigmoid_cross_entropy_of_the_cell_labels():
    label_sets = multi_hot(["a|c", "b"], ["a", "b", "c"])
    logits = np.array([[2.0, -1.0, 0.5], [0.5, 3.0, -2.0]], np.float32)  # row 1 also predicts "a": wrong
    losses = MultiLabelLoss(label_sets).per_example_loss(tf.constant([0, 1]), logits).numpy()
    expected = np.mean(np.logaddexp(0, logits) - label_sets * logits, axis=1)
    np.testing.assert_allclose(losses, expected, rtol=1e-5)
    assert float(MultiLabelLoss(label_sets).correct_predictions(tf.constant([0, 1]), logits)) == 1.0


def test_thresholds_tuned_per_label_beat_one_half():
    truth = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], np.float32)
    scores = np.array([[0.3, 0.6], [0.1, 0.8], [0.35, 0.95], [0.05, 0.55]])  # both separable, not at 0.5
    fixed = multilabel_figures(truth, scores, [0.5, 0.5], ["a", "b"])
    tuned = multilabel_figures(truth, scores, tune_thresholds(truth, scores), ["a", "b"])
    assert tuned["macro_f1"] == 1.0 > fixed["macro_f1"]
    assert tuned["mAP"] == fixed["mAP"] == 1.0  # ranking figures do not depend on thresholds


@pytest.fixture(scope="module")
def multilabel_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multilabel")
    train = tagged_manifest(SAMPLES / "matching" / "pairs.csv", folder / "train.csv", 24)
    val = tagged_manifest(SAMPLES / "matching" / "val_pairs.csv", folder / "val.csv", 12)
    out = folder / "run"
    log = LogLines()
    logging.getLogger("mmkeras").addHandler(log)
    try:
        with contextlib.redirect_stdout(io.StringIO()) as summary:
            assert main(["train", "--data", str(train), "--val", str(val), "--out", str(out), "--task", "multilabel",
                         "--epochs", "2", "--batch-size", "8", "--fusion", "concat"]) == 0
    finally:
        logging.getLogger("mmkeras").removeHandler(log)
    return {"out": out, "val": val, "summary": summary.getvalue(), "log": log.lines}


def tagged_labels(multilabel_run) -> list[str]:
    lines = (multilabel_run["out"].parent / "train.csv").read_text().splitlines()[1:]
    lines += multilabel_run["val"].read_text().splitlines()[1:]
    return [line.split(",")[-1] for line in lines]


@pytest.mark.slow
def test_multilabel_run_keeps_the_labels_and_their_tuned_thresholds(multilabel_run):
    labels = json.loads((multilabel_run["out"] / "labels.json").read_text())
    assert labels == sorted({part for line in tagged_labels(multilabel_run) for part in line.split("|")})
    metrics = json.loads((multilabel_run["out"] / "metrics.json").read_text())
    assert set(metrics["thresholds"]) == set(labels)
    assert {"val_mAP", "val_micro_f1", "val_macro_f1", "val_exact_match"} <= set(metrics)
    figures = f"val_mAP {metrics['val_mAP']:.4f}, val_micro_f1 {metrics['val_micro_f1']:.4f}, run in"
    assert figures in multilabel_run["summary"] and "val_accuracy" not in multilabel_run["summary"]


@pytest.mark.slow
def test_a_multilabel_runs_epoch_lines_and_report_name_its_accuracy_the_exact_match_at_one_half(multilabel_run):
    # Its `accuracy` is every label right at 0.5, not at the tuned thresholds: "val_accuracy 0.0000" read as broken.
    [line] = [message for message in multilabel_run["log"] if message.startswith("epoch 2/2  loss")]
    assert " exact_match@0.5 " in line and " val_exact_match@0.5 " in line and "accuracy" not in line
    page = write_report(multilabel_run["out"], multilabel_run["out"].parent / "names.html").read_text()
    summary = page[page.index('<section id="summary">'):page.index('<section id="curves">')]
    assert "<td>val_exact_match@0.5</td>" in summary and "<td>val_accuracy</td>" not in summary
    assert 'alt="exact_match@0.5 per epoch"' in page


@pytest.mark.slow
def test_evaluate_reports_map_and_f1_of_a_multilabel_run(multilabel_run, capsys):
    code, out, err = run_cli(capsys, "evaluate", multilabel_run["out"], "--data", multilabel_run["val"], "--json")
    assert code == 0, err
    figures = json.loads(out)
    metrics = json.loads((multilabel_run["out"] / "metrics.json").read_text())
    # The same rows as the validation the thresholds were tuned on: the same figures.
    assert figures["mAP"] == metrics["val_mAP"] and figures["micro_f1"] == metrics["val_micro_f1"]
    assert figures["n"] == 12


def test_the_python_api_evaluates_a_multilabel_run_as_the_cli_does(multilabel_run, capsys, tmp_path):
    # Before, `mmkeras.evaluate` scored every run as a softmax classifier: it refused the `a|b` cells
    # ("unknown label 'red|excited'") and gave single-tag rows an accuracy.
    one_tag = tmp_path / "one_tag.csv"
    lines = multilabel_run["val"].read_text(encoding="utf-8").splitlines()
    one_tag.write_text("\n".join([lines[0], *(line.split("|")[0] for line in lines[1:])]) + "\n", encoding="utf-8")
    for data in (multilabel_run["val"], one_tag):
        code, out, err = run_cli(capsys, "evaluate", multilabel_run["out"], "--data", data, "--json")
        assert code == 0, err
        figures = mmkeras.evaluate(multilabel_run["out"], data)
        assert json.loads(json.dumps(figures)) == json.loads(out)
        assert "accuracy" not in figures and figures["n"] == 12
    metrics = json.loads((multilabel_run["out"] / "metrics.json").read_text())
    assert mmkeras.evaluate(multilabel_run["out"], multilabel_run["val"])["mAP"] == metrics["val_mAP"]


def read_rows(path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as file:
        return list(csv.DictReader(file))


def check_results_folder(folder, figures: dict, data):
    """The files of a multilabel results folder hold `figures` and one row per manifest row, sets that give them."""
    assert figures["results_dir"] == str(folder)
    assert json.loads((folder / "metrics.json").read_text()) == json.loads(json.dumps(figures))
    labels = list(figures["per_label"])
    per_label = read_rows(folder / "per_label.csv")
    assert [row["label"] for row in per_label] == labels
    assert all(float(row[column]) == figures["per_label"][row["label"]][column]
               for row in per_label for column in PER_LABEL_COLUMNS)
    manifest, rows = read_manifest(data), read_rows(folder / "predictions.csv")
    assert [(row["manifest"], int(row["line"]), row["text"], row["image_file"]) for row in rows] == [
        (str(manifest.where(row)[0]), manifest.where(row)[1], row.text, str(row.image or "")) for row in manifest.rows]
    assert [set(split_labels(row["label"])) for row in rows] == [set(split_labels(row.label)) for row in manifest.rows]
    # The predicted sets are those `evaluate_multilabel` scored: they give its F1 per label and its exact match.
    truth, predicted = (multi_hot([row[column] for row in rows], labels) for column in ("label", "predicted"))
    assert [int(row["exact"]) for row in rows] == np.all(truth == predicted, axis=1).astype(int).tolist()
    assert round(float(np.mean([int(row["exact"]) for row in rows])), 4) == figures["exact_match"]
    for column, label in enumerate(labels):
        hits = np.sum(truth[:, column] * predicted[:, column])
        marked = np.sum(truth[:, column]) + np.sum(predicted[:, column])
        assert (round(float(2 * hits / marked), 4) if marked else 1.0) == figures["per_label"][label]["f1"]
    assert all(0 <= float(row[f"score_{label}"]) <= 1 for row in rows for label in labels)
    assert (folder / "per_label.png").read_bytes().startswith(b"\x89PNG")
    assert (folder / "pr_curves.png").read_bytes().startswith(b"\x89PNG")
    return rows


@pytest.mark.slow
def test_evaluate_of_a_multilabel_run_keeps_a_results_folder_and_the_report_shows_it(multilabel_run):
    # Before, a multilabel evaluation printed its figures and kept nothing: no rows to look at, no report section.
    figures = mmkeras.evaluate(multilabel_run["out"], multilabel_run["val"])
    rows = check_results_folder(multilabel_run["out"] / "results" / "val", figures, multilabel_run["val"])
    page = (multilabel_run["out"] / "report.html").read_text(encoding="utf-8")
    evaluation = page[page.index("<h3>On val</h3>"):page.index('<section id="bundles">')]  # after one_tag's
    assert f"<td>mAP</td><td>{figures['mAP']}</td>" in evaluation
    assert "<th>average precision</th>" in evaluation and "Sample predictions (" in evaluation
    exact = sum(row["exact"] == "1" for row in rows)
    assert evaluation.count("true <b>{") == min(6, exact) + min(6, len(rows) - exact)


@pytest.fixture(scope="module")
def multilabel_bundles(multilabel_run):
    """mode -> a bundle exported from the multilabel run: float, and post-training int8."""
    root = multilabel_run["out"].parent
    for mode in ("none", "int8"):
        export_bundle(multilabel_run["out"], root / f"bundle-{mode}", quantize=mode)
    return {mode: root / f"bundle-{mode}" for mode in ("none", "int8")}


def device_cli(*args) -> dict:
    """`mmkeras ARGS --json` in a fresh interpreter where TensorFlow, Keras and keras-hub cannot be imported."""
    done = subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW, *map(str, args), "--json"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
def test_a_multilabel_bundle_carries_its_task_sigmoid_output_and_the_run_thresholds(multilabel_run, multilabel_bundles):
    bundle = json.loads((multilabel_bundles["none"] / "bundle.json").read_text())
    tuned = json.loads((multilabel_run["out"] / "metrics.json").read_text())["thresholds"]
    assert (bundle["task"], bundle["output_activation"]) == ("multilabel", "sigmoid")
    assert bundle["thresholds"] == [tuned[label] for label in bundle["labels"]]
    assert bundle["conversion"]["thresholds_tuned_rows"] is None


@pytest.mark.slow
def test_an_int8_multilabel_bundle_carries_thresholds_tuned_on_its_own_validation_scores(multilabel_run,
                                                                                        multilabel_bundles):
    predictor = Predictor(multilabel_bundles["int8"])
    rows = read_manifest(multilabel_run["val"]).rows
    logits = predictor.predict_inputs(predictor.preprocessor([row.text for row in rows], [row.image for row in rows]))
    truth = multi_hot([row.label for row in rows], predictor.labels)
    assert predictor.thresholds == tune_thresholds(truth, predictor.scores(logits))
    assert predictor.bundle["conversion"]["thresholds_tuned_rows"] == len(rows)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["none", "int8"])
def test_predict_of_a_multilabel_bundle_gives_the_labels_at_or_above_their_thresholds(multilabel_run,
                                                                                   multilabel_bundles, mode):
    row = read_manifest(multilabel_run["val"]).rows[0]
    predictor = Predictor(multilabel_bundles[mode])
    printed = device_cli("predict", multilabel_bundles[mode], "--text", row.text, "--image", row.image)
    prediction = predictor.predict(row.text, row.image)
    # Sigmoid scores, one per label and independent of each other (they do not sum to 1).
    np.testing.assert_allclose(list(printed["scores"].values()), 1 / (1 + np.exp(-prediction.logits)), rtol=1e-5)
    expected = [label for label, cut in zip(predictor.labels, predictor.thresholds) if printed["scores"][label] >= cut]
    assert printed["labels"] == prediction.labels == expected


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["none", "int8"])
def test_evaluate_of_a_multilabel_bundle_gives_the_run_figures_without_tensorflow(multilabel_run, multilabel_bundles,
                                                                                 capsys, mode):
    code, out, err = run_cli(capsys, "evaluate", multilabel_run["out"], "--data", multilabel_run["val"], "--json")
    assert code == 0, err
    run_figures = json.loads(out)
    bundle_figures = device_cli("evaluate", multilabel_bundles[mode], "--data", multilabel_run["val"])
    assert bundle_figures.pop("results_dir") == str(multilabel_bundles[mode] / "results" / "val")
    run_figures.pop("results_dir")
    if mode == "none":  # the same model: the same figures, per label too
        assert bundle_figures == run_figures
    else:  # int8 moves scores a little: the same figures, on the same rows, near the run's
        assert bundle_figures.keys() == run_figures.keys() and bundle_figures["n"] == run_figures["n"]
        assert abs(bundle_figures["mAP"] - run_figures["mAP"]) <= 0.1


@pytest.mark.slow
def test_evaluate_of_a_multilabel_bundle_keeps_a_results_folder_without_tensorflow(multilabel_run, multilabel_bundles):
    bundle = multilabel_bundles["int8"]
    figures = device_cli("evaluate", bundle, "--data", multilabel_run["val"])  # TensorFlow cannot be imported
    rows = check_results_folder(bundle / "results" / "val", figures, multilabel_run["val"])
    predictor = Predictor(bundle)
    for row in rows:  # each row's set is the bundle's prediction of it
        prediction = predictor.predict(row["text"], row["image_file"] or None)
        assert split_labels(row["predicted"]) == prediction.labels


@pytest.mark.slow
def test_benchmark_data_scores_multilabel_bundles_by_evaluate_exact_match(multilabel_run, multilabel_bundles):
    bundles = [multilabel_bundles["none"], multilabel_bundles["int8"]]
    scored = bundle_accuracies(bundles, multilabel_run["val"])
    for bundle, figures in zip(bundles, scored):
        assert figures["metric"] == "exact match"
        exact_match = device_cli("evaluate", bundle, "--data", multilabel_run["val"])["exact_match"]
        assert round(figures["correct"] / figures["rows"], 4) == exact_match
    assert scored[0]["agreeing"] == scored[0]["rows"]


@pytest.mark.slow
def test_multilabel_test_vectors_record_the_label_sets_and_verify(multilabel_bundles):
    vectors = read_test_vectors(multilabel_bundles["int8"])["vectors"]
    predictor = Predictor(multilabel_bundles["int8"])
    assert all(vector["labels"] == predictor.predict(vector["text"], multilabel_bundles["int8"] / vector["image"]
                                                     if vector["image"] else None).labels for vector in vectors)
    assert verify_bundle(multilabel_bundles["int8"])["passed"]


@pytest.mark.slow
def test_qat_of_a_multilabel_run_trains_its_sigmoid_loss_and_exports_an_int8_multilabel_bundle(multilabel_run):
    root = multilabel_run["out"].parent
    float_loss = json.loads((multilabel_run["out"] / "metrics.json").read_text())["loss"]
    with contextlib.redirect_stdout(io.StringIO()) as summary:
        assert main(["qat", str(multilabel_run["out"]), "--data", str(root / "train.csv"), "--val",
                     str(multilabel_run["val"]), "--out", str(root / "qat"), "--epochs", "1", "--batch-size", "8",
                     "--calibration-batches", "1"]) == 0
    # Its accuracy is the exact match at 0.5, named so (not "val_accuracy 0.0000", which read as broken).
    assert "val_exact_match@0.5 " in summary.getvalue() and "accuracy" not in summary.getvalue()
    # The fake-quantized model starts from the float weights: near the float run's per-label sigmoid loss
    # (a softmax over the label cells would start above log(cells) > 2).
    assert abs(json.loads((root / "qat" / "metrics.json").read_text())["initial_loss"] - float_loss) < 0.2
    export_bundle(root / "qat", root / "bundle-qat", quantize="int8")
    bundle = json.loads((root / "bundle-qat" / "bundle.json").read_text())
    assert bundle["conversion"]["qat"] and bundle["output_activation"] == "sigmoid"
    assert bundle["conversion"]["thresholds_tuned_rows"] == 12  # re-tuned on the int8 model's own scores
    figures = device_cli("evaluate", root / "bundle-qat", "--data", multilabel_run["val"])
    assert figures["n"] == 12 and 0 <= figures["mAP"] <= 1
