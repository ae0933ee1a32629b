"""`ModalityBalance`: keep one modality from dominating training (`--modality-balance aux|adaptive`).

- `aux`: a text-only and an image-only head (`UnimodalHeads`) on the
  backbones' pooled tokens, trained with the fused head; each adds
  `aux_loss_weight` (`--aux-loss-weight`, 0.5) times its cross-entropy to the loss, so the weaker
  modality's backbone keeps a gradient of its own even when the fused head
  can already fit the data with the easier one.
- `adaptive`: on-the-fly modulation (OGM, Peng et al., "Balanced Multimodal
  Learning via On-the-fly Gradient Modulation", CVPR 2022, in the continuous
  form of its journal version, Wei et al., "On-the-fly Modulation for
  Balanced Multimodal Learning", TPAMI 2024). Each batch, the score of a
  modality is the summed probability its unimodal probe gives the true class
  (rows that have both); with ratio = score_text / score_image > 1, the text
  is dominant and
  - OGM: the text backbone learns at 1 - alpha * tanh(ratio - 1) times its
    rate (the image's likewise when ratio < 1);
  - OPM (the journal version's prediction modulation): the next batch hides
    the text (its column of the modality mask) of `OPM_MAX_RATE *
    tanh(ratio - 1)` of the rows, so the fused head must also answer from the
    image and the image backbone gets the gradient of those rows. Slowing a
    backbone alone cannot stop the fusion from leaning on the easy modality
    when even its random features give the class away.
  OGM multiplies the dominant encoder's gradients under SGD, which is the
  same as scaling its step; under Adam(W), mmkeras's default, a gradient
  scale cancels in m / sqrt(v) (the first step is lr x sign(gradient)
  whatever the scale), so mmkeras scales the step: the backbones' learning
  rates through `scale_learning_rate`. OGM reads the scores from the halves
  of a concat head; the cross-attention and gated fusions have no such
  split, so the scores come from linear probes on detached backbone tokens
  (trained alongside, `PROBE_LR_SCALE` times faster than the fused head, no
  gradient into the backbones). The Gaussian-noise "GE" term is not applied.

The saved model is the plain one: the heads exist only in the training model.

`adaptive` keeps a record of each epoch (`epoch_summary`, in the run's
history.json and its report's curves): the mean OGM step scale and OPM drop
rate of each modality over the epoch's batches, and the mean probability each
probe gave the true class (rows with both modalities). A run resumed in the
middle of an epoch records that epoch's batches after the resumption only.

Example:
>>> balance = ModalityBalance("adaptive", model, num_classes=6)   # doctest: +SKIP
>>> balance.scale_updates(optimizer)  # doctest: +SKIP
>>> loop = TrainingLoop(balance.training_model, optimizer, balance=balance)  # doctest: +SKIP
"""

import keras
import tensorflow as tf
from keras import ops

from mmkeras.config import RunConfig
from mmkeras.models.text_backbones import BACKBONE_NAME as TEXT_BACKBONE
from mmkeras.models.unimodal_heads import UnimodalHeads
from mmkeras.models.vision_backbones import BACKBONE_NAME as VISION_BACKBONE

# OGM's alpha in the journal version's continuous form, 1 - alpha * tanh(ratio - 1): 1 slows a modality
# twice as sure as the other to 0.24 of its rate, and leaves both alone when they balance.
OGM_ALPHA = 1.0
# The probes learn this many times faster than the fused head: at its rate they lagged so far behind that both
# scores stayed near chance for two epochs (ratio 1 +- 0.1) while the text already explained 95% of the rows.
PROBE_LR_SCALE = 10.0
# The most rows whose dominant modality OPM hides (at ratio -> infinity).
OPM_MAX_RATE = 0.5
FUSION_LAYER = "fusion"
# `adaptive`'s per-epoch record (history.json keys): OGM's step scales, OPM's drop rates, the probes' mean
# true-class probabilities; each in [0, 1].
SUMMARY_KEYS = (
    "text_update_scale", "image_update_scale", "text_drop_rate", "image_drop_rate",
    "text_probe_score", "image_probe_score",
)


