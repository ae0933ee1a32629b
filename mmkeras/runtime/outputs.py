"""`BundleOutput`: how a classifier bundle's logits become scores and labels, by its `output_activation`.

A task (`mmkeras.tasks`) picks one of `BUNDLE_OUTPUTS` for the bundles it
exports; the runtime, which must run without TensorFlow or the training
code, reads it back from bundle.json's `output_activation` (a bundle written
before that key existed is `softmax`). The bundle format, not the training
task, is what every port decodes (Python here, the browser's app.js, Android
and iOS), so the runtime's part of a task is keyed by the activation.

Example:
>>> SIGMOID.predicted_labels(np.array([0.9, 0.2, 0.7]), ["a", "b", "c"], [0.5, 0.5, 0.8])
['a']
>>> output_of({"labels": ["cat", "dog"]}).bundle_kind
'classifier'
"""

import dataclasses
from collections.abc import Callable

import numpy as np

# A bundle written before `output_activation` existed is single-label softmax.
DEFAULT_OUTPUT_ACTIVATION = "softmax"


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Each logit's own probability, computed stably in float64 (no overflow for large negative logits)."""
    values = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -values))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities along the last axis, computed stably in float64."""
    shifted = np.asarray(logits, dtype=np.float64) - np.max(logits, axis=-1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class BundleOutput:
    """One kind of classifier output: its activation, the bundle kind it makes, and its decoding.

    Args:
        activation: bundle.json's `output_activation`.
        bundle_kind: the `mmkeras.runtime.bundle.BUNDLE_KINDS` key of its bundles.
        scores: logits [..., num_labels] -> float64 scores of the same shape.
        thresholded: whether each label is predicted at or above its own
            threshold (bundle.json `thresholds`, any number of labels per
            example) instead of the best label alone.
    """

    activation: str
    bundle_kind: str
    scores: Callable[[np.ndarray], np.ndarray]
    thresholded: bool

    def predicted_labels(self, scores: np.ndarray, labels: list[str], thresholds: list[float] | None) -> list[str]:
        """The labels one example's scores predict: the best one, or those at or above their thresholds."""
        if not self.thresholded:
            return [labels[int(np.argmax(scores))]]
        if thresholds is None:
            raise ValueError(f"a {self.activation} output predicts the labels at or above their thresholds: give them")
        return [label for label, score, cut in zip(labels, scores, thresholds) if score >= cut]


# One label per example: a softmax over the labels (classify, match).
SOFTMAX = BundleOutput("softmax", "classifier", softmax, thresholded=False)
# Any number of labels per example: a sigmoid per label, each cut at its threshold (multilabel).
SIGMOID = BundleOutput("sigmoid", "multilabel", sigmoid, thresholded=True)
BUNDLE_OUTPUTS = {output.activation: output for output in (SOFTMAX, SIGMOID)}


def output_of(bundle: dict) -> BundleOutput:
    """The `BundleOutput` of a classifier bundle.json (`softmax` for a bundle without `output_activation`)."""
    return BUNDLE_OUTPUTS[bundle.get("output_activation", DEFAULT_OUTPUT_ACTIVATION)]
