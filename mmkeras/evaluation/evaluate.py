"""`evaluate`: figures of a run folder (Keras model) or a bundle (LiteRT, no TensorFlow) on a manifest.

`evaluate` is what `mmkeras evaluate` runs: it picks the evaluation the
target's task names (`Task.evaluation`: a `--task
multilabel` run or bundle: `evaluate_multilabel`; any other classifier:
`evaluate_classifier`; an align run, zero-shot: `zero_shot_evaluate`), so the
Python API and the CLI give the same figures.

For a classifier: Both paths feed the model through the same `MultimodalPreprocessor`, so a
run's and its float bundle's figures are directly comparable. The modality
ablation scores the same rows again with one modality removed, the way a
missing modality reaches the model on the device (empty text / no image),
from one preprocessing and, for a run, one backbone pass per row
(`modality_ablation.py`); the consistency figures compare those three
predictions row by row.
Everything is saved in the target's results folder (`results_folder`), and
the run's report is refreshed.
"""

import numpy as np

from mmkeras.data.manifest import decoded_as, read_manifest
from mmkeras.errors import UserError
from mmkeras.evaluation.calibration import calibration_figures
from mmkeras.evaluation.consistency import consistency_figures
from mmkeras.evaluation.metrics import (
    average_precision_figures,
    classification_figures,
    one_vs_rest_curves,
    top_k_accuracy,
)
from mmkeras.evaluation.modality_ablation import ModalityLogits
from mmkeras.evaluation.multilabel_evaluate import evaluate_multilabel
from mmkeras.evaluation.results_folder import (
    example_columns,
    results_dir,
    sample_rows,
    write_attention_overlays,
    write_results,
)
from mmkeras.evaluation.target_predictions import load_target
from mmkeras.evaluation.zero_shot import DEFAULT_PROMPT, zero_shot_evaluate
from mmkeras.progress import step_progress
from mmkeras.runs import manifest_columns
from mmkeras.runtime.chunked_predictions import CHUNK_ROWS
from mmkeras.runtime.outputs import softmax
from mmkeras.tasks.registry import target_task

# Top-k accuracies reported (those with k below the number of classes).
TOP_K = (2, 3, 5)


def evaluate(
    target,
    data,
    *,
    zero_shot: bool = False,
    prompt: str = DEFAULT_PROMPT,
    save_results: bool = True,
    columns: dict[str, str] | None = None,
) -> dict:
    """Evaluate a run folder or a bundle on a labelled manifest, the way its task needs.

    Args:
        target: a run folder (written by `train`, `qat` or `align`) or a
            bundle folder (written by `export_bundle`).
        data: a labelled manifest (CSV or JSONL); a multilabel target's
            label cells list labels separated by `|`.
        zero_shot: classify the manifest's images by its label names alone
            (an align run only; `zero_shot_evaluate`).
        prompt: with `zero_shot`, the text of a class, with `{label}`.
        save_results: a classifier's or a multilabel target's results
            folder and report refresh (`evaluate_classifier`,
            `evaluate_multilabel`).
        columns: `{role: column name}` of the manifest where it differs
            from a run's own (`mmkeras.runs.manifest_columns`).

    Returns:
        A multilabel target: `evaluate_multilabel`'s figures (`mAP`,
        `micro_f1`, ...); zero-shot: `zero_shot_evaluate`'s (with
        `prompt`); any other classifier: `evaluate_classifier`'s.

    Raises:
        UserError: an align run without `zero_shot` (it has no classifier),
            and every mistake the chosen evaluation finds.

    Example:
    >>> evaluate("runs/tags", "samples/tags.csv")["mAP"]  # doctest: +SKIP
    0.97
    """
    if zero_shot:
        return zero_shot_evaluate(target, data, prompt, columns=columns)
    task = target_task(target)
    if task.evaluation is None:
        raise UserError(f"an {task.name} run has no classifier: evaluate it with --zero-shot", path=target)
    routines = {"classifier": evaluate_classifier, "multilabel": evaluate_multilabel}
    return routines[task.evaluation](target, data, save_results=save_results, columns=columns)


