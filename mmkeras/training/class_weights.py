"""Class weights for imbalanced labels (`--class-weight balanced`)."""

import numpy as np


def balanced_class_weights(label_ids, num_classes: int) -> list[float]:
    """Weight `rows / (classes * rows of the class)` per class, as scikit-learn's "balanced".

    A balanced dataset gets all 1.0; a class with no rows gets 0 (it contributes no loss).

    Example:
    >>> balanced_class_weights([0, 0, 0, 1], 2)
    [0.6666666666666666, 2.0]
    """
    counts = np.bincount(np.asarray(label_ids, dtype=np.int64), minlength=num_classes).astype(float)
    weights = np.divide(counts.sum(), num_classes * counts, out=np.zeros(num_classes), where=counts > 0)
    return weights.tolist()
