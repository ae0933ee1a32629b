"""`EpochLog`: a run's per-epoch record, written as training goes: results.csv and TensorBoard events.

`results.csv` has one row per finished epoch (losses, accuracies, learning
rate, `adaptive` modality balance's record, seconds) and is rewritten whole from the training state after each
epoch, so a resumed run's file matches an uninterrupted run's. TensorBoard
event files (`RUN_DIR/tensorboard/train/` and `validation/`, each figure under
one tag in both, as Keras's TensorBoard callback writes them; `adaptive`'s
record under `modality_balance/` in `train/`) are written when
the `tensorboard` package is installed (`pip install "mmkeras[tensorboard]"`);
without it they are skipped with one log line.

Example:
>>> log = EpochLog("runs/demo")                                        # doctest: +SKIP
>>> fit(loop, epochs_data, val_data, epochs=10, batch_size=32,
...     on_epoch_end=log)                                               # doctest: +SKIP
"""

import importlib.util
import logging
from pathlib import Path

from mmkeras.evaluation.results_folder import write_csv
from mmkeras.runs import RESULTS_CSV, TENSORBOARD_FOLDER
from mmkeras.training.checkpoints import TrainingState
from mmkeras.training.modality_balance import SUMMARY_KEYS as BALANCE_KEYS

logger = logging.getLogger("mmkeras")

# results.csv's columns after `epoch`, in order; a key a run does not have (no validation) is left out.
COLUMNS = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", *BALANCE_KEYS)
# TensorBoard's event folders and the history keys each holds, by tag. One tag in two folders is one chart with a
# training and a validation curve, as in the report; `loss` and `val_loss` as two tags were two charts.
EVENT_FOLDERS = {
    "train": {"loss": "loss", "accuracy": "accuracy", "learning_rate": "learning_rate",
              **{f"modality_balance/{key}": key for key in BALANCE_KEYS}},
    "validation": {"loss": "val_loss", "accuracy": "val_accuracy"},
}


class EpochLog:
    """Writes results.csv (and TensorBoard scalars) after each epoch; call it with the `TrainingState`.

    Args:
        run_dir: the run folder.
        tensorboard: write TensorBoard event files when the package is
            installed.
    """

    def __init__(self, run_dir, *, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.tensorboard = tensorboard and importlib.util.find_spec("tensorboard") is not None
        self.writers = {}
        if tensorboard and not self.tensorboard:
            logger.info('tensorboard is not installed: no event files (pip install "mmkeras[tensorboard]")')

    def __call__(self, state: TrainingState):
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_csv(self.run_dir / RESULTS_CSV, epoch_rows(state))
        if self.tensorboard:
            self._write_scalars(state)

    def _write_scalars(self, state: TrainingState):
        import tensorflow as tf

        epoch = len(state.epoch_seconds)
        for folder, keys in EVENT_FOLDERS.items():
            figures = {tag: state.history[key][-1] for tag, key in keys.items() if key in state.history}
            if folder == "train":
                figures["epoch_seconds"] = state.epoch_seconds[-1]
            if not figures:
                continue  # no validation rows: no validation folder
            if folder not in self.writers:  # made with the first figures: a run that fails before leaves no folder
                self.writers[folder] = tf.summary.create_file_writer(str(self.run_dir / TENSORBOARD_FOLDER / folder))
            with self.writers[folder].as_default(step=epoch):
                for tag, value in figures.items():
                    tf.summary.scalar(tag, value)
            self.writers[folder].flush()


def epoch_rows(state: TrainingState) -> list[dict]:
    """The rows of results.csv: `epoch` (1-based), the `COLUMNS` the run has, and `seconds`."""
    keys = [key for key in COLUMNS if key in state.history]
    return [
        {"epoch": epoch + 1, **{key: state.history[key][epoch] for key in keys}, "seconds": seconds}
        for epoch, seconds in enumerate(state.epoch_seconds)
    ]
