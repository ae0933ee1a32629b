"""Multi-label figures (NumPy only): per-label thresholds tuned for F1, mAP, micro- and macro-F1, and the
precision-recall curve each average precision is the area under (`precision_recall_curve`, also a single-label
evaluation's per class, one class against the rest).

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
            "average_precision": average_precision(truth[:, column], scores[:, column]),
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


def precision_recall_curve(truth, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall of predicting a label where its score is at or above each distinct score.

    One point per distinct score, highest first (recall rising): rows with
    equal scores are predicted together, so every point is an operating
    point a threshold can choose, and the curve does not depend on the
    order of the rows. Recall is 0 throughout where no row has the label.

    Args:
        truth: [rows] 0/1, which rows have the label.
        scores: [rows] the label's scores.

    Returns:
        `(precision, recall, thresholds)`, float64 arrays of one length.

    Example:
    >>> precision, recall, thresholds = precision_recall_curve([1, 0, 1, 0], [0.9, 0.8, 0.8, 0.1])
    >>> precision.round(3).tolist(), recall.tolist(), thresholds.tolist()
    ([1.0, 0.667, 0.5], [0.5, 1.0, 1.0], [0.9, 0.8, 0.1])
    """
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    ranked_scores, ranked_truth = scores[order], np.asarray(truth, bool)[order]
    last_of_each_score = np.append(ranked_scores[1:] != ranked_scores[:-1], True) if len(scores) else []
    hits = np.cumsum(ranked_truth)[last_of_each_score].astype(np.float64)
    predicted = np.arange(1, len(scores) + 1)[last_of_each_score]
    return hits / predicted, hits / max(1, int(ranked_truth.sum())), ranked_scores[last_of_each_score]


def average_precision(truth, scores) -> float:
    """The area under the step curve of `precision_recall_curve`: each point's precision times the recall it
    adds (4 decimals; 0 where no row has the label).

    Without tied scores this is the mean of the precision at each row that
    has the label, rows ranked by score; rows with equal scores count as one
    operating point (an int8 bundle's scores tie often), so the figure does
    not depend on their order.

    Example:
    >>> average_precision([1, 0, 1, 0], [0.9, 0.8, 0.8, 0.1]), average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1])
    (0.8333, 0.8333)
    >>> average_precision([1, 0, 1, 0], [0.9, 0.7, 0.8, 0.1])
    1.0
    """
    if not np.asarray(truth, bool).any():
        return 0.0
    precision, recall, _ = precision_recall_curve(truth, scores)
    return round(float(np.sum(np.diff(recall, prepend=0.0) * precision)), 4)
