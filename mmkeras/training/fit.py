"""`fit`: epochs of a `TrainingLoop` with validation, early stopping, best weights and resume checkpoints.

Generic over the model: it needs a `TrainingLoop`, an object with
`for_epoch(epoch) -> dataset` and `num_examples` (e.g. `EpochDatasets`), and
optionally a validation dataset. The trainer uses it for the multimodal model
and for a head model on cached features, `qat_finetune` for a QAT model.
"""

import logging
import math
import time
from collections.abc import Callable

import numpy as np

from mmkeras.errors import UserError
from mmkeras.progress import step_progress
from mmkeras.training.checkpoints import Checkpoints, TrainingState
from mmkeras.training.modality_balance import summary_line
from mmkeras.training.training_loop import TrainingLoop, updates_per_epoch

logger = logging.getLogger("mmkeras")


def fit(
    loop: TrainingLoop,
    train_epochs,
    val_data=None,
    *,
    epochs: int,
    batch_size: int,
    patience: int = 0,
    checkpoints: Checkpoints | None = None,
    checkpoint_steps: int = 0,
    state: TrainingState | None = None,
    best_weights: list | None = None,
    keep_best: bool = True,
    on_epoch_end: Callable[[TrainingState], None] | None = None,
    figure_name: Callable[[str], str] = str,
) -> TrainingState:
    """Train from `state` (a fresh run by default) to the end, then restore the best weights.

    Args:
        loop: the training loop (model, optimizer, strategy).
        train_epochs: `for_epoch(epoch)` gives epoch `epoch`'s batches in a
            fixed order; `num_examples` rows per epoch.
        val_data: batches of `(inputs, labels)` to validate on after each
            epoch, or `None` (no early stopping, last weights kept).
        epochs: the total number of epochs of the run.
        batch_size: the global batch size of `train_epochs`.
        patience: epochs without a lower `val_loss` before stopping (0: never).
        checkpoints: where to write resume checkpoints (each epoch, and every
            `checkpoint_steps` optimizer updates when that is > 0).
        checkpoint_steps: see `checkpoints`.
        state: where to continue from (a checkpoint's state), or `None`.
        best_weights: the best weights so far when continuing.
        keep_best: whether validation picks the weights kept (and early
            stopping); `False` only reports its figures each epoch (QAT).
        on_epoch_end: called with the state after each epoch's history is
            recorded (e.g. `EpochLog`, which writes results.csv).
        figure_name: how the epoch log line names a figure's key (the task's
            `Task.figure_name`: a multilabel run's `accuracy` is an exact
            match at 0.5); default: the key itself.

    Returns:
        The final `TrainingState` (history, epoch seconds, early stopping).

    Raises:
        UserError: the training loss of an epoch is NaN or infinite.

    Example:
    >>> state = fit(loop, EpochDatasets(...), val_data, epochs=10, batch_size=32, patience=3)  # doctest: +SKIP
    >>> state.history["val_loss"]                                                              # doctest: +SKIP
    """
    state = state or TrainingState()
    model = loop.model
    best = {"weights": best_weights}
    num_batches = -(-train_epochs.num_examples // batch_size)
    epoch_updates = updates_per_epoch(train_epochs.num_examples, batch_size, loop.gradient_accumulation)

    def checkpoint():
        if checkpoints is not None:
            groups = {"model": model.variables, "optimizer": loop.optimizer.variables}
            if best["weights"] is not None:
                groups["best"] = best["weights"]
            checkpoints.save(state, groups)

    def after_update(batches_done, totals, progress):
        progress.update(batches_done)
        # Counted here, not read from the optimizer: reading a variable would wait for every step.
        updates = state.epoch * epoch_updates + -(-batches_done // loop.gradient_accumulation)
        if checkpoint_steps and updates % checkpoint_steps == 0 and batches_done < num_batches:
            state.batch, state.totals = batches_done, totals.numpy().tolist()
            checkpoint()

    if state.epoch < epochs:
        logger.info("tracing the training step: the first batch takes longer")
    while state.epoch < epochs and not state.stopped_early:
        started = time.perf_counter()
        description = f"epoch {state.epoch + 1}/{epochs}"
        with step_progress(description, num_batches, completed=state.batch) as progress:
            loss, accuracy = loop.train_epoch(
                train_epochs.for_epoch(state.epoch),
                num_examples=train_epochs.num_examples,
                batch_size=batch_size,
                start_batch=state.batch,
                start_totals=np.asarray(state.totals),
                after_update=lambda batches_done, totals: after_update(batches_done, totals, progress),
            )
        _check_finite_loss(loss, state.epoch + 1)
        figures = {"loss": loss, "accuracy": accuracy}
        if val_data is not None:
            if not state.epoch_seconds:
                logger.info("validating (the first time traces the evaluation step)")
            figures["val_loss"], figures["val_accuracy"] = loop.evaluate(val_data)
            if keep_best:
                _track_best(state, figures["val_loss"], best, model, patience)
        state.epoch_seconds.append(round(time.perf_counter() - started, 3))
        # The rate after the epoch's last update, read once per epoch (reading a variable waits for every step).
        figures["learning_rate"] = float(loop.optimizer.learning_rate)
        # `--modality-balance adaptive`: how its modulation went this epoch; recorded, logged in a few words.
        balance = loop.balance.epoch_summary() if loop.balance is not None else {}
        for key, value in {**figures, **balance}.items():
            state.history.setdefault(key, []).append(value)
        logger.info(
            "epoch %d/%d  %s%s  (%.1fs)", state.epoch + 1, epochs, epoch_figures(figures, figure_name),
            f"  ({summary_line(balance)})" if balance else "", state.epoch_seconds[-1],
        )
        state.epoch, state.batch, state.totals = state.epoch + 1, 0, [0.0, 0.0, 0.0]
        checkpoint()
        if on_epoch_end is not None:
            on_epoch_end(state)
    if best["weights"] is not None:
        model.set_weights(best["weights"])
    return state


def epoch_figures(figures: dict, figure_name: Callable[[str], str] = str) -> str:
    """An epoch's figures as its log line shows them, named by `figure_name`, without the learning rate.

    Example:
    >>> epoch_figures({"loss": 0.42, "accuracy": 0.25, "learning_rate": 0.001})
    'loss 0.4200 accuracy 0.2500'
    """
    return " ".join(f"{figure_name(key)} {value:.4f}" for key, value in figures.items() if key != "learning_rate")


def kept_weights_summary(
    history: dict, kept_epoch: int | None, stopped_early: bool, patience: int, with_accuracy: bool = True
) -> str:
    """Which epoch's weights a run kept and why, and where it stopped, in words.

    Args:
        history: per-epoch metrics (`loss`, and `val_loss`, `val_accuracy` with validation).
        kept_epoch: the epoch (1-based) of the lowest `val_loss`, `None` without validation.
        stopped_early: whether early stopping ended the run.
        patience: the early-stopping patience the run used.
        with_accuracy: name the kept epoch's `val_accuracy` too (a multi-label run's is the exact match at
            0.5, which says little: its tuned figures are reported instead).

    Example:
    >>> kept_weights_summary({"loss": [0.9, 0.7, 0.6], "val_loss": [0.8, 0.6, 0.7],
    ...                       "val_accuracy": [0.5, 0.7, 0.6]}, 2, False, 3)
    "kept epoch 2's weights (lowest val_loss 0.6000, val_accuracy 0.7000); trained all 3 epochs"
    >>> kept_weights_summary({"loss": [0.9], "val_loss": [0.8], "val_accuracy": [0.5]}, 1, False, 3)
    "kept epoch 1's weights (lowest val_loss 0.8000, val_accuracy 0.5000); trained the one epoch"
    """
    last = len(history["loss"])
    ended = (
        f"stopped after epoch {last}: val_loss did not improve for {patience} epochs"
        if stopped_early
        else f"trained all {last} epochs" if last > 1 else "trained the one epoch"
    )
    if kept_epoch is None:
        return f"kept the last epoch's weights (no validation manifest); {ended}"
    index = kept_epoch - 1
    accuracy = history.get("val_accuracy", [None] * last)[index] if with_accuracy else None
    shown = f", val_accuracy {accuracy:.4f}" if accuracy is not None else ""
    return f"kept epoch {kept_epoch}'s weights (lowest val_loss {history['val_loss'][index]:.4f}{shown}); {ended}"


def _check_finite_loss(loss: float, epoch: int):
    """A NaN or infinite loss never recovers: stop and say what to change instead of saving a broken run."""
    if not math.isfinite(loss):
        raise UserError(
            f"training diverged: the loss became {loss} in epoch {epoch}; lower --learning-rate "
            "(or check the data for extreme values) and train again"
        )


def _track_best(state: TrainingState, val_loss: float, best: dict, model, patience: int):
    """Early stopping on `val_loss`: keep the best weights, count epochs without improvement."""
    if state.best_val_loss is None or val_loss < state.best_val_loss:
        state.best_val_loss, state.epochs_without_improvement = val_loss, 0
        state.best_epoch = state.epoch + 1
        best["weights"] = model.get_weights()
        return
    state.epochs_without_improvement += 1
    if patience and state.epochs_without_improvement >= patience:
        state.stopped_early = True
        logger.info("early stopping: val_loss has not improved for %d epochs", patience)
