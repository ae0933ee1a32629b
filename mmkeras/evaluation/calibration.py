"""Calibration: how far a model's confidence is from its accuracy (numpy only, no TensorFlow)."""

import numpy as np

# The binning of Guo et al. 2017 ("On Calibration of Modern Neural Networks"), the usual choice.
CALIBRATION_BINS = 15


def calibration_figures(probabilities, y_true, bins: int = CALIBRATION_BINS) -> dict:
    """Expected calibration error and the reliability diagram's bins.

    The confidence of a row is its top probability; rows are binned by
    confidence into `bins` equal-width bins over (0, 1]. The expected
    calibration error is the row-weighted mean of |accuracy - confidence|
    over the bins.

    Args:
        probabilities: float [N, classes], each row summing to 1.
        y_true: true class indices [N].
        bins: number of confidence bins.

    Returns:
        `{"ece", "bins", "reliability": [{"lower", "upper", "count",
        "confidence", "accuracy"}]}`; an empty bin's `confidence` and
        `accuracy` are `None` (JSON null, never NaN).

    Example:
    >>> figures = calibration_figures([[0.9, 0.1], [0.6, 0.4]], [0, 1], bins=10)
    >>> round(figures["ece"], 3)
    0.35
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.int64)
    confidence = probabilities.max(axis=1) if len(probabilities) else np.zeros(0)
    correct = (probabilities.argmax(axis=1) == y_true) if len(probabilities) else np.zeros(0, bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds confidences in (edges[i], edges[i + 1]]; a confidence of exactly 0 joins bin 0.
    bin_of = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    reliability, error = [], 0.0
    for index in range(bins):
        members = bin_of == index
        count = int(members.sum())
        entry = {"lower": float(edges[index]), "upper": float(edges[index + 1]), "count": count,
                 "confidence": None, "accuracy": None}
        if count:
            entry["confidence"] = float(confidence[members].mean())
            entry["accuracy"] = float(correct[members].mean())
            error += count * abs(entry["accuracy"] - entry["confidence"])
        reliability.append(entry)
    return {"ece": error / max(1, len(confidence)), "bins": bins, "reliability": reliability}
