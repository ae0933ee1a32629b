"""`retuned_thresholds`: a quantized multilabel bundle's per-label thresholds, tuned on its own scores.

The run's thresholds were tuned on the float model's sigmoid scores. A
quantized model ranks the rows as well but moves the scores, and a threshold
that sat between two float scores can then fall on the wrong side of many
(measured on samples/matching, post-training int8: mAP still 1.0 but
micro-F1 0.772 at the float thresholds; `benchmarks/multilabel_bundles.py`).
So an export re-tunes them the way `train` did, on the same validation rows,
with the bundle's LiteRT model.

Example:
>>> retuned_thresholds(load_run("runs/tags"), LiteRTModel("staging/model.tflite"))  # doctest: +SKIP
([0.31, 0.27, 0.44], 100)
"""

from pathlib import Path

from mmkeras.data.label_sets import multi_hot
from mmkeras.data.manifest import decoded_as, read_manifest
from mmkeras.runtime.chunked_predictions import predict_probabilities
from mmkeras.runtime.outputs import sigmoid
from mmkeras.tasks.multilabel_metrics import tune_thresholds


def retuned_thresholds(run, predict_logits) -> tuple[list[float], int] | None:
    """`(thresholds, rows)` tuned for F1 on `predict_logits`' scores of the run's validation rows.

    Args:
        run: a loaded `--task multilabel` run.
        predict_logits: the bundle's model (`LiteRTModel`), called with a batch of model inputs.

    Returns `None` when the run has no readable validation manifest: the run's thresholds stay.
    """
    if not run.config.val or not Path(run.config.val).is_file():
        return None
    # Rows `train` would have skipped are skipped here too (`--on-bad-row skip`).
    manifest, _ = read_manifest(run.config.val).validate_images(
        run.preprocessor.image_size, "skip", **decoded_as(run.preprocessor)
    )
    texts, images = [row.text for row in manifest.rows], [row.image for row in manifest.rows]
    scores = predict_probabilities(predict_logits, run.preprocessor, texts, images, "tuning thresholds",
                                   activation=sigmoid)
    truth = multi_hot([row.label for row in manifest.rows], run.labels)
    return tune_thresholds(truth, scores), len(manifest.rows)
