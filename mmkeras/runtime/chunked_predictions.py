"""`predict_probabilities`: manifest rows preprocessed and predicted a chunk at a time, with progress (no TensorFlow).

Any model that maps a batch of model inputs to logits takes part: a bundle's
`Predictor.predict_inputs` or a run's Keras model (`evaluation.target_predictions`),
so evaluation, an export's threshold tuning and `benchmark --data` score rows
the same way.

Example:
>>> predictor = Predictor("bundles/demo")                                               # doctest: +SKIP
>>> predict_probabilities(predictor.predict_inputs, predictor.preprocessor, ["a red ring"], [None])  # doctest: +SKIP
array([[0.91, 0.03, 0.04, 0.02]])
"""

import numpy as np

from mmkeras.progress import step_progress
from mmkeras.runtime.outputs import softmax

# Rows preprocessed and predicted at a time. 32, not 64: evaluating an EfficientNet-Lite0 run at 224
# peaked at 1.46 GB against 2.02 GB, at the same accuracy and speed
# (docs/design.md#efficientnet-lite0-measured-as-a-user-would).
CHUNK_ROWS = 32


def predict_probabilities(
    predict_logits, preprocessor, texts, images, description="predicting", *, activation=softmax
) -> np.ndarray:
    """Class probabilities float64 [N, classes], preprocessing and predicting `CHUNK_ROWS` rows at a time.

    Args:
        predict_logits: a batch of model inputs (dict) -> logits.
        preprocessor: the `MultimodalPreprocessor` of the run or bundle.
        texts, images: the rows' texts and images (`None` where missing).
        description: the progress line's name for the step.
        activation: logits to probabilities: `softmax`, or `sigmoid` for
            multilabel models.
    """
    probabilities = []
    with step_progress(description, len(texts)) as progress:
        for start in range(0, len(texts), CHUNK_ROWS):
            inputs = preprocessor(texts[start : start + CHUNK_ROWS], images[start : start + CHUNK_ROWS])
            probabilities.append(activation(predict_logits(inputs)))
            progress.update(min(start + CHUNK_ROWS, len(texts)))
    return np.concatenate(probabilities) if probabilities else np.zeros((0, 0))
