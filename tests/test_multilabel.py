"""`train --task multilabel`: label cells with several labels, sigmoid outputs, tuned thresholds, mAP and F1."""

import json

import numpy as np
import pytest
import tensorflow as tf
from test_cli_end_to_end import SAMPLES, run_cli, write_subset

from mmkeras.cli.app import main
from mmkeras.evaluation.multilabel_metrics import multi_hot, multilabel_figures, tune_thresholds
from mmkeras.training.multilabel_loss import MultiLabelLoss


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
    assert main(["train", "--data", str(train), "--val", str(val), "--out", str(out), "--task", "multilabel",
                 "--epochs", "2", "--batch-size", "8", "--fusion", "concat"]) == 0
    return {"out": out, "val": val}


def tagged_labels(multilabel_run) -> list[str]:
    lines = (multilabel_run["out"].parent / "train.csv").read_text().splitlines()[1:]
    lines += multilabel_run["val"].read_text().splitlines()[1:]
    return [line.split(",")[-1] for line in lines]


def test_multilabel_run_keeps_the_labels_and_their_tuned_thresholds(multilabel_run):
    labels = json.loads((multilabel_run["out"] / "labels.json").read_text())
    assert labels == sorted({part for line in tagged_labels(multilabel_run) for part in line.split("|")})
    metrics = json.loads((multilabel_run["out"] / "metrics.json").read_text())
    assert set(metrics["thresholds"]) == set(labels)
    assert {"val_mAP", "val_micro_f1", "val_macro_f1", "val_exact_match"} <= set(metrics)


def test_evaluate_reports_map_and_f1_of_a_multilabel_run(multilabel_run, capsys):
    code, out, err = run_cli(capsys, "evaluate", multilabel_run["out"], "--data", multilabel_run["val"], "--json")
    assert code == 0, err
    figures = json.loads(out)
    metrics = json.loads((multilabel_run["out"] / "metrics.json").read_text())
    # The same rows as the validation the thresholds were tuned on: the same figures.
    assert figures["mAP"] == metrics["val_mAP"] and figures["micro_f1"] == metrics["val_micro_f1"]
    assert figures["n"] == 12
