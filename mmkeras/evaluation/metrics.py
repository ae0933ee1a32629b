"""Classification figures from labels and predictions (numpy only, no TensorFlow)."""

import numpy as np

from mmkeras.tasks.multilabel_metrics import average_precision, precision_recall_curve


def classification_figures(y_true, y_pred, labels: list[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix.

    Args:
        y_true: true class indices.
        y_pred: predicted class indices.
        labels: class names in index order.

    Returns:
        `{"accuracy", "macro_f1", "n", "per_class": {label: {"precision",
        "recall", "f1", "support"}}, "confusion_matrix"}`; the confusion
        matrix's rows are true classes and its columns predicted ones.
        Macro-F1 averages the classes present in `y_true` or `y_pred`.

    Example:
    >>> figures = classification_figures([0, 1, 1], [0, 1, 0], ["a", "b"])
    >>> round(figures["accuracy"], 3), figures["confusion_matrix"]
    (0.667, [[1, 0], [1, 1]])
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    true_positives = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    precision = np.divide(true_positives, predicted, out=np.zeros_like(true_positives), where=predicted > 0)
    recall = np.divide(true_positives, support, out=np.zeros_like(true_positives), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    seen = (support + predicted) > 0
    return {
        "accuracy": float(true_positives.sum() / max(1, len(y_true))),
        "macro_f1": float(f1[seen].mean()) if seen.any() else 0.0,
        "n": int(len(y_true)),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion_matrix": confusion.tolist(),
    }


def top_k_accuracy(probabilities, y_true, k: int) -> float:
    """The share of rows whose true class is among the `k` highest scores.

    Example:
    >>> top_k_accuracy([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]], [1, 2], k=2)
    0.5
    """
    probabilities = np.asarray(probabilities)
    y_true = np.asarray(y_true, dtype=np.int64)
    if not len(y_true):
        return 0.0
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == y_true[:, None], axis=1)))


def one_vs_rest_curves(probabilities, y_true, labels: list[str]) -> dict[str, tuple]:
    """Each class's precision-recall curve against the rest (`precision_recall_curve` of its column of scores).

    Args:
        probabilities: float [N, classes], the softmax scores.
        y_true: true class indices [N].
        labels: class names in index order.

    Returns:
        `{label: (precision, recall, thresholds)}`.
    """
    probabilities, y_true = np.asarray(probabilities), np.asarray(y_true)
    return {label: precision_recall_curve(y_true == index, probabilities[:, index]) for index, label in
            enumerate(labels)}


def average_precision_figures(probabilities, y_true, labels: list[str]) -> dict:
    """Each class's average precision, one class against the rest, and their mean over the classes present.

    The same figure as a multilabel label's (`average_precision`): the area
    under the class's precision-recall curve when it is predicted wherever
    its score reaches a threshold, whatever the other classes score.

    Returns:
        `{"macro_average_precision", "per_class": {label: average precision}}`;
        a class no row has scores 0 and is left out of the mean (of the
        rounded per-class figures, as a multilabel `mAP`).

    Example:
    >>> average_precision_figures([[0.6, 0.4], [0.2, 0.8], [0.7, 0.3]], [0, 1, 1], ["a", "b"])
    {'macro_average_precision': 0.6666, 'per_class': {'a': 0.5, 'b': 0.8333}}
    """
    probabilities, y_true = np.asarray(probabilities), np.asarray(y_true)
    per_class = {label: average_precision(y_true == index, probabilities[:, index]) for index, label in
                 enumerate(labels)}
    present = [per_class[label] for index, label in enumerate(labels) if np.any(y_true == index)]
    return {
        "macro_average_precision": round(float(np.mean(present)), 4) if present else 0.0,
        "per_class": per_class,
    }
