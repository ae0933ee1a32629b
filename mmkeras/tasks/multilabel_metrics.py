"""Multi-label figures (NumPy only): per-label thresholds tuned for F1, mAP, micro- and macro-F1.

Example:
>>> import numpy as np
>>> truth = np.array([[1, 0], [0, 1], [1, 1]])
>>> scores = np.array([[0.9, 0.2], [0.3, 0.8], [0.7, 0.6]])
>>> thresholds = tune_thresholds(truth, scores)
>>> multilabel_figures(truth, scores, thresholds, ["a", "b"])["micro_f1"]
1.0
"""

import numpy as np


def tune_thresholds(truth: np.ndarray, scores: np.ndarray) -> list[float]:
    """Per label, the score threshold that maximises its F1 on these rows (0.5 for a label never present).

    Thresholds lie halfway between neighbouring scores, never on one: a score recomputed elsewhere (another
    sigmoid, float32 vs float64) lands on the same side.
    """
    thresholds = []
    for column in range(truth.shape[1]):
        if not truth[:, column].any():
            thresholds.append(0.5)
            continue
        distinct = np.unique(scores[:, column])
        cuts = np.concatenate([[distinct[0] / 2], (distinct[1:] + distinct[:-1]) / 2])
        f1 = [_f1(truth[:, column], scores[:, column] >= cut) for cut in cuts]
        thresholds.append(float(cuts[int(np.argmax(f1))]))
    return thresholds


def multilabel_figures(truth: np.ndarray, scores: np.ndarray, thresholds, labels: list[str]) -> dict:
    """`mAP` (mean average precision over labels present), `micro_f1`, `macro_f1`, `exact_match`, `n`,
    and per label `average_precision`, `precision`, `recall`, `f1`, `threshold` and `support`.

    A label's precision is 0 where no row is predicted to have it, its
    recall 0 where no row has it (as `classification_figures` does).
    """
    predicted = scores >= np.asarray(thresholds)[None, :]
    per_label = {}
    for column, label in enumerate(labels):
        per_label[label] = {
            "average_precision": _average_precision(truth[:, column], scores[:, column]),
            "precision": _share(truth[:, column], predicted[:, column]),
            "recall": _share(predicted[:, column], truth[:, column]),
            "f1": round(_f1(truth[:, column], predicted[:, column]), 4),
            "threshold": round(float(thresholds[column]), 4),
            "support": int(truth[:, column].sum()),
        }
    present = [figures["average_precision"] for figures in per_label.values() if figures["support"]]
    return {
        "mAP": round(float(np.mean(present)), 4) if present else 0.0,
        "micro_f1": round(_f1(truth.ravel(), predicted.ravel()), 4),
        "macro_f1": round(float(np.mean([figures["f1"] for figures in per_label.values()])), 4),
        "exact_match": round(float(np.mean(np.all(predicted == truth.astype(bool), axis=1))), 4),
        "n": int(len(truth)),
        "per_label": per_label,
    }


def _f1(truth, predicted) -> float:
    truth, predicted = np.asarray(truth, bool), np.asarray(predicted, bool)
    true_positives = np.sum(truth & predicted)
    denominator = np.sum(truth) + np.sum(predicted)
    return float(2 * true_positives / denominator) if denominator else 1.0


def _share(hits, among) -> float:
    """The share of the rows `among` marks that `hits` marks too (0 where `among` marks none), 4 decimals."""
    hits, among = np.asarray(hits, bool), np.asarray(among, bool)
    return round(float(np.sum(hits & among) / np.sum(among)), 4) if among.any() else 0.0


def _average_precision(truth, scores) -> float:
    """Mean of the precision at each relevant row, rows ranked by score (0 without relevant rows)."""
    truth = np.asarray(truth, bool)[np.argsort(-np.asarray(scores), kind="stable")]
    if not truth.any():
        return 0.0
    precision_at = np.cumsum(truth) / np.arange(1, len(truth) + 1)
    return round(float(precision_at[truth].mean()), 4)
