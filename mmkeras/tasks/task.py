"""`Task`: what a task (`RunConfig.task`, or `align`) does differently, in one object per task.

A task is a plain strategy object, not a Keras model: the jobs, the
optimizers, the exporter and `evaluate` ask it instead of branching on the
task's name, and `build_model` takes its head. It owns

- its **labels**: how its manifests are read (`read_manifest`) and how their
  label cells become the classes the data pipeline encodes and the labels
  the model outputs (`training_labels`, `label_sets`, `run_labels`,
  `class_indices`, `check_labels_kept`);
- its **model**: the head on the fused features (`head`, built by
  `mmkeras.models.builder.build_model`) and the layers it starts from an
  align run (`aligned_layers`);
- its **training**: the loss (`loss`; `None` is `TrainingLoop`'s
  cross-entropy over the logits) and the figures it adds on the validation
  rows (`validation_figures`);
- its **bundle**: the output (`output`: activation, bundle kind and how the
  runtime decodes scores, `mmkeras.runtime.outputs`) and the thresholds
  bundle.json carries (`bundle_thresholds`);
- its **evaluation**: which routine `mmkeras.evaluate` runs (`evaluation`).

Importing a task is TensorFlow-free (the base install's `evaluate BUNDLE`
and the bundle writer use them); the methods that build Keras layers or
losses import Keras inside, and only training calls them.

A new task is a subclass in its own file of `mmkeras/tasks/`, registered in
`mmkeras.tasks.registry.TASKS` (and named in `mmkeras.config.TASKS` when
`train --task` chooses it), with tests.

Example:
>>> task = Task()
>>> task.output.predicted_labels(task.output.scores(np.array([0.0, 2.0])), ["cat", "dog"], None)
['dog']
>>> task.class_indices(["dog", "cat"], ["cat", "dog"]).tolist()
[1, 0]
"""

import functools

import numpy as np

from mmkeras.config import RunConfig
from mmkeras.data.manifest import Manifest, read_manifest
from mmkeras.errors import UserError
from mmkeras.runtime.outputs import SOFTMAX, BundleOutput


class Task:
    """The base task: one label per row, a softmax classifier over the fused features.

    Subclasses set `name` (and `output`, `evaluation` where they differ) and
    override what their task does differently.
    """

    # `RunConfig.task` (or `align`): the name the run folder and bundle.json record.
    name = ""
    # How a bundle of this task turns logits into scores and labels; `None`: no classifier bundle.
    output: BundleOutput | None = SOFTMAX
    # The routine `mmkeras.evaluate` runs: `classifier` or `multilabel` (`mmkeras.evaluation.evaluate`);
    # `None`: none (an align run is evaluated with --zero-shot only).
    evaluation: str | None = "classifier"
    # What the training loop's per-epoch `accuracy` (its loss's `correct_predictions`, history keys `accuracy`
    # and `val_accuracy`) measures, as the epoch log line and the report name it (`figure_name`).
    accuracy_name = "accuracy"

    @property
    def bundle_kind(self) -> str:
        """The kind of bundle its runs export (`mmkeras.runtime.bundle.BUNDLE_KINDS`)."""
        if self.output is None:
            raise NotImplementedError(f"{type(self).__name__} exports no classifier: it names its bundle kind itself")
        return self.output.bundle_kind

    def figure_name(self, key: str) -> str:
        """How the epoch log line and the report name a history or metrics.json key: `accuracy` and
        `val_accuracy` by what they measure (`accuracy_name`), any other key as it is. The files keep the key.

        Example:
        >>> Task().figure_name("val_accuracy"), Task().figure_name("val_loss")
        ('val_accuracy', 'val_loss')
        """
        return key.replace("accuracy", self.accuracy_name) if key in ("accuracy", "val_accuracy") else key

    # -- labels -----------------------------------------------------------------------------

    def read_manifest(self, path, config: RunConfig) -> Manifest:
        """A training or validation manifest of this task, as `config` says to read it."""
        return read_manifest(path, on_bad_row=config.on_bad_row, columns=config.columns)

    def training_labels(self, config: RunConfig, train_manifest: Manifest) -> tuple[list[str], list[str]]:
        """`(cells, labels)`: the label cells the data pipeline encodes (a class id per distinct cell) and
        the labels the model outputs, in logit order. One label per row: both are the training labels."""
        labels = train_manifest.labels()
        return labels, labels

    def label_sets(self, cells: list[str], labels: list[str]) -> np.ndarray | None:
        """[cells, labels] 0/1, which labels each cell holds, for a task whose cells are label sets; else `None`."""
        return None

    def run_labels(self, config: RunConfig, train_manifest: Manifest, run_labels: list[str]):
        """`(cells, label_sets)` of new training rows for a trained run's model (QAT), whose labels are fixed.

        One label per row: the run's labels (a row with another label is refused when the manifest is checked).
        """
        return run_labels, None

    def check_labels_kept(self, train_manifest: Manifest, cells: list[str]):
        """A label whose every training row was skipped as bad would be a class the model never learns: refuse it."""
        lost = sorted(set(cells) - set(train_manifest.labels()))
        if lost:
            raise UserError(
                f"label(s) {', '.join(map(repr, lost))} have no usable training row left after skipping bad rows; "
                "fix those rows or remove the label",
                path=train_manifest.path,
            )

    def class_indices(self, cells: list[str | None], labels: list[str]) -> np.ndarray | None:
        """The rows' class indices in `labels` (to score an accuracy); `None` when a row's cell is not one label."""
        index_of = {label: index for index, label in enumerate(labels)}
        indices = [index_of[cell] for cell in cells if cell in index_of]
        if not cells or len(indices) < len(cells):
            return None
        return np.array(indices, np.int32)

    # -- model ------------------------------------------------------------------------------

    def head(self, labels: list[str], config: RunConfig):
        """The head `build_model` puts on the fused features (its `head` argument): logits [B, len(labels)].

        Called before the model is built, so a label mistake is found first.
        """
        from mmkeras.models.builder import classifier_logits  # Keras: only training builds a head

        return functools.partial(classifier_logits, num_classes=len(labels))

    def aligned_layers(self, config: RunConfig) -> tuple[str, ...]:
        """The head layers a run of this task starts from an align run (`--init-from`), fine-tuned at the
        backbones' learning rate."""
        return ()

    # -- training ---------------------------------------------------------------------------

    def loss(self, label_sets: np.ndarray | None):
        """The loss the training loop minimises (`TrainingLoop`'s `loss`); `None`: cross-entropy over the logits."""
        return None

    def validation_figures(self, model, val_data, label_sets: np.ndarray | None, labels: list[str]) -> dict:
        """Figures of the trained `model` on the validation batches, added to the run's metrics."""
        return {}

    # -- bundle -----------------------------------------------------------------------------

    def bundle_thresholds(self, run_dir, labels: list[str]) -> list[float] | None:
        """Per label, the score at and above which it is predicted (bundle.json `thresholds`); `None`: none."""
        return None
