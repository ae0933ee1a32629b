"""`ContrastiveLoss`: symmetric InfoNCE over in-batch negatives gathered across replicas.

CLIP's objective: in a batch of N true (text, image) pairs, text i must pick
image i among the N images and image i text i among the N texts, with
cosine similarities scaled by a learnable temperature. The negatives are the
*global* batch: every replica gathers the embeddings of all replicas
(`ReplicaContext.all_gather`, whose gradient returns each replica its slice),
so N workers train as one big batch and match the single-process update.

Rows that share a label (e.g. two captions of the same concept) are not
negatives of each other: their similarity is masked out of the softmax, so
the model is not pushed to tell apart what the data says is the same.

It plugs into `TrainingLoop(loss=...)`, whose loss is the sum of the
per-example losses divided by the global batch: each replica returns the
loss of its own rows as queries, against the gathered keys.

Example:
>>> loss = ContrastiveLoss()
>>> outputs = {"text_embedding": tf.eye(2), "image_embedding": tf.eye(2),
...            "logit_scale": tf.fill([2, 1], 10.0)}
>>> [round(float(value), 4) for value in loss.per_example_loss(tf.constant([0, 1]), outputs)]
[0.0, 0.0]
"""

import tensorflow as tf

# Masked logits: low enough that exp() is 0, finite so that 0 * it stays 0 in gradients.
_MASKED_LOGIT = -1e9


class ContrastiveLoss:
    """Symmetric InfoNCE on a dual encoder's outputs, for `TrainingLoop(loss=...)`.

    The model's outputs are a dict of L2-normalised `text_embedding` and
    `image_embedding` [B, D] and the temperature's `logit_scale` [B, 1];
    labels are int32 [B] group ids: rows with the same id are not each other's
    negatives (give every row its own id when there are no labels).

    Example:
    >>> loop = TrainingLoop(dual_encoder, optimizer, loss=ContrastiveLoss())  # doctest: +SKIP
    """

    def similarity_logits(self, labels, outputs):
        """`(text-to-image logits [B, G], image-to-text logits [B, G], targets [B])` of this replica's rows
        against the global batch of G rows; same-label pairs other than the true one masked out."""
        text = tf.cast(outputs["text_embedding"], tf.float32)
        image = tf.cast(outputs["image_embedding"], tf.float32)
        scale = tf.cast(outputs["logit_scale"][0, 0], tf.float32)
        all_text, all_image, all_labels = (_gather(value) for value in (text, image, labels))
        targets = _replica_offset(tf.shape(text)[0]) + tf.range(tf.shape(text)[0])
        same_label = tf.equal(labels[:, None], all_labels[None, :])
        true_pair = tf.equal(targets[:, None], tf.range(tf.shape(all_labels)[0])[None, :])
        masked = tf.logical_and(same_label, tf.logical_not(true_pair))
        text_to_image = tf.where(masked, _MASKED_LOGIT, scale * tf.matmul(text, all_image, transpose_b=True))
        image_to_text = tf.where(masked, _MASKED_LOGIT, scale * tf.matmul(image, all_text, transpose_b=True))
        return text_to_image, image_to_text, targets

    def per_example_loss(self, labels, outputs):
        """The mean of the text-to-image and image-to-text cross-entropies of each of this replica's rows."""
        text_to_image, image_to_text, targets = self.similarity_logits(labels, outputs)
        cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits
        return 0.5 * (
            cross_entropy(labels=targets, logits=text_to_image) + cross_entropy(labels=targets, logits=image_to_text)
        )

    def correct_predictions(self, labels, outputs):
        """How many of this replica's texts pick their own image (or one of its label) in the global batch."""
        text_to_image, _, targets = self.similarity_logits(labels, outputs)
        picked = tf.argmax(text_to_image, axis=-1, output_type=tf.int32)
        all_labels = _gather(labels)
        hits = tf.logical_or(tf.equal(picked, targets), tf.equal(tf.gather(all_labels, picked), labels))
        return tf.reduce_sum(tf.cast(hits, tf.float32))


def _gather(value):
    """`value` of every replica, concatenated in replica order (itself on one replica)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_gather(value, axis=0)


def _replica_offset(local_rows):
    """Position of this replica's first row in the gathered batch."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return tf.constant(0, tf.int32)
    sizes = context.all_gather(tf.reshape(local_rows, [1]), axis=0)
    return tf.reduce_sum(sizes[: context.replica_id_in_sync_group])
