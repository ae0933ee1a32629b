import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmkeras.training.cross_validation import stratified_folds
from tests.helpers.cli import SAMPLES, run_cli, write_subset


@given(st.lists(st.sampled_from("abcd"), min_size=4, max_size=80), st.integers(2, 4), st.integers(0, 5))
def test_folds_are_stratified_and_balanced(labels, folds, seed):
    assignment = stratified_folds(labels, folds, seed)
    assert set(assignment.tolist()) <= set(range(folds))
    sizes = np.bincount(assignment, minlength=folds)
    assert sizes.max() - sizes.min() <= 1
    for label in set(labels):
        per_fold = np.bincount(assignment[np.array(labels) == label], minlength=folds)
        assert per_fold.max() - per_fold.min() <= 1
    assert stratified_folds(labels, folds, seed).tolist() == assignment.tolist()  # the seed fixes the split


@pytest.mark.slow
def test_cv_averages_the_folds_and_resumes_without_redoing_finished_ones(tmp_path, capsys):
    data = write_subset(SAMPLES / "train.csv", tmp_path / "data.csv", 60)
    out = tmp_path / "cv"
    args = ["cv", "--data", data, "--folds", "3", "--out", out, "--epochs", "1", "--batch-size", "16", "--json"]
    code, stdout, _ = run_cli(capsys, *args)
    assert code == 0
    result = json.loads(stdout)
    assert len(result["per_fold"]) == 3
    accuracies = [fold["accuracy"] for fold in result["per_fold"]]
    assert result["summary"]["accuracy"]["mean"] == pytest.approx(np.mean(accuracies))
    assert result["summary"]["accuracy"]["std"] == pytest.approx(np.std(accuracies, ddof=1))
    assert {"ece", "text_only_accuracy", "flipped_without_text"} <= set(result["summary"])
    test_rows = sum(len((out / f"fold-{k}" / "test.csv").read_text().splitlines()) - 1 for k in (1, 2, 3))
    assert test_rows == 60  # every row is held out exactly once

    # An interruption during fold 3: its evaluation was never written.
    kept_model = (out / "fold-1" / "run" / "model.keras").stat().st_mtime_ns
    (out / "fold-3" / "run" / "results" / "test" / "metrics.json").unlink()
    code, stdout, err = run_cli(capsys, *args)
    assert code == 0
    assert err.count("finished before") == 2
    assert (out / "fold-1" / "run" / "model.keras").stat().st_mtime_ns == kept_model
    assert json.loads(stdout)["per_fold"][:2] == result["per_fold"][:2]


def test_cv_refuses_a_folder_of_another_split(tmp_path, capsys):
    data = write_subset(SAMPLES / "train.csv", tmp_path / "data.csv", 12)
    (tmp_path / "cv").mkdir()
    (tmp_path / "cv" / "folds.json").write_text(json.dumps({"data": "other.csv"}))
    code, _, err = run_cli(capsys, "cv", "--data", data, "--folds", "3", "--out", tmp_path / "cv")
    assert code == 2
    assert "another --out" in err
