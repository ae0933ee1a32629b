"""`AlignTask`: `mmkeras align`, a text and an image encoder trained together on true pairs (no classifier).

Its manifest is one of true pairs (`read_pairs`: a label column, when
present, groups rows that are not each other's negatives), its loss is
`ContrastiveLoss`, its bundle a dual encoder, and it has no classifier to
evaluate (`evaluate --zero-shot` classifies with its label names instead).
The model is `build_dual_encoder`'s, built by `mmkeras.training.align_job`.

Example:
>>> AlignTask().bundle_kind, AlignTask().evaluation is None
('dual_encoder', True)
"""

from mmkeras.config import RunConfig
from mmkeras.data.manifest import Manifest
from mmkeras.data.pairs import read_pairs
from mmkeras.runtime.bundle import DUAL_ENCODER_KIND
from mmkeras.tasks.task import Task


class AlignTask(Task):
    """Contrastive alignment of the two backbones (`align`)."""

    name = "align"
    output = None  # two encoders, no logits
    evaluation = None
    # The training loop's accuracy is `ContrastiveLoss.correct_predictions`: texts whose nearest image in their
    # batch is their own (or one of their label), which depends on the batch size; `val_recall` is the whole set's.
    accuracy_name = "in_batch_recall@1"

    @property
    def bundle_kind(self) -> str:
        return DUAL_ENCODER_KIND

    def read_manifest(self, path, config: RunConfig) -> Manifest:
        """True pairs: a row without a text or an image, or whose image is missing, is a bad row."""
        return read_pairs(path, on_bad_row=config.on_bad_row, columns=config.columns)

    def loss(self, label_sets):
        from mmkeras.tasks.contrastive_loss import ContrastiveLoss  # TensorFlow: only training asks

        return ContrastiveLoss()