class ModalityBalance:
    """The training model with unimodal heads, its loss and (adaptive) gradient modulation.

    Args:
        mode: `aux` or `adaptive`.
        model: the multimodal model (`build_model`), built under the strategy's scope.
        num_classes: the number of classes.
        seed: seed of the `adaptive` drops.
        aux_loss_weight: `aux`: the weight of each unimodal head's loss
            beside the fused head's (the default is `RunConfig`'s).
    """

    def __init__(self, mode: str, model: keras.Model, num_classes: int, seed=None, *,
                 aux_loss_weight: float = RunConfig.aux_loss_weight):
        if mode not in ("aux", "adaptive"):
            raise ValueError(f"mode must be aux or adaptive, got {mode!r}")
        self.mode = mode
        self.aux_loss_weight = aux_loss_weight
        heads = UnimodalHeads(num_classes, detach=mode == "adaptive", name="unimodal_heads")
        text_logits, image_logits = heads(*model.get_layer(FUSION_LAYER).input)
        self.training_model = keras.Model(model.inputs, [model.output, text_logits, image_logits])
        self.probe_variables = heads.trainable_variables
        self.backbone_variables = (
            model.get_layer(TEXT_BACKBONE).trainable_variables,
            model.get_layer(VISION_BACKBONE).trainable_variables,
        )
        # `adaptive`: OGM's (text, image) step scales and OPM's drop rates, measured on one batch and used by the
        # optimizer at its update and by the next batch's drops; per replica under a distributed strategy (each
        # replica measures its own share of the batch).
        self.update_scales = tuple(balance_variable(1.0, f"{name}_update_scale") for name in ("text", "image"))
        self.drop_rates = tuple(balance_variable(0.0, f"{name}_drop_rate") for name in ("text", "image"))
        self.seed_generator = keras.random.SeedGenerator(seed)
        # `adaptive`: the epoch's sums of the `SUMMARY_KEYS` figures, of the rows the probes were scored on and of
        # the batches, which `epoch_summary` reads and resets. Averaged over the replicas at reading: every replica
        # runs every step, so the ratios of these means are the ratios of the sums.
        self.epoch_sums = {name: balance_variable(0.0, f"epoch_{name}") for name in (*SUMMARY_KEYS, "rows", "batches")}

    def scale_updates(self, optimizer):
        """`adaptive`: make `optimizer` (an mmkeras optimizer) update each backbone at its OGM coefficient times
        its learning rate, and the probes at `PROBE_LR_SCALE` times theirs; `aux`: nothing."""
        if self.mode == "adaptive":
            for variables, scale in zip(self.backbone_variables, self.update_scales):
                optimizer.scale_learning_rate(variables, scale)
            optimizer.scale_learning_rate(self.probe_variables, PROBE_LR_SCALE)

    def per_example_loss(self, labels, outputs, loss_of):
        """The fused loss plus the heads' (weighted under `aux`; probes under `adaptive`, which only train
        themselves)."""
        fused, text_logits, image_logits = outputs
        weight = self.aux_loss_weight if self.mode == "aux" else 1.0
        return loss_of(labels, fused) + weight * (loss_of(labels, text_logits) + loss_of(labels, image_logits))

    def drop_dominant(self, inputs: dict) -> dict:
        """`adaptive`: the batch's inputs with the dominant modality hidden at its drop rate (OPM) in rows that
        have both; `aux`: `inputs` as they are."""
        if self.mode != "adaptive":
            return inputs
        mask = inputs["modality_mask"]
        draws = keras.random.uniform(ops.shape(mask), seed=self.seed_generator, dtype=mask.dtype)
        # At most one rate is above 0: a row never loses both modalities.
        hidden = ops.cast(draws < ops.cast(ops.stack(self.drop_rates), mask.dtype), mask.dtype)
        return {**inputs, "modality_mask": mask * (1.0 - hidden * mask[:, :1] * mask[:, 1:])}

    def modulate(self, labels, outputs, modality_mask):
        """`adaptive`: measure the modalities' scores on the rows that kept both in `modality_mask`, then set the
        OGM step scales of this update and the OPM drop rates of the next batch; `aux`: nothing."""
        if self.mode != "adaptive":
            return
        _, text_logits, image_logits = outputs
        both = modality_mask[:, 0] * modality_mask[:, 1]
        scores = (true_class_score(labels, text_logits, both), true_class_score(labels, image_logits, both))
        settings = ogm_coefficients(*scores) + opm_rates(*scores)
        for variable, value in zip(self.update_scales + self.drop_rates, settings):
            variable.assign(value)
        added = (*settings, *scores, tf.reduce_sum(tf.cast(both, tf.float32)), 1.0)
        for variable, value in zip(self.epoch_sums.values(), added):
            variable.assign_add(value)

    def epoch_summary(self) -> dict[str, float]:
        """`adaptive`: the `SUMMARY_KEYS` figures of the batches since the last call (means of the step scales and
        drop rates per batch; the probes' true-class probability per row with both modalities), and a fresh start
        for the next epoch; `aux`: `{}`. Reads variables: once an epoch, not every step."""
        if self.mode != "adaptive":
            return {}
        sums = {name: float(variable.read_value()) for name, variable in self.epoch_sums.items()}
        for variable in self.epoch_sums.values():
            variable.assign(0.0)
        batches, rows = max(sums["batches"], 1.0), max(sums["rows"], 1.0)
        return {name: sums[name] / (rows if name.endswith("_probe_score") else batches) for name in SUMMARY_KEYS}