def evaluate_classifier(target, data, *, save_results: bool = True, columns: dict[str, str] | None = None) -> dict:
    """Evaluate a (single-label) classifier run folder or bundle on a labelled manifest, and save the results.

    Args:
        target: a run folder (written by `train`/`qat`) or a bundle folder
            (written by `export_bundle`).
        data: a labelled manifest (CSV or JSONL).
        save_results: write `TARGET/results/<manifest stem>/` and refresh
            the run's report (see `results_folder`).
        columns: `{role: column name}` of the manifest where it differs
            from a run's own (`mmkeras.runs.manifest_columns`).

    Returns:
        The figures of `classification_figures`, each class's
        `average_precision` (in `per_class`) and their
        `macro_average_precision` (`average_precision_figures`), `top_k_accuracy`
        (`{"top_2": ...}`), `calibration` (`calibration_figures`: ECE over 15
        bins, the reliability bins), `modality_ablation` (`text_only`,
        `image_only`: `accuracy`, `macro_f1`, `per_class_recall`),
        `consistency` (`consistency_figures`), `model_ms_per_row` (the
        model's time per row here, preprocessing excluded) and
        `results_dir` (when saved).

    Example:
    >>> figures = evaluate_classifier("runs/demo", "samples/test.csv")  # doctest: +SKIP
    >>> figures["accuracy"], figures["calibration"]["ece"]  # doctest: +SKIP
    (0.97, 0.04)
    """
    predict_logits, preprocessor, labels, run = load_target(target)
    columns = manifest_columns(target, columns)
    manifest = read_manifest(data, columns=columns)
    manifest, _ = manifest.validate_images(preprocessor.image_size, "fail", **decoded_as(preprocessor))
    y_true = manifest.encode_labels(labels)
    texts = [row.text for row in manifest.rows]
    images = [row.image for row in manifest.rows]
    model_logits = ModalityLogits(predict_logits, preprocessor, None if run is None else run.model)
    fused, text_only, image_only = modality_probabilities(model_logits, preprocessor, texts, images)
    figures = classification_figures(y_true, fused.argmax(axis=1), labels)
    add_average_precision(figures, fused, y_true, labels)
    figures["top_k_accuracy"] = {f"top_{k}": top_k_accuracy(fused, y_true, k) for k in TOP_K if k < len(labels)}
    figures["calibration"] = calibration_figures(fused, y_true)
    figures["modality_ablation"] = {
        name: ablation_figures(y_true, probabilities, labels)
        for name, probabilities in (("text_only", text_only), ("image_only", image_only))
    }
    figures["consistency"] = consistency_figures(
        y_true, fused.argmax(axis=1), text_only.argmax(axis=1), image_only.argmax(axis=1)
    )
    figures["model_ms_per_row"] = model_logits.milliseconds_per_row()
    if save_results:
        folder = results_dir(target, data)
        figures["results_dir"] = str(folder)
        rows = prediction_rows(manifest, columns["image"], labels, y_true, fused, text_only, image_only)
        write_results(folder, figures, rows, one_vs_rest_curves(fused, y_true, labels))
        if run is not None:
            write_attention_overlays(run, folder, sample_rows(rows))
        from mmkeras.evaluation.report import keep_evaluation

        keep_evaluation(target, bundle=run is None)
    return figures


def add_average_precision(figures: dict, probabilities, y_true, labels: list[str]):
    """Each class's average precision into its `per_class` figures, and their mean (`macro_average_precision`)."""
    found = average_precision_figures(probabilities, y_true, labels)
    for label, value in found["per_class"].items():
        figures["per_class"][label]["average_precision"] = value
    figures["macro_average_precision"] = found["macro_average_precision"]


def modality_probabilities(model_logits: ModalityLogits, preprocessor, texts, images) -> list[np.ndarray]:
    """Class probabilities (float64 [N, classes]) with both modalities, text only and image only.

    Each chunk of `CHUNK_ROWS` rows is preprocessed once (`ModalityLogits`).
    """
    parts = {"fused": [], "text_only": [], "image_only": []}
    with step_progress("evaluating (both modalities, text only, image only)", len(texts)) as progress:
        for start in range(0, len(texts), CHUNK_ROWS):
            inputs = preprocessor(texts[start : start + CHUNK_ROWS], images[start : start + CHUNK_ROWS])
            for name, logits in model_logits(inputs).items():
                parts[name].append(softmax(logits))
            progress.update(min(start + CHUNK_ROWS, len(texts)))
    return [np.concatenate(parts[name]) for name in ("fused", "text_only", "image_only")]


def ablation_figures(y_true, probabilities, labels: list[str]) -> dict:
    """Accuracy, macro-F1 and per-class recall of one modality alone."""
    figures = classification_figures(y_true, probabilities.argmax(axis=1), labels)
    return {
        "accuracy": figures["accuracy"],
        "macro_f1": figures["macro_f1"],
        "per_class_recall": {label: values["recall"] for label, values in figures["per_class"].items()},
    }


def prediction_rows(manifest, image_column: str, labels, y_true, fused, text_only, image_only) -> list[dict]:
    """The rows of predictions.csv: the example (`example_columns`), the true and predicted labels, and every
    class's score."""
    rows = []
    for index, row in enumerate(manifest.rows):
        predicted = int(fused[index].argmax())
        rows.append(
            {
                **example_columns(manifest, row, image_column),
                "label": labels[y_true[index]],
                "predicted": labels[predicted],
                "score": round(float(fused[index, predicted]), 4),
                "correct": int(predicted == y_true[index]),
                "text_only_predicted": labels[int(text_only[index].argmax())],
                "image_only_predicted": labels[int(image_only[index].argmax())],
                **{f"score_{label}": round(float(fused[index, column]), 4) for column, label in enumerate(labels)},
            }
        )
    return rows
