"""`MultiLabelLoss`: independent sigmoid cross-entropies, one per label, for `--task multilabel`.

A multi-label row's label cell lists several labels (`red|ring`). The data
pipeline encodes each row by its whole cell (an index into the distinct
cells, as for single labels), and this loss looks the cell's labels up in a
constant multi-hot table: nothing in the pipeline changes for multi-label data.

Example:
>>> loss = MultiLabelLoss([[1, 0], [1, 1]])       # cell 0: the first label; cell 1: both
>>> logits = tf.constant([[9.0, -9.0], [9.0, 9.0]])
>>> [round(float(value), 4) for value in loss.per_example_loss(tf.constant([0, 1]), logits)]
[0.0001, 0.0001]
"""

import numpy as np
import tensorflow as tf


class MultiLabelLoss:
    """Mean sigmoid cross-entropy over the labels, for `TrainingLoop(loss=...)`.

    Args:
        label_sets: [cells, labels] 0/1: which labels each distinct label cell holds.
    """

    def __init__(self, label_sets):
        self.label_sets = tf.constant(np.asarray(label_sets, np.float32))

    def per_example_loss(self, labels, logits):
        targets = tf.gather(self.label_sets, labels)
        losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=tf.cast(logits, tf.float32))
        return tf.reduce_mean(losses, axis=-1)

    def correct_predictions(self, labels, logits):
        """Rows whose every label is predicted right at the 0.5 threshold (exact match)."""
        predicted = tf.cast(tf.cast(logits, tf.float32) > 0.0, tf.float32)
        exact = tf.reduce_all(tf.equal(predicted, tf.gather(self.label_sets, labels)), axis=-1)
        return tf.reduce_sum(tf.cast(exact, tf.float32))
