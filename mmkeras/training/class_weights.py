"""Class weights for imbalanced labels (`--class-weight balanced`)."""

import numpy as np


def balanced_class_weights(label_ids, num_classes: int) -> list[float]:
    """Weight `rows / (classes * rows of the class)` per class, as scikit-learn's "balanced".

    Every class then weighs the same in total, and a balanced dataset gets all 1.0. `classes` counts
    the classes that have rows (as scikit-learn does); a class without rows gets 0.

    Example:
    >>> balanced_class_weights([0, 0, 0, 1], 2)
    [0.6666666666666666, 2.0]
    """
    counts = np.bincount(np.asarray(label_ids, dtype=np.int64), minlength=num_classes).astype(float)
    present = np.count_nonzero(counts)
    weights = np.divide(counts.sum(), present * counts, out=np.zeros(num_classes), where=counts > 0)
    return weights.tolist()
