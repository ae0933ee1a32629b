"""Choosing the tf.distribute strategy a run trains under, which process is the chief, and a worker's session."""

import contextlib
import json
import logging
import os

import tensorflow as tf

from mmkeras.errors import UserError

logger = logging.getLogger("mmkeras")

# What a lost peer looks like to the surviving workers' collectives (UnavailableError after ~7 s:
# docs/design.md#multi-worker-training).
LOST_WORKER_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.AbortedError,
    tf.errors.CancelledError,
)


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The tf.distribute strategy for `--strategy NAME`.

    Under `multi-worker`, call this before any other TensorFlow work: the
    collective ops of MultiWorkerMirroredStrategy are configured at startup.

    Args:
        name: `auto` (MirroredStrategy with more than one GPU, else the default
            strategy), `one` (OneDeviceStrategy on the first GPU, else the CPU),
            `mirrored` (all local GPUs, or all logical CPUs when there is no GPU)
            `multi-worker` (MultiWorkerMirroredStrategy over the cluster in
            the `TF_CONFIG` environment variable) or `tpu` (TPUStrategy on the
            TPU named by `TPU_NAME`, else the TPU attached to this host).

    Example:
    >>> strategy = make_strategy("auto")
    >>> strategy.num_replicas_in_sync
    1
    """
    if name == "multi-worker":
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=_cluster_resolver())
    if name == "tpu":
        return _tpu_strategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "one":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    # MirroredStrategy() alone takes the GPUs, or just the first CPU; name the logical CPUs explicitly.
    devices = [device.name for device in gpus or tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run folder: always, except on a non-chief multi-worker task.

    The chief is task `chief` 0 when the cluster has one, else `worker` 0 (TF_CONFIG convention).
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return True
    if resolver.task_type in (None, "chief"):
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


@contextlib.contextmanager
def worker_session(strategy: tf.distribute.Strategy, *, restart_hint: str):
    """A training job's body on this process: yields whether it is the chief.

    Only the chief logs progress (other workers log warnings and errors), and
    under multi-worker training a lost peer becomes one `UserError` that
    says how to restart (`restart_hint`) instead of a collective-op traceback.

    Example:
    >>> with worker_session(make_strategy("auto"), restart_hint="restart every worker") as chief:
    ...     chief
    True
    """
    chief = is_chief(strategy)
    level = logger.level
    if not chief:
        logger.setLevel(logging.WARNING)
    try:
        yield chief
    except LOST_WORKER_ERRORS as error:
        if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            raise
        raise UserError(f"lost contact with another worker ({type(error).__name__}); {restart_hint}") from None
    finally:
        logger.setLevel(level)


def _tpu_strategy() -> tf.distribute.TPUStrategy:
    """TensorFlow's documented TPU setup (resolve, connect, initialize), with "no TPU" as one clear error.

    Not exercised on a real TPU by the tests (none is available to the project): they check the error path.
    """
    name = os.environ.get("TPU_NAME", "local")  # "local": the TPU of a Cloud TPU VM
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=name)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError) as error:
        reason = str(error).splitlines()[0]
        raise UserError(f"--strategy tpu found no TPU (TPU_NAME={name!r}): {reason}") from None
    return tf.distribute.TPUStrategy(resolver)


def _cluster_resolver() -> tf.distribute.cluster_resolver.TFConfigClusterResolver:
    """The cluster of `TF_CONFIG`, checked so a typo is one clear error, not a hang."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise UserError("--strategy multi-worker needs the TF_CONFIG environment variable (cluster and task)")
    try:
        tf_config = json.loads(raw)
        cluster, task = tf_config["cluster"], tf_config["task"]
        cluster[task["type"]][int(task["index"])]  # the task must be a member of the cluster
    except (ValueError, KeyError, TypeError, IndexError) as error:
        raise UserError(f"TF_CONFIG is not a valid cluster and task: {type(error).__name__}: {error}") from None
    return tf.distribute.cluster_resolver.TFConfigClusterResolver()
