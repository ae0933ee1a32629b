"""`bundle_accuracies`: how many rows of one labelled manifest each bundle of a run gets right (no TensorFlow).

The bundles of one run (float, int8, dynamic ...) share its labels, so each
is scored on the same rows as `mmkeras evaluate BUNDLE` scores it (the same
`Predictor`, preprocessing and label check), and each bundle's labels are
compared with the first bundle's. The figures are counts first: a choice
between bundles "at equal accuracy" compares counts of correct rows, since
0.88 - 0.87 is 0.010000000000000009 in floats.

Example:
>>> figures = bundle_accuracies(["bundles/float", "bundles/int8"], "samples/test.csv")  # doctest: +SKIP
>>> [(row["correct"], row["rows"], row["agreement"]) for row in figures]  # doctest: +SKIP
[(97, 150, 1.0), (96, 150, 0.973)]
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmkeras.data.manifest import read_manifest
from mmkeras.errors import UserError
from mmkeras.progress import step_progress
from mmkeras.runs import manifest_columns
from mmkeras.runtime.batch_predict import BATCH_ROWS
from mmkeras.runtime.bundle import BUNDLE_FILE, bundle_kind, read_bundle
from mmkeras.runtime.predictor import Predictor


def bundle_accuracies(
    bundle_dirs: Sequence[str | Path], data: str | Path, *, columns: dict[str, str] | None = None
) -> list[dict]:
    """Accuracy of each single-label bundle on the labelled manifest `data`, and its label agreement with the first.

    Args:
        bundle_dirs: classifier bundle folders exported from one run (the
            same labels, in the same order).
        data: a labelled CSV, JSONL or Parquet manifest.
        columns: `{role: column name}` where the manifest's columns are named
            otherwise than in the run (`mmkeras.runs.manifest_columns`).

    Returns:
        Per bundle: `rows`, `correct` (rows whose best label is the true one),
        `accuracy` (`correct / rows`), `agreeing` (rows given the first
        bundle's label) and `agreement` (`agreeing / rows`).

    Raises:
        UserError: a bundle that is not a single-label classifier, bundles
            with different labels, a bad manifest, a row with an unknown
            label or an image that cannot be read.
    """
    labels = _shared_labels(bundle_dirs)
    manifest = read_manifest(data, columns=manifest_columns(bundle_dirs[0], columns))
    truth = manifest.encode_labels(labels)
    predicted = []
    for directory in bundle_dirs:
        predictor = Predictor(directory)
        checked, _ = manifest.validate_images(predictor.preprocessor.image_size, "fail")
        predicted.append(_best_labels(predictor, checked, Path(directory).name))
    rows = len(truth)
    figures = []
    for labels_given in predicted:
        correct, agreeing = int(np.sum(labels_given == truth)), int(np.sum(labels_given == predicted[0]))
        figures.append({"rows": rows, "correct": correct, "accuracy": correct / rows, "agreeing": agreeing,
                        "agreement": agreeing / rows})
    return figures


def _shared_labels(bundle_dirs: Sequence[str | Path]) -> list[str]:
    """The labels every bundle has; a multilabel bundle or bundles of different runs are refused."""
    bundles = [read_bundle(directory) for directory in bundle_dirs]
    for directory, bundle in zip(bundle_dirs, bundles):
        if bundle_kind(bundle) != "classifier":
            raise UserError(
                "a multilabel bundle has no single accuracy to compare: measure it with "
                "`mmkeras evaluate BUNDLE --data ...` (mAP, exact match) and benchmark it without --data",
                path=Path(directory) / BUNDLE_FILE,
            )
    first = bundles[0]["labels"]
    for directory, bundle in zip(bundle_dirs[1:], bundles[1:]):
        if bundle["labels"] != first:
            raise UserError(
                f"its labels differ from those of {bundle_dirs[0]} ({len(bundle['labels'])} against {len(first)}, "
                "or another order): compare bundles exported from one run",
                path=Path(directory) / BUNDLE_FILE,
            )
    return first


def _best_labels(predictor: Predictor, manifest, name: str) -> np.ndarray:
    """The index of each row's best label, preprocessing and predicting `BATCH_ROWS` rows at a time."""
    texts, images = [row.text for row in manifest.rows], [row.image for row in manifest.rows]
    best = []
    with step_progress(f"scoring {name}", len(texts)) as progress:
        for start in range(0, len(texts), BATCH_ROWS):
            inputs = predictor.preprocessor(texts[start : start + BATCH_ROWS], images[start : start + BATCH_ROWS])
            best.append(np.argmax(predictor.predict_inputs(inputs), axis=1))
            progress.update(min(start + BATCH_ROWS, len(texts)))
    return np.concatenate(best)
