"""`bundle_accuracies`: how many rows of one labelled manifest each bundle of a run gets right (no TensorFlow).

The bundles of one run (float, int8, dynamic ...) share its labels, so each
is scored on the same rows as `mmkeras evaluate BUNDLE` scores it (the same
`Predictor`, preprocessing and label check), and each bundle's labels are
compared with the first bundle's. A row is right when its predicted label is
the true one; for multilabel bundles, when the labels at or above the
bundle's thresholds are exactly the row's label set (`evaluate`'s exact
match). The figures are counts first: a choice
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

from mmkeras.data.label_sets import checked_label_cells, multi_hot
from mmkeras.data.manifest import decoded_as, read_manifest
from mmkeras.errors import UserError
from mmkeras.runs import manifest_columns
from mmkeras.runtime.bundle import BUNDLE_FILE, bundle_kind, read_bundle
from mmkeras.runtime.chunked_predictions import predict_probabilities
from mmkeras.runtime.predictor import Predictor

# What a right row means, by bundle kind: its best label, or its exact label set.
METRICS = {"classifier": "accuracy", "multilabel": "exact match"}


def bundle_accuracies(
    bundle_dirs: Sequence[str | Path], data: str | Path, *, columns: dict[str, str] | None = None
) -> list[dict]:
    """Accuracy (multilabel: exact match) of each bundle on the labelled manifest `data`, and agreement with the first.

    Args:
        bundle_dirs: classifier or multilabel bundle folders exported from
            one run (the same kind and labels, in the same order).
        data: a labelled CSV, JSONL or Parquet manifest.
        columns: `{role: column name}` where the manifest's columns are named
            otherwise than in the run (`mmkeras.runs.manifest_columns`).

    Returns:
        Per bundle: `rows`, `correct` (rows whose best label is the true one;
        multilabel: whose label set is), `accuracy` (`correct / rows`),
        `agreeing` (rows given the first bundle's label or label set),
        `agreement` (`agreeing / rows`) and `metric` (`accuracy` or
        `exact match`).

    Raises:
        UserError: bundles of different labels or kinds, a bad manifest, a
            row with an unknown label or an image that cannot be read.
    """
    labels, kind = _shared_labels(bundle_dirs)
    manifest = read_manifest(data, columns=manifest_columns(bundle_dirs[0], columns))
    if kind == "multilabel":
        truth = multi_hot(checked_label_cells(manifest, labels), labels).astype(bool)
    else:
        truth = np.asarray(manifest.encode_labels(labels))
    predicted, checked_by_decoding = [], {}
    for directory in bundle_dirs:
        predictor = Predictor(directory)
        size, decoding = predictor.preprocessor.image_size, decoded_as(predictor.preprocessor)
        key = (size, *decoding.values())
        if key not in checked_by_decoding:  # bundles of one run share it: the images are checked once
            checked_by_decoding[key], _ = manifest.validate_images(size, "fail", **decoding)
        predicted.append(_predicted_labels(predictor, checked_by_decoding[key], Path(directory).name))
    rows = len(truth)
    figures = []
    for labels_given in predicted:
        correct, agreeing = _matching_rows(labels_given, truth), _matching_rows(labels_given, predicted[0])
        figures.append({"rows": rows, "correct": correct, "accuracy": correct / rows, "agreeing": agreeing,
                        "agreement": agreeing / rows, "metric": METRICS[kind]})
    return figures


def _matching_rows(given: np.ndarray, expected: np.ndarray) -> int:
    """Rows whose label (or whole label set, a row of a 2-D array) is the expected one."""
    same = given == expected
    return int(np.sum(same if same.ndim == 1 else np.all(same, axis=1)))


def _shared_labels(bundle_dirs: Sequence[str | Path]) -> tuple[list[str], str]:
    """The labels and the kind every bundle has; bundles of different runs or kinds are refused."""
    bundles = [read_bundle(directory) for directory in bundle_dirs]
    first, first_kind = bundles[0]["labels"], bundle_kind(bundles[0])
    for directory, bundle in zip(bundle_dirs[1:], bundles[1:]):
        if bundle["labels"] != first or bundle_kind(bundle) != first_kind:
            raise UserError(
                f"its labels differ from those of {bundle_dirs[0]} ({len(bundle['labels'])} against {len(first)}, "
                "another order or another task): compare bundles exported from one run",
                path=Path(directory) / BUNDLE_FILE,
            )
    return first, first_kind


def _predicted_labels(predictor: Predictor, manifest, name: str) -> np.ndarray:
    """Each row's best label index, or (multilabel) its labels at or above their thresholds as a 0/1 row."""
    texts, images = [row.text for row in manifest.rows], [row.image for row in manifest.rows]
    scores = predict_probabilities(predictor.predict_inputs, predictor.preprocessor, texts, images,
                                   f"scoring {name}", activation=predictor.scores)
    if predictor.multilabel:
        return scores >= np.asarray(predictor.thresholds)
    return np.argmax(scores, axis=1)
