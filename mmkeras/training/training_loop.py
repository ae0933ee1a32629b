"""`TrainingLoop`: a custom tf.distribute training loop for any Keras model.

Why not `model.fit`: stock Keras 3 `fit` fails under
MultiWorkerMirroredStrategy (keras-team/keras#20585, #20329), and it cannot
resume mid-epoch exactly (`BackupAndRestore(save_freq=N)` restarts the epoch):
docs/design.md#distributed-training-loop. This loop follows the pattern TensorFlow documents for custom
distributed training (`experimental_distribute_dataset`, `strategy.run`, the
loss divided by the *global* number of examples), so one process and N
replicas compute the same update.

What it adds by hand, because neither Keras 3 nor TensorFlow offers it for
this loop: gradient accumulation whose update equals one batch N times bigger
even for the last, partial group of an epoch (each micro-batch's loss is
divided by the size of its whole group; Keras' `gradient_accumulation_steps`
averages per-micro-batch means instead), class-weighted losses, and batch-level
positions (`skip` the consumed batches of a seeded epoch) for exact resume.

It is generic over `(model, dataset of (inputs, labels))`: the trainer uses it
for the multimodal model and a head model on cached features, `qat_finetune`
for a fake-quantized model.
"""

import contextlib
import math

import keras
import numpy as np
import tensorflow as tf

from mmkeras import compat
from mmkeras.training.optimizers import densify_gradients
from mmkeras.training.rematerialization import rematerialized

DISTRIBUTING_STRATEGIES = (
    tf.distribute.MirroredStrategy,
    tf.distribute.MultiWorkerMirroredStrategy,
    tf.distribute.OneDeviceStrategy,
    tf.distribute.TPUStrategy,
)


