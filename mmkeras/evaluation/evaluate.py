"""`evaluate`: figures of a run folder (Keras model) or a bundle (LiteRT, no TensorFlow) on a manifest.

Both paths feed the model through the same `MultimodalPreprocessor`, so a
run's and its float bundle's figures are directly comparable. The modality
ablation scores the same rows again with one modality removed, the way a
missing modality reaches the model on the device (empty text / no image).
"""

from pathlib import Path
from typing import Callable

import numpy as np

from mmkeras.data.manifest import read_manifest
from mmkeras.errors import UserError
from mmkeras.evaluation.metrics import classification_figures
from mmkeras.progress import step_progress
from mmkeras.runtime.bundle import BUNDLE_FILE

CHUNK_ROWS = 64


def load_target(target) -> tuple[Callable[[dict], np.ndarray], object, list[str]]:
    """(predict_logits, preprocessor, labels) for a run folder or a bundle folder."""
    target = Path(target)
    if (target / BUNDLE_FILE).is_file():
        from mmkeras.runtime.predictor import Predictor

        predictor = Predictor(target)
        return predictor.predict_inputs, predictor.preprocessor, predictor.labels
    from mmkeras.runs import is_run_folder, load_run

    if not is_run_folder(target):
        raise UserError("neither a run folder nor a bundle folder", path=target)
    run = load_run(target)
    return lambda inputs: np.asarray(run.model.predict_on_batch(inputs)), run.preprocessor, run.labels


def predict_classes(predict_logits, preprocessor, texts, images, description="predicting") -> np.ndarray:
    """Predicted class indices, preprocessing and predicting `CHUNK_ROWS` rows at a time."""
    predictions = []
    with step_progress(description, len(texts)) as progress:
        for start in range(0, len(texts), CHUNK_ROWS):
            inputs = preprocessor(texts[start : start + CHUNK_ROWS], images[start : start + CHUNK_ROWS])
            predictions.append(np.argmax(predict_logits(inputs), axis=-1))
            progress.update(min(start + CHUNK_ROWS, len(texts)))
    return np.concatenate(predictions) if predictions else np.zeros(0, dtype=np.int64)


def evaluate(target, data) -> dict:
    """Evaluate a run folder or a bundle on a labelled manifest.

    Args:
        target: a run folder (written by `train`/`qat`) or a bundle folder
            (written by `export_bundle`).
        data: a labelled manifest (CSV or JSONL).

    Returns:
        The figures of `classification_figures` plus `modality_ablation`:
        `{"text_only": {"accuracy", "macro_f1"}, "image_only": {...}}`.

    Example:
    >>> figures = evaluate("runs/demo", "samples/test.csv")  # doctest: +SKIP
    >>> figures["accuracy"], figures["modality_ablation"]["text_only"]["accuracy"]  # doctest: +SKIP
    (0.97, 0.34)
    """
    predict_logits, preprocessor, labels = load_target(target)
    manifest, _ = read_manifest(data).validate_images(preprocessor.image_size, "fail")
    y_true = manifest.encode_labels(labels)
    texts = [row.text for row in manifest.rows]
    images = [row.image for row in manifest.rows]
    missing = [None] * len(texts)

    def figures_for(texts, images, description) -> dict:
        predicted = predict_classes(predict_logits, preprocessor, texts, images, description)
        return classification_figures(y_true, predicted, labels)

    figures = figures_for(texts, images, "evaluating")
    text_only = figures_for(texts, missing, "evaluating text only")
    image_only = figures_for(missing, images, "evaluating image only")
    figures["modality_ablation"] = {
        name: {key: ablated[key] for key in ("accuracy", "macro_f1")}
        for name, ablated in (("text_only", text_only), ("image_only", image_only))
    }
    return figures
