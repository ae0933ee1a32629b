"""Choosing the tf.distribute strategy a run trains under."""

import tensorflow as tf

from mmkeras.errors import UserError


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The tf.distribute strategy for `--strategy NAME`.

    Args:
        name: `auto` (MirroredStrategy with more than one GPU, else the default
            strategy), `one` (OneDeviceStrategy on the first GPU, else the CPU),
            `mirrored` (all local GPUs, or the CPU) or `multi-worker`.

    Example:
    >>> strategy = make_strategy("auto")
    >>> strategy.num_replicas_in_sync
    1
    """
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "one":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    # Stock Keras 3 `fit` fails under MultiWorkerMirroredStrategy (FINDINGS,
    # keras-team/keras#20585); multi-worker needs the custom distributed loop.
    raise UserError("--strategy multi-worker is not supported by this version's trainer (needs the distributed loop)")
