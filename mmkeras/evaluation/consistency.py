"""Multimodal consistency: how the fused prediction relates to the text-only and image-only ones."""

import numpy as np


def consistency_figures(y_true, fused, text_only, image_only) -> dict:
    """Agreement between the fused and the single-modality predictions, and flipped correct predictions.

    Args:
        y_true: true class indices [N].
        fused: predicted class indices with both modalities [N].
        text_only: predicted class indices with the image removed [N].
        image_only: predicted class indices with the text removed [N].

    Returns:
        `agreement_with_text_only` / `agreement_with_image_only`: the share
        of rows whose fused prediction equals that single-modality one;
        `flipped_without_image` / `flipped_without_text`: the share of the
        correctly classified rows that become wrong when that modality is
        removed (`None` when no row is correct); `correct_rows`: how many
        rows the fused model gets right.

    Example:
    >>> figures = consistency_figures([0, 1], [0, 1], [0, 0], [1, 1])
    >>> figures["agreement_with_text_only"], figures["flipped_without_text"]
    (0.5, 0.5)
    """
    y_true, fused, text_only, image_only = (
        np.asarray(values, np.int64) for values in (y_true, fused, text_only, image_only)
    )
    correct = fused == y_true
    correct_rows = int(correct.sum())

    def flipped(ablated):
        return float(np.mean(ablated[correct] != y_true[correct])) if correct_rows else None

    return {
        "agreement_with_text_only": float(np.mean(fused == text_only)) if len(fused) else None,
        "agreement_with_image_only": float(np.mean(fused == image_only)) if len(fused) else None,
        "flipped_without_image": flipped(text_only),
        "flipped_without_text": flipped(image_only),
        "correct_rows": correct_rows,
    }
