"""`load_target` and `predict_probabilities`: a run folder or a bundle, fed manifest rows in chunks.

A run (Keras) and its bundle (LiteRT, no TensorFlow) are read into the same
`(predict_logits, preprocessor, labels, run)`, so every evaluation (single
label, multi-label, the explanation, an export's threshold tuning) scores
both through the same `MultimodalPreprocessor` and gets comparable figures.

Example:
>>> predict_logits, preprocessor, labels, run = load_target("bundles/demo")  # doctest: +SKIP
>>> predict_probabilities(predict_logits, preprocessor, ["a red ring"], [None]).shape  # doctest: +SKIP
(1, 4)
"""

from collections.abc import Callable
from pathlib import Path

import numpy as np

from mmkeras.errors import UserError
from mmkeras.progress import step_progress
from mmkeras.runtime.bundle import BUNDLE_FILE
from mmkeras.runtime.outputs import softmax

# Rows preprocessed and predicted at a time. 32, not 64: evaluating an EfficientNet-Lite0 run at 224
# peaked at 1.46 GB against 2.02 GB, at the same accuracy and speed
# (docs/design.md#efficientnet-lite0-measured-as-a-user-would).
CHUNK_ROWS = 32


def load_target(target) -> tuple[Callable[[dict], np.ndarray], object, list[str], object]:
    """(predict_logits, preprocessor, labels, run) for a run folder (the loaded `Run`) or a bundle (`None`)."""
    target = Path(target)
    if (target / BUNDLE_FILE).is_file():
        from mmkeras.runtime.predictor import Predictor

        predictor = Predictor(target)
        return predictor.predict_inputs, predictor.preprocessor, predictor.labels, None
    from mmkeras.quantization.run_loading import load_run
    from mmkeras.runs import is_run_folder

    if not is_run_folder(target):
        raise UserError("neither a run folder nor a bundle folder", path=target)
    run = load_run(target)
    return run_predict_logits(run), run.preprocessor, run.labels, run


def run_predict_logits(run) -> Callable[[dict], np.ndarray]:
    """`predict_logits` of a loaded run's Keras model (numpy logits)."""
    return lambda inputs: np.asarray(run.model.predict_on_batch(inputs))


def predict_probabilities(
    predict_logits, preprocessor, texts, images, description="predicting", *, activation=softmax
) -> np.ndarray:
    """Class probabilities float64 [N, classes], preprocessing and predicting `CHUNK_ROWS` rows at a time.

    `activation` turns logits into probabilities: `softmax`, or `sigmoid` for multilabel models.
    """
    probabilities = []
    with step_progress(description, len(texts)) as progress:
        for start in range(0, len(texts), CHUNK_ROWS):
            inputs = preprocessor(texts[start : start + CHUNK_ROWS], images[start : start + CHUNK_ROWS])
            probabilities.append(activation(predict_logits(inputs)))
            progress.update(min(start + CHUNK_ROWS, len(texts)))
    return np.concatenate(probabilities) if probabilities else np.zeros((0, 0))
