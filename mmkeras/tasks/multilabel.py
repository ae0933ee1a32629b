"""`MultiLabelTask`: `--task multilabel`, any number of labels per row (a label cell lists them: `red|ring`).

The data pipeline encodes each row by its whole label cell (a class id per
distinct cell, as for one label), and `MultiLabelLoss` looks the cell's
labels up in a multi-hot table (`label_sets`): a sigmoid per label. Training
tunes a threshold per label on the validation rows (`validation_figures`,
kept in metrics.json), and the bundle carries them (`bundle_thresholds`).

Example:
>>> task = MultiLabelTask()
>>> task.label_sets(["red", "red|ring"], ["red", "ring"]).tolist()
[[1.0, 0.0], [1.0, 1.0]]
>>> task.output.activation, task.bundle_kind
('sigmoid', 'multilabel')
>>> task.figure_name("val_accuracy")  # the epoch line's and the report's name of history's `val_accuracy`
'val_exact_match@0.5'
"""

import json
from pathlib import Path

import numpy as np

from mmkeras.config import RunConfig
from mmkeras.data.label_sets import multi_hot, split_labels
from mmkeras.data.manifest import Manifest
from mmkeras.errors import UserError
from mmkeras.runs import METRICS_FILE
from mmkeras.runtime.outputs import SIGMOID
from mmkeras.tasks.multilabel_metrics import multilabel_figures, tune_thresholds
from mmkeras.tasks.task import Task

# The threshold of a run trained without validation rows to tune it on.
DEFAULT_THRESHOLD = 0.5
# The validation figures a multilabel run reports (`val_` + each).
REPORTED_FIGURES = ("mAP", "micro_f1", "macro_f1", "exact_match")


class MultiLabelTask(Task):
    """Any number of labels per row: a sigmoid per label, each cut at its tuned threshold."""

    name = "multilabel"
    output = SIGMOID
    evaluation = "multilabel"
    # The training loop's accuracy is `MultiLabelLoss.correct_predictions`: every label right at 0.5, not at the
    # tuned thresholds (those give `val_exact_match`).
    accuracy_name = "exact_match@0.5"

    def training_labels(self, config: RunConfig, train_manifest: Manifest) -> tuple[list[str], list[str]]:
        """The distinct label cells of the training and validation rows (what the data pipeline encodes) and
        the labels they list (`red|ring`: `red` and `ring`)."""
        cells = set(train_manifest.labels())
        if config.val:
            cells |= set(self.read_manifest(config.val, config).labels())
        labels = sorted({label for cell in cells for label in split_labels(cell)})
        return sorted(cells), labels

    def label_sets(self, cells: list[str], labels: list[str]) -> np.ndarray:
        return multi_hot(cells, labels)

    def run_labels(self, config: RunConfig, train_manifest: Manifest, run_labels: list[str]):
        """The new rows' label cells and their label sets in the run's labels; every label must be the run's."""
        cells, labels = self.training_labels(config, train_manifest)
        unknown = sorted(set(labels) - set(run_labels))
        if unknown:
            raise UserError(f"label(s) {', '.join(unknown)} are not the run's ({', '.join(run_labels)})",
                            path=config.data)
        return cells, multi_hot(cells, run_labels)

    def check_labels_kept(self, train_manifest: Manifest, cells: list[str]):
        """Nothing to refuse: the cells also come from the validation rows, so a cell may have no training row."""

    def class_indices(self, cells, labels: list[str]) -> None:
        """No class index: a row holds a set of labels."""
        return None

    def loss(self, label_sets: np.ndarray):
        from mmkeras.tasks.multilabel_loss import MultiLabelLoss  # TensorFlow: only training asks

        return MultiLabelLoss(label_sets)

    def validation_figures(self, model, val_data, label_sets: np.ndarray, labels: list[str]) -> dict:
        """Per-label thresholds tuned on the validation rows, and their figures there (`REPORTED_FIGURES`).

        Scored with `model`, the model the validation batches feed (the head, on cached features).
        """
        if val_data is None:
            return {}
        import keras  # only training asks, with a trained model

        scores, cells = [], []
        for inputs, cell_ids in val_data:
            logits = model(inputs, training=False)
            scores.append(keras.ops.convert_to_numpy(keras.ops.sigmoid(logits)))
            cells.append(cell_ids.numpy())
        truth, scores = label_sets[np.concatenate(cells)], np.concatenate(scores)
        thresholds = tune_thresholds(truth, scores)
        figures = multilabel_figures(truth, scores, thresholds, labels)
        return {
            "thresholds": dict(zip(labels, thresholds)),
            **{f"val_{key}": figures[key] for key in REPORTED_FIGURES},
        }

    def bundle_thresholds(self, run_dir, labels: list[str]) -> list[float]:
        return run_thresholds(run_dir, labels)


def run_thresholds(run_dir, labels: list[str]) -> list[float]:
    """Per label, the threshold `train` tuned on the validation rows (`metrics.json`), in `labels` order.

    `DEFAULT_THRESHOLD` for a run trained without validation rows.
    """
    metrics_file = Path(run_dir) / METRICS_FILE
    tuned = json.loads(metrics_file.read_text(encoding="utf-8")).get("thresholds") if metrics_file.is_file() else None
    return [DEFAULT_THRESHOLD if tuned is None else float(tuned[label]) for label in labels]