def summary_line(summary: dict[str, float]) -> str:
    """An `epoch_summary` in a few words, for the epoch's log line.

    Example:
    >>> summary_line({"text_update_scale": 0.62, "image_update_scale": 1.0, "text_drop_rate": 0.12,
    ...               "image_drop_rate": 0.0, "text_probe_score": 0.81, "image_probe_score": 0.35})
    'OGM step text 0.62 image 1.00, OPM drop text 0.12 image 0.00, probes text 0.81 image 0.35'
    """
    parts = {"OGM step": "update_scale", "OPM drop": "drop_rate", "probes": "probe_score"}
    return ", ".join(
        f"{name} text {summary[f'text_{key}']:.2f} image {summary[f'image_{key}']:.2f}" for name, key in parts.items()
    )


def balance_variable(value: float, name: str) -> tf.Variable:
    """A scalar the training step sets (per replica) and the optimizer or the next step reads."""
    return tf.Variable(value, trainable=False, name=name, synchronization=tf.VariableSynchronization.ON_READ,
                       aggregation=tf.VariableAggregation.MEAN)


def true_class_score(labels, logits, weights):
    """The summed probability a head gives the true classes of a batch's rows, each times its weight."""
    probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
    true_class = tf.gather(probabilities, tf.cast(labels, tf.int32), batch_dims=1)
    return tf.reduce_sum(true_class * tf.cast(weights, tf.float32))


def opm_rates(text_score, image_score, max_rate: float = OPM_MAX_RATE):
    """OPM's `(text, image)` drop rates: `max_rate * tanh(ratio - 1)` for the dominant modality, 0 for the other.

    Example:
    >>> [round(float(rate), 3) for rate in opm_rates(3.0, 1.0)]
    [0.482, 0.0]
    """
    ratio = tf.cast(text_score, tf.float32) / tf.maximum(tf.cast(image_score, tf.float32), 1e-6)
    text_rate = tf.where(ratio > 1.0, max_rate * tf.tanh(ratio - 1.0), 0.0)
    image_rate = tf.where(ratio < 1.0, max_rate * tf.tanh(1.0 / tf.maximum(ratio, 1e-6) - 1.0), 0.0)
    return text_rate, image_rate


def ogm_coefficients(text_score, image_score, alpha: float = OGM_ALPHA):
    """OGM's `(text, image)` step scales: 1 - alpha * tanh(ratio - 1) for the dominant modality, 1 for the other.

    Example:
    >>> [round(float(scale), 3) for scale in ogm_coefficients(3.0, 1.0)]
    [0.036, 1.0]
    """
    ratio = tf.cast(text_score, tf.float32) / tf.maximum(tf.cast(image_score, tf.float32), 1e-6)
    text_scale = tf.where(ratio > 1.0, 1.0 - alpha * tf.tanh(ratio - 1.0), 1.0)
    image_scale = tf.where(ratio < 1.0, 1.0 - alpha * tf.tanh(1.0 / tf.maximum(ratio, 1e-6) - 1.0), 1.0)
    return text_scale, image_scale
