"""`load_target`: a run folder or a bundle, read so that `predict_probabilities` feeds either manifest rows.

A run (Keras) and its bundle (LiteRT, no TensorFlow) are read into the same
`(predict_logits, preprocessor, labels, run)`, so every evaluation (single
label, multi-label, the explanation, an export's threshold tuning) scores
both through the same `MultimodalPreprocessor` and gets comparable figures
(`mmkeras.runtime.chunked_predictions.predict_probabilities`).

Example:
>>> predict_logits, preprocessor, labels, run = load_target("bundles/demo")  # doctest: +SKIP
>>> predict_probabilities(predict_logits, preprocessor, ["a red ring"], [None]).shape  # doctest: +SKIP
(1, 4)
"""

from collections.abc import Callable
from pathlib import Path

import numpy as np

from mmkeras.errors import UserError
from mmkeras.runtime.bundle import BUNDLE_FILE


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
    """`predict_logits` of a loaded run's Keras model (numpy logits), compiled once for every chunk size."""
    from mmkeras.models.inference_function import inference_function

    return inference_function(run.model)
