import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmkeras.evaluation.metrics import classification_figures


def test_known_example():
    figures = classification_figures([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], ["a", "b", "c"])
    assert figures["accuracy"] == pytest.approx(0.6)
    assert figures["n"] == 5
    assert figures["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert figures["per_class"]["a"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert figures["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert figures["per_class"]["c"]["f1"] == 0.0
    assert figures["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=60))
def test_figures_are_consistent(pairs):
    y_true, y_pred = zip(*pairs)
    figures = classification_figures(y_true, y_pred, ["a", "b", "c", "d"])
    confusion = np.array(figures["confusion_matrix"])
    assert confusion.sum() == len(pairs)
    assert figures["accuracy"] == pytest.approx(np.mean(np.array(y_true) == np.array(y_pred)))
    assert 0.0 <= figures["macro_f1"] <= 1.0
    assert [figures["per_class"][k]["support"] for k in "abcd"] == confusion.sum(axis=1).tolist()
    if figures["accuracy"] == 1.0:
        assert figures["macro_f1"] == pytest.approx(1.0)