class TrainingLoop:
    """Trains `model` with `optimizer` under a tf.distribute strategy, batch by batch.

    Args:
        model: a Keras model mapping inputs to logits `[B, classes]`, built
            (its variables created) under `strategy.scope()`.
        optimizer: a Keras optimizer (may be a `LossScaleOptimizer`); built
            here, under the strategy's scope.
        strategy: the tf.distribute strategy (default: the current one).
        class_weights: a weight per class for the loss, or `None` (all 1).
        gradient_accumulation: micro-batches per optimizer update.
        loss: what the model is trained to minimise, when not the
            classification cross-entropy of logits: an object with
            `per_example_loss(labels, outputs)` and
            `correct_predictions(labels, outputs)` (e.g. `ContrastiveLoss`,
            whose outputs are embeddings); class weights do not apply to it.
        jit_compile: compile the step with XLA when every layer supports it
            (the whole step on one replica; the forward/backward pass per
            replica under a distributed strategy, where XLA cannot reach the
            other replicas' variables); `None` (the default): XLA on GPUs
            only (`use_xla`).
        balance: a `ModalityBalance` whose `training_model` is `model`
            (outputs: fused, text-only and image-only logits): its loss is
            trained, its drops applied to each batch and its modulation set
            (the optimizer must apply it: `balance.scale_updates(optimizer)`);
            the figures are the fused logits'.
        remat: the name of a functional sub-model (a backbone) whose forward
            pass the backward pass recomputes segment by segment
            (`rematerialized`): less memory for more time; `None`: none.

    Example:
    >>> loop = TrainingLoop(model, keras.optimizers.Adam(1e-3))       # doctest: +SKIP
    >>> loss, accuracy = loop.train_epoch(dataset, num_examples=64,
    ...                                   batch_size=16)              # doctest: +SKIP
    """

    def __init__(
        self,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        *,
        strategy: tf.distribute.Strategy | None = None,
        class_weights=None,
        gradient_accumulation: int = 1,
        loss=None,
        jit_compile: bool | None = None,
        balance=None,
        remat: str | None = None,
    ):
        self.model = model
        self.remat = remat
        self.balance = balance
        self.loss = loss
        self.optimizer = optimizer
        self.strategy = strategy or tf.distribute.get_strategy()
        self.gradient_accumulation = gradient_accumulation
        self.class_weights = None if class_weights is None else tf.constant(class_weights, tf.float32)
        trainable = model.trainable_variables
        with self.strategy.scope():
            optimizer.build(trainable)
            # Each replica sums its own micro-batch gradients; the optimizer all-reduces at the update.
            self.accumulators = [
                tf.Variable(
                    tf.zeros(variable.shape, variable.dtype),
                    trainable=False,
                    synchronization=tf.VariableSynchronization.ON_READ,
                    aggregation=tf.VariableAggregation.SUM,
                )
                for variable in (trainable if gradient_accumulation > 1 else [])
            ]
        jit_compile = use_xla(jit_compile) and compat.model_supports_jit(model)
        distributed = is_distributed(self.strategy)
        self.jit_compile = jit_compile
        self._gradients = (
            tf.function(self._replica_gradients, jit_compile=True)
            if jit_compile and distributed
            else (self._replica_gradients)
        )
        step_jit = jit_compile and not distributed
        self._update_step = tf.function(lambda *args: self._run(self._replica_update, args), jit_compile=step_jit)
        self._accumulate_step = tf.function(
            lambda *args: self._run(self._replica_accumulate, args),
            jit_compile=step_jit,
        )
        self._evaluate_step = tf.function(lambda *args: self._run(self._replica_evaluate, args), jit_compile=step_jit)

    # --- per replica -------------------------------------------------------------------------------------------

    def _per_example_loss(self, labels, logits):
        if self.loss is not None:
            return self.loss.per_example_loss(labels, logits)
        losses = keras.losses.sparse_categorical_crossentropy(labels, tf.cast(logits, tf.float32), from_logits=True)
        if self.class_weights is not None:
            losses = losses * tf.gather(self.class_weights, labels)
        return losses

    def _replica_gradients(self, inputs, labels, group_size):
        """Gradients of this replica's share of `sum(losses) / group_size` (global examples per update)."""
        variables = self.model.trainable_variables
        if self.balance is not None:
            inputs = self.balance.drop_dominant(inputs)
        with tf.GradientTape() as tape:
            with rematerialized(self.model, self.remat) if self.remat else contextlib.nullcontext():
                outputs = self.model(inputs, training=True)
            logits = outputs if self.balance is None else outputs[0]
            losses = self._per_example_loss(labels, logits)
            objective = losses
            if self.balance is not None:
                objective = self.balance.per_example_loss(labels, outputs, self._per_example_loss)
            loss = tf.reduce_sum(objective) / tf.cast(group_size, tf.float32)
            scaled = self.optimizer.scale_loss(loss)  # loss scaling under mixed_float16, else the loss itself
        gradients = densify_gradients(tape.gradient(scaled, variables))
        if self.balance is not None:
            self.balance.modulate(labels, outputs, inputs["modality_mask"])
        return gradients, self._figures(labels, logits, losses)

    def _replica_accumulate(self, inputs, labels, group_size):
        gradients, figures = self._gradients(inputs, labels, group_size)
        for accumulator, gradient in zip(self.accumulators, gradients):
            accumulator.assign_add(gradient)
        return figures

    def _replica_update(self, inputs, labels, group_size):
        gradients, figures = self._gradients(inputs, labels, group_size)
        if self.accumulators:
            gradients = [gradient + accumulator for gradient, accumulator in zip(gradients, self.accumulators)]
        self.optimizer.apply(gradients, self.model.trainable_variables)
        for accumulator in self.accumulators:
            accumulator.assign(tf.zeros_like(accumulator))
        return figures

    def _replica_evaluate(self, inputs, labels):
        logits = self.model(inputs, training=False)
        logits = logits if self.balance is None else logits[0]
        return self._figures(labels, logits, self._per_example_loss(labels, logits))

    def _figures(self, labels, logits, losses):
        """Sums this replica contributes: loss, correct predictions, examples."""
        if self.loss is None:
            correct = _correct_predictions(labels, logits)
        else:
            correct = self.loss.correct_predictions(labels, logits)
        return [tf.reduce_sum(losses), correct, tf.cast(tf.size(labels), tf.float32)]

    def _run(self, replica_fn, args):
        """`replica_fn` on every replica; its figures summed over all of them."""
        if not is_distributed(self.strategy):
            # The default strategy's run/reduce wrappers add nothing here (one A/B timing of the XLA step
            # was 3x slower with them; a repeat on the busy machine was within noise).
            return replica_fn(*args)
        figures = self.strategy.run(replica_fn, args=args)
        return [self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None) for value in figures]

    # --- epochs ------------------------------------------------------------------------------------------------

    def _distribute(self, dataset):
        if not is_distributed(self.strategy):
            return dataset
        return self.strategy.experimental_distribute_dataset(dataset)

    def train_epoch(
        self,
        dataset,
        *,
        num_examples: int,
        batch_size: int,
        start_batch: int = 0,
        start_totals=None,
        after_update=None,
    ):
        """One epoch (or its rest, from `start_batch`) of optimizer updates.

        Args:
            dataset: batches of `(inputs, labels)`, `batch_size` rows each
                (the last may be smaller), in this epoch's order, *from its
                first batch* (the consumed ones are skipped here).
            num_examples: rows in a whole epoch.
            batch_size: the global batch size (across all replicas/workers).
            start_batch: batches already consumed in this epoch (a multiple of
                `gradient_accumulation`); they are skipped.
            start_totals: loss sum, correct predictions and examples of the
                consumed batches (so a resumed epoch reports the whole epoch).
            after_update: called as `after_update(batches_done, totals)` after
                each optimizer update (e.g. to write a checkpoint); `totals` is
                a float64 tensor like `start_totals`.

        Returns:
            `(loss, accuracy)` of the epoch.
        """
        sizes = batch_sizes(num_examples, batch_size)
        groups = self.gradient_accumulation
        if start_batch % groups:
            raise ValueError(f"start_batch {start_batch} is not at an update boundary ({groups} batches)")
        # Summed as a tensor: converting every step to Python would wait for each step to finish.
        totals = tf.constant(np.zeros(3) if start_totals is None else start_totals, tf.float64)
        batches = self._distribute(dataset.skip(start_batch))
        steps = [self._update_step] + ([self._accumulate_step] if groups > 1 else [])
        trace_for_any_batch_size(steps, batches.element_spec, tf.TensorSpec([], tf.int32))
        batches = iter(batches)
        for index in range(start_batch, len(sizes)):
            group_start = index - index % groups
            group_end = min(group_start + groups, len(sizes))
            group_size = tf.constant(sum(sizes[group_start:group_end]), tf.int32)
            inputs, labels = next(batches)
            step = self._update_step if index == group_end - 1 else self._accumulate_step
            totals += tf.cast(tf.stack(step(inputs, labels, group_size)), tf.float64)
            if index == group_end - 1 and after_update is not None:
                after_update(index + 1, totals)
        return _loss_and_accuracy(totals.numpy())

    def evaluate(self, dataset):
        """`(loss, accuracy)` of the model on a dataset of `(inputs, labels)`."""
        totals = tf.zeros(3, tf.float64)
        batches = self._distribute(dataset)
        trace_for_any_batch_size([self._evaluate_step], batches.element_spec)
        for inputs, labels in batches:
            totals += tf.cast(tf.stack(self._evaluate_step(inputs, labels)), tf.float64)
        return _loss_and_accuracy(totals.numpy())


