"""`evaluate_multilabel`: a `--task multilabel` run's figures on a manifest, at its tuned thresholds.

Example:
>>> figures = evaluate_multilabel("runs/tags", "test.csv")  # doctest: +SKIP
>>> figures["mAP"], figures["micro_f1"], figures["macro_f1"]  # doctest: +SKIP
(0.97, 0.93, 0.91)
"""

import json
from pathlib import Path

import numpy as np

from mmkeras.data.manifest import read_manifest
from mmkeras.errors import UserError
from mmkeras.evaluation.multilabel_metrics import multi_hot, multilabel_figures, split_labels
from mmkeras.progress import step_progress

CHUNK_ROWS = 64
DEFAULT_THRESHOLD = 0.5


def evaluate_multilabel(run_dir, data) -> dict:
    """mAP, micro/macro-F1, exact match and per-label figures of a multilabel run on a labelled manifest.

    The thresholds are the ones `train` tuned on the validation rows
    (`metrics.json`), 0.5 for a run trained without validation rows.
    """
    from mmkeras.runs import METRICS_FILE, load_run

    run = load_run(run_dir)
    metrics_file = Path(run_dir) / METRICS_FILE
    tuned = json.loads(metrics_file.read_text(encoding="utf-8")).get("thresholds") if metrics_file.is_file() else None
    thresholds = [DEFAULT_THRESHOLD if tuned is None else tuned[label] for label in run.labels]
    manifest, _ = read_manifest(data).validate_images(run.preprocessor.image_size, "fail")
    known = set(run.labels)
    for row in manifest.rows:
        unknown = [label for label in split_labels(row.label) if label not in known]
        if unknown:
            raise UserError(f"unknown label(s) {', '.join(unknown)}", path=manifest.path, row=row.line)
    scores = []
    with step_progress("evaluating", len(manifest.rows)) as progress:
        for start in range(0, len(manifest.rows), CHUNK_ROWS):
            rows = manifest.rows[start : start + CHUNK_ROWS]
            logits = np.asarray(run.model.predict_on_batch(run.preprocessor([r.text for r in rows], [r.image for r in rows])))
            scores.append(1.0 / (1.0 + np.exp(-logits)))
            progress.update(start + len(rows))
    truth = multi_hot([row.label for row in manifest.rows], run.labels)
    return multilabel_figures(truth, np.concatenate(scores), thresholds, run.labels)
