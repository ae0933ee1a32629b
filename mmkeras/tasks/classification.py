"""`ClassificationTask`: `--task classify`, one label per row (the default).

Everything is the base `Task`'s: a softmax over the labels, cross-entropy,
the classifier evaluation.

Example:
>>> ClassificationTask().output.activation, ClassificationTask().bundle_kind
('softmax', 'classifier')
"""

from mmkeras.tasks.task import Task


class ClassificationTask(Task):
    """One label per row: a softmax classifier over the fused text and image features."""

    name = "classify"
