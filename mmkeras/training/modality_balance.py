"""`ModalityBalance`: keep one modality from dominating training (`--modality-balance aux|adaptive`).

- `aux`: a text-only and an image-only head (`UnimodalHeads`) on the
  backbones' pooled tokens, trained with the fused head; each adds
  `AUXILIARY_LOSS_WEIGHT` times its cross-entropy to the loss, so the weaker
  modality's backbone keeps a gradient of its own even when the fused head
  can already fit the data with the easier one.
- `adaptive`: on-the-fly gradient modulation (OGM, Peng et al., "Balanced
  Multimodal Learning via On-the-fly Gradient Modulation", CVPR 2022). Each
  batch, the score of a modality is the summed probability its unimodal
  head gives the true class; with ratio = score_text / score_image, the text
  backbone learns at 1 - tanh(alpha * ratio) times its rate when ratio > 1
  (the image's at 1 - tanh(alpha / ratio) when ratio < 1), so the dominant
  modality learns slower while the other catches up. OGM multiplies the
  dominant encoder's gradients under SGD, where that is the same as scaling
  its step; under Adam(W), mmkeras's default, a gradient scale cancels in
  m / sqrt(v) (the first step is lr x sign(gradient) whatever the scale), so
  mmkeras scales the step: the backbones' learning rates through
  `scale_learning_rate`, set each batch. OGM reads the scores from the halves
  of a concat head; mmkeras's cross-attention and gated fusions have no such
  split, so the scores come from unimodal linear probes on detached features
  (trained alongside, no gradient into the backbones). The paper's
  Gaussian-noise "GE" term is not applied.

The saved model is the plain one: the heads exist only in the training model.

Example:
>>> balance = ModalityBalance("aux", model, num_classes=6)   # doctest: +SKIP
>>> loop = TrainingLoop(balance.training_model, optimizer, balance=balance)  # doctest: +SKIP
"""

import keras
import tensorflow as tf

from mmkeras.models.text_backbones import BACKBONE_NAME as TEXT_BACKBONE
from mmkeras.models.unimodal_heads import UnimodalHeads
from mmkeras.models.vision_backbones import BACKBONE_NAME as VISION_BACKBONE

AUXILIARY_LOSS_WEIGHT = 0.5
# OGM's alpha (the paper's range is 0.1-0.8 for its datasets).
OGM_ALPHA = 0.5
FUSION_LAYER = "fusion"


class ModalityBalance:
    """The training model with unimodal heads, its loss and (adaptive) gradient modulation.

    Args:
        mode: `aux` or `adaptive`.
        model: the multimodal model (`build_model`), built under the strategy's scope.
        num_classes: the number of classes.
    """

    def __init__(self, mode: str, model: keras.Model, num_classes: int):
        if mode not in ("aux", "adaptive"):
            raise ValueError(f"mode must be aux or adaptive, got {mode!r}")
        self.mode = mode
        heads = UnimodalHeads(num_classes, detach=mode == "adaptive", name="unimodal_heads")
        text_logits, image_logits = heads(*model.get_layer(FUSION_LAYER).input)
        self.training_model = keras.Model(model.inputs, [model.output, text_logits, image_logits])
        self.backbone_variables = (
            model.get_layer(TEXT_BACKBONE).trainable_variables,
            model.get_layer(VISION_BACKBONE).trainable_variables,
        )
        # `adaptive`: OGM's (text, image) coefficients of the current batch, read by the optimizer at the update;
        # per replica under a distributed strategy (each replica measures its own share of the batch).
        self.update_scales = tuple(
            tf.Variable(1.0, trainable=False, name=name, synchronization=tf.VariableSynchronization.ON_READ,
                        aggregation=tf.VariableAggregation.MEAN)
            for name in ("text_update_scale", "image_update_scale")
        )

    def scale_updates(self, optimizer):
        """`adaptive`: make `optimizer` (an mmkeras optimizer) update each backbone at its OGM coefficient times
        its learning rate; `aux`: nothing."""
        if self.mode == "adaptive":
            for variables, scale in zip(self.backbone_variables, self.update_scales):
                optimizer.scale_learning_rate(variables, scale)

    def per_example_loss(self, labels, outputs, loss_of):
        """The fused loss plus the heads' (weighted under `aux`; probes under `adaptive`, which only train
        themselves)."""
        fused, text_logits, image_logits = outputs
        weight = AUXILIARY_LOSS_WEIGHT if self.mode == "aux" else 1.0
        return loss_of(labels, fused) + weight * (loss_of(labels, text_logits) + loss_of(labels, image_logits))

    def modulate(self, labels, outputs):
        """`adaptive`: set this batch's OGM coefficients (the dominant backbone's step shrinks); `aux`: nothing."""
        if self.mode != "adaptive":
            return
        _, text_logits, image_logits = outputs
        coefficients = ogm_coefficients(true_class_score(labels, text_logits), true_class_score(labels, image_logits))
        for scale, coefficient in zip(self.update_scales, coefficients):
            scale.assign(coefficient)


def true_class_score(labels, logits):
    """The summed probability a head gives the true classes of a batch."""
    probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
    return tf.reduce_sum(tf.gather(probabilities, tf.cast(labels, tf.int32), batch_dims=1))


def ogm_coefficients(text_score, image_score, alpha: float = OGM_ALPHA):
    """OGM's `(text, image)` gradient scales: 1 - tanh(alpha * ratio) for the dominant modality, 1 for the other.

    Example:
    >>> [round(float(scale), 3) for scale in ogm_coefficients(3.0, 1.0)]
    [0.095, 1.0]
    """
    ratio = tf.cast(text_score, tf.float32) / tf.maximum(tf.cast(image_score, tf.float32), 1e-6)
    text_scale = tf.where(ratio > 1.0, 1.0 - tf.tanh(alpha * ratio), 1.0)
    image_scale = tf.where(ratio < 1.0, 1.0 - tf.tanh(alpha / tf.maximum(ratio, 1e-6)), 1.0)
    return text_scale, image_scale
