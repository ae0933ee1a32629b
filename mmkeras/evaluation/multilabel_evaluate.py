"""`evaluate_multilabel`: figures of a `--task multilabel` run or bundle on a manifest, at its tuned thresholds.

A run (Keras) and its bundle (LiteRT, no TensorFlow) go through the same
code: `evaluate`'s `load_target` and `predict_probabilities`, with a sigmoid
per label instead of the softmax. Both keep a results folder
(`multilabel_results`) where a single-label evaluation keeps its
(`results_dir`), and the run's report shows it.

Example:
>>> figures = evaluate_multilabel("runs/tags", "test.csv")  # doctest: +SKIP
>>> figures["mAP"], figures["micro_f1"], figures["macro_f1"]  # doctest: +SKIP
(0.97, 0.93, 0.91)
"""

from mmkeras.data.label_sets import checked_label_cells, multi_hot
from mmkeras.data.manifest import decoded_as, read_manifest
from mmkeras.evaluation.multilabel_results import prediction_rows, write_multilabel_results
from mmkeras.evaluation.results_folder import results_dir
from mmkeras.evaluation.target_predictions import load_target
from mmkeras.runs import manifest_columns
from mmkeras.runtime.bundle import read_bundle
from mmkeras.runtime.chunked_predictions import predict_probabilities
from mmkeras.runtime.outputs import sigmoid
from mmkeras.tasks.multilabel import run_thresholds
from mmkeras.tasks.multilabel_metrics import multilabel_figures, precision_recall_curve


def evaluate_multilabel(target, data, *, save_results: bool = True, columns: dict[str, str] | None = None) -> dict:
    """mAP, micro/macro-F1, exact match and per-label figures of a multilabel run or bundle on a manifest.

    Args:
        target: a `--task multilabel` run folder, or a bundle exported from one.
        data: a manifest whose label cells list labels separated by `|`.
        save_results: write `TARGET/results/<manifest stem>/`
            (`multilabel_results`) and refresh the run's report.
        columns: `{role: column name}` where the manifest's differ from the run's.

    Returns:
        `multilabel_figures`' figures, and `results_dir` (when saved).

    The thresholds are the run's (`run_thresholds`), or those the bundle carries (the same values).
    """
    predict_logits, preprocessor, labels, run = load_target(target)
    thresholds = run_thresholds(target, labels) if run is not None else read_bundle(target)["thresholds"]
    columns = manifest_columns(target, columns)
    manifest = read_manifest(data, columns=columns)
    manifest, _ = manifest.validate_images(preprocessor.image_size, "fail", **decoded_as(preprocessor))
    cells = checked_label_cells(manifest, labels)
    texts, images = [row.text for row in manifest.rows], [row.image for row in manifest.rows]
    scores = predict_probabilities(predict_logits, preprocessor, texts, images, "evaluating", activation=sigmoid)
    truth = multi_hot(cells, labels)
    figures = multilabel_figures(truth, scores, thresholds, labels)
    if save_results:
        folder = results_dir(target, data)
        figures["results_dir"] = str(folder)
        rows = prediction_rows(manifest, columns["image"], labels, truth, scores, thresholds)
        curves = {label: precision_recall_curve(truth[:, column], scores[:, column]) for column, label in
                  enumerate(labels)}
        write_multilabel_results(folder, figures, rows, curves)
        from mmkeras.evaluation.report import keep_evaluation

        keep_evaluation(target, bundle=run is None)
    return figures