def trace_for_any_batch_size(steps, element_spec, *more_specs):
    """Trace each of `steps` (`tf.function`s) once for the batches `element_spec` describes.

    A dataset without `drop_remainder` gives batches of unknown size, and a
    call dispatches to the trace whose signature covers its arguments: the
    last, smaller batch of an epoch (and a validation set's) runs the same
    trace. Traced on the first call instead, it would trace again for that
    batch: fine-tuning EfficientNet-Lite0 at 224 on 36 rows, the second trace
    cost `train` 0.12-0.19 GB of peak RSS and about 13 CPU seconds, with no
    difference in step time (docs/design.md#fine-tuning-peak-memory). Calls
    with a signature already traced only look it up.
    """
    for step in steps:
        step.get_concrete_function(*element_spec, *more_specs)


def use_xla(jit_compile: bool | None) -> bool:
    """`jit_compile` when set; unset, XLA on GPUs only: on the 2-core AMD EPYC CPU of this project's
    machines it made training 0.3-0.8x as fast (benchmarks/README.md)."""
    if jit_compile is None:
        return bool(tf.config.list_logical_devices("GPU"))
    return jit_compile


def is_distributed(strategy: tf.distribute.Strategy) -> bool:
    """Whether `strategy` places variables itself (anything but the default strategy)."""
    return isinstance(strategy, DISTRIBUTING_STRATEGIES)


def updates_per_epoch(num_examples: int, batch_size: int, gradient_accumulation: int = 1) -> int:
    """Optimizer updates in one epoch (for the learning-rate schedule)."""
    return math.ceil(len(batch_sizes(num_examples, batch_size)) / gradient_accumulation)


def batch_sizes(num_examples: int, batch_size: int) -> list[int]:
    """The global size of each batch of an epoch (the last one may be smaller)."""
    full, rest = divmod(num_examples, batch_size)
    return [batch_size] * full + ([rest] if rest else [])


def _correct_predictions(labels, logits):
    predictions = tf.argmax(logits, axis=-1, output_type=labels.dtype)
    return tf.reduce_sum(tf.cast(tf.equal(predictions, labels), tf.float32))


def _loss_and_accuracy(totals) -> tuple[float, float]:
    loss_sum, correct, count = totals
    count = max(count, 1.0)
    return float(loss_sum / count), float(correct / count)
