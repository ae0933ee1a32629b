import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmkeras.evaluation.calibration import calibration_figures
from mmkeras.evaluation.consistency import consistency_figures
from mmkeras.evaluation.metrics import top_k_accuracy


def test_a_calibrated_model_has_zero_ece_and_an_overconfident_one_does_not():
    # 10 rows at confidence 0.8, 8 of them right: calibrated.
    probabilities = np.tile([0.8, 0.2], (10, 1))
    y_true = np.array([0] * 8 + [1] * 2)
    assert calibration_figures(probabilities, y_true)["ece"] == pytest.approx(0.0)
    # The same confidence with 4 right: ECE = |0.4 - 0.8|.
    y_true = np.array([0] * 4 + [1] * 6)
    figures = calibration_figures(probabilities, y_true)
    assert figures["ece"] == pytest.approx(0.4)
    filled = [entry for entry in figures["reliability"] if entry["count"]]
    assert len(filled) == 1 and filled[0]["lower"] < 0.8 <= filled[0]["upper"]
    assert filled[0]["accuracy"] == pytest.approx(0.4)


@given(st.lists(st.tuples(st.floats(0.01, 1.0), st.floats(0.01, 1.0), st.integers(0, 1)), min_size=1, max_size=40))
def test_ece_is_a_share_and_bins_count_every_row(rows):
    scores = np.array([[a, b] for a, b, _ in rows])
    probabilities = scores / scores.sum(axis=1, keepdims=True)
    figures = calibration_figures(probabilities, [label for *_, label in rows])
    assert 0.0 <= figures["ece"] <= 1.0
    assert sum(entry["count"] for entry in figures["reliability"]) == len(rows)
    assert len(figures["reliability"]) == figures["bins"] == 15
    json.dumps(figures, allow_nan=False)  # empty bins are null, never NaN


def test_top_k_accuracy_counts_the_true_class_among_the_k_best():
    probabilities = [[0.6, 0.3, 0.1], [0.2, 0.3, 0.5], [0.1, 0.2, 0.7]]
    assert top_k_accuracy(probabilities, [1, 1, 0], k=1) == 0.0
    assert top_k_accuracy(probabilities, [1, 1, 0], k=2) == pytest.approx(2 / 3)
    assert top_k_accuracy(probabilities, [1, 1, 0], k=3) == 1.0


def test_consistency_counts_agreement_and_flips_of_correct_rows():
    y_true = [0, 1, 2, 0]
    fused = [0, 1, 2, 1]  # 3 correct
    text_only = [0, 0, 2, 1]  # removing the image flips row 1
    image_only = [1, 1, 0, 1]  # removing the text flips rows 0 and 2
    figures = consistency_figures(y_true, fused, text_only, image_only)
    assert figures["correct_rows"] == 3
    assert figures["agreement_with_text_only"] == pytest.approx(3 / 4)
    assert figures["agreement_with_image_only"] == pytest.approx(2 / 4)
    assert figures["flipped_without_image"] == pytest.approx(1 / 3)
    assert figures["flipped_without_text"] == pytest.approx(2 / 3)
    assert consistency_figures([0], [1], [1], [1])["flipped_without_text"] is None
