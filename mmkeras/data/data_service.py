"""Training input through TensorFlow's tf.data service: images decoded on other machines, batches unchanged.

`train --data-service grpc://HOST:PORT` builds each epoch's batches on tf.data
service workers (`mmkeras data-service worker`) instead of this host's CPUs.
The trainer receives exactly the batches `EpochDatasets.for_epoch` gives, in
the same order, whatever the number of workers (docs/design.md#input-through-the-tfdata-service):

- the epoch's row order is drawn here, from `(seed, epoch)` as locally, and
  sent with the pipeline;
- the pipeline's source is the batch numbers, shared out by the dispatcher
  (`processing_mode="distributed_epoch"`): each batch is built whole by one
  worker (decode, augment, batch), exactly once per epoch;
- batches come back tagged with their number and are put back in order here.

Decoding runs mmkeras' own `load_image` (Pillow) on the workers, so a worker
needs mmkeras installed and the manifest's image paths readable under the
same names. A `tf.numpy_function` cannot run on a worker in another process
(its function exists only in the process that built the graph), so the decoder
is registered under a fixed token in both (`register_image_decoder`).

Example:
>>> dispatcher = start_dispatcher(5050)                                     # doctest: +SKIP
>>> worker = start_worker("127.0.0.1:5050", 5051, host="127.0.0.1")         # doctest: +SKIP
>>> epochs = DataServiceEpochs(manifest, labels, preprocessor, batch_size=32,
...                            seed=0, service="grpc://127.0.0.1:5050")    # doctest: +SKIP
>>> for inputs, label in epochs.for_epoch(0): ...                          # doctest: +SKIP
"""

import json
import os
import socket
from functools import partial

import numpy as np
import tensorflow as tf

from mmkeras import compat
from mmkeras.config import AUGMENTATIONS
from mmkeras.data.dataset import augment_present_image, epoch_seed, model_inputs, row_columns
from mmkeras.data.manifest import Manifest
from mmkeras.data.service_address import check_port, parse_address
from mmkeras.errors import UserError
from mmkeras.preprocessing.image import load_image
from mmkeras.preprocessing.multimodal_preprocessor import MultimodalPreprocessor

# Each batch number goes to one worker, once per epoch (tf.data's "distributed_epoch", dynamic sharding).
PROCESSING_MODE = "distributed_epoch"
# The token the image decoder is registered under in the trainer and in every worker.
DECODE_TOKEN = "mmkeras.data_service.load_image"
# How long the trainer waits for the dispatcher's port to accept a connection before saying none answers.
CONNECT_TIMEOUT_S = 5.0


def start_dispatcher(port: int, work_dir: str | None = None) -> tf.data.experimental.service.DispatchServer:
    """A tf.data service dispatcher listening on `port` (0: any free port), started.

    Args:
        port: the port; the server's `target` says which one it took.
        work_dir: where the dispatcher journals its state, so a restarted
            dispatcher continues its jobs (fault-tolerant mode); `None`: in memory.
    """
    check_port(port, "--port", any_free=True)
    config = tf.data.experimental.service.DispatcherConfig(
        port=port, work_dir=work_dir, fault_tolerant_mode=work_dir is not None
    )
    return tf.data.experimental.service.DispatchServer(config)


def start_worker(dispatcher: str, port: int, *, host: str | None = None) -> tf.data.experimental.service.WorkerServer:
    """A tf.data service worker of `dispatcher` listening on `port`, started, able to decode mmkeras images.

    Args:
        dispatcher: the dispatcher's `HOST:PORT` (or `grpc://HOST:PORT`).
        port: the port to listen on (a fixed one: TensorFlow does not say which a worker took).
        host: the name or address trainers reach this machine by (the
            dispatcher hands it to them); default: this machine's hostname.
    """
    dispatcher_host, dispatcher_port = parse_address(dispatcher, "--dispatcher")
    check_port(port, "--port", any_free=False)
    register_image_decoder()
    config = tf.data.experimental.service.WorkerConfig(
        dispatcher_address=f"{dispatcher_host}:{dispatcher_port}",
        worker_address=f"{host or socket.gethostname()}:%port%",
        port=port,
    )
    return tf.data.experimental.service.WorkerServer(config)


def register_image_decoder():
    """Make `DECODE_TOKEN` run `decode_image_row` in this process (the trainer and each worker call it)."""
    compat.register_py_function(DECODE_TOKEN, decode_image_row)


def decode_image_row(path: bytes, settings: bytes) -> tuple[np.ndarray, np.ndarray]:
    """One row's image as `load_image` gives it (uint8) and its presence (1.0, or 0.0 and zeros if none).

    Args:
        path: the image path as file-system bytes (`b""`: no image).
        settings: JSON of `image_settings(preprocessor)`.
    """
    loading = json.loads(settings)
    height, width = loading["image_size"]
    if not path:
        return np.zeros((height, width, 3), np.uint8), np.float32(0.0)
    pixels = load_image(
        os.fsdecode(path),
        (height, width),
        loading["resample"],
        crop_pct=loading["crop_pct"],
        max_pixels=loading["max_pixels"],
        jpeg_draft_factor=loading["jpeg_draft_factor"],
    )
    # load_image yields whole numbers in 0..255 (8-bit RGB resized by Pillow): uint8 is exact.
    return pixels.astype(np.uint8), np.float32(1.0)


def image_settings(preprocessor: MultimodalPreprocessor) -> dict:
    """What `MultimodalPreprocessor.load_images` passes to `load_image`, for a worker to do the same."""
    return {
        "image_size": list(preprocessor.image_size),
        "resample": preprocessor.resample,
        "crop_pct": preprocessor.crop_pct,
        "max_pixels": preprocessor.max_image_pixels,
        "jpeg_draft_factor": preprocessor.jpeg_draft_factor,
    }


class DataServiceEpochs:
    """`EpochDatasets` whose batches are built by tf.data service workers: the same batches, in the same order.

    Args:
        manifest: the rows, images already checked; the workers must read
            the image paths under the same names.
        labels: the class names in index order.
        preprocessor: the model's `MultimodalPreprocessor`.
        batch_size: rows per (global) batch; the last batch may be smaller.
        seed: the run's seed.
        service: the dispatcher, `grpc://HOST:PORT`.
        augment: `none` or `photo`, as for `EpochDatasets`.

    Example:
    >>> epochs = DataServiceEpochs(manifest, labels, preprocessor, batch_size=32, seed=0,
    ...                            service="grpc://10.0.0.5:5050")               # doctest: +SKIP
    >>> for inputs, label in epochs.for_epoch(3): ...                             # doctest: +SKIP
    """

    def __init__(
        self,
        manifest: Manifest,
        labels: list[str],
        preprocessor: MultimodalPreprocessor,
        *,
        batch_size: int,
        seed: int,
        service: str,
        augment: str = "none",
    ):
        if augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}, got {augment!r}")
        host, port = parse_address(service, "--data-service")
        _check_dispatcher_answers(host, port)
        register_image_decoder()  # an in-process worker (tests) looks the decoder up here
        self.num_examples = len(manifest.rows)
        self.batch_size = batch_size
        self.seed = seed
        self.augment = augment
        self.service = f"grpc://{host}:{port}"
        self._columns = row_columns(manifest, labels, preprocessor)
        self._image_size = preprocessor.image_size
        self._settings = json.dumps(image_settings(preprocessor))

    @property
    def num_batches(self) -> int:
        return -(-self.num_examples // self.batch_size)

    def for_epoch(self, epoch: int, *, augmented: bool = True) -> tf.data.Dataset:
        """Batches of `(inputs, label)` for epoch `epoch`, equal to `EpochDatasets.for_epoch(epoch)`'s.

        Each call starts a new tf.data service job (no `job_name`): a shared
        name would make a resumed run join a half-read job and miss its batches.
        """
        seed = epoch_seed(self.seed, epoch)
        tagged = self._tagged_batches(self._epoch_order(seed), seed, augmented)
        tagged = tagged.apply(
            tf.data.experimental.service.distribute(processing_mode=PROCESSING_MODE, service=self.service)
        )
        return self._in_order(tagged)

    def _epoch_order(self, seed: int) -> np.ndarray:
        """The rows in `EpochDatasets.for_epoch`'s order: the same shuffle, drawn here on row numbers."""
        rows = tf.data.Dataset.range(self.num_examples)
        shuffled = rows.shuffle(self.num_examples, seed=seed, reshuffle_each_iteration=False)
        return np.fromiter(shuffled.as_numpy_iterator(), np.int64, count=self.num_examples)

    def _tagged_batches(self, order: np.ndarray, seed: int, augmented: bool) -> tf.data.Dataset:
        """`(batch number, inputs, label)`, one batch per batch number, built whole where it is processed."""
        columns = {name: tf.constant(column[order]) for name, column in self._columns.items()}
        decode = partial(_decode_on_worker, settings=self._settings, image_size=self._image_size)
        augment = partial(augment_present_image, epoch_seed=seed, image_size=self._image_size)
        photo = augmented and self.augment == "photo"

        def batch(number):
            start = number * self.batch_size
            rows = {name: column[start : start + self.batch_size] for name, column in columns.items()}
            dataset = tf.data.Dataset.from_tensor_slices(rows)
            dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            if photo:
                dataset = dataset.map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            dataset = dataset.batch(self.batch_size).map(model_inputs)
            return dataset.map(lambda inputs, label: (number, inputs, label))

        numbers = tf.data.Dataset.range(self.num_batches)
        return numbers.interleave(batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def _in_order(self, tagged: tf.data.Dataset) -> tf.data.Dataset:
        """`tagged`'s batches by batch number, without the number (workers finish them in any order)."""
        num_batches = self.num_batches

        def batches():
            waiting, expected = {}, 0
            for number, inputs, label in tagged:
                waiting[int(number)] = (inputs, label)
                while expected in waiting:
                    yield waiting.pop(expected)
                    expected += 1
            if expected != num_batches:  # a worker lost mid-epoch loses its batches (at-most-once delivery)
                raise RuntimeError(f"the tf.data service delivered {expected} of {num_batches} batches in order")

        return tf.data.Dataset.from_generator(batches, output_signature=tagged.element_spec[1:])


def _decode_on_worker(columns: dict, settings: str, image_size: tuple[int, int]) -> dict:
    """`_decode_image` of mmkeras.data.dataset, by the fixed-token decoder a worker in another process has."""
    columns = dict(columns)
    image, image_present = tf.raw_ops.PyFuncStateless(
        input=[columns.pop("image_path"), tf.constant(settings)],
        token=DECODE_TOKEN,
        Tout=[tf.uint8, tf.float32],
        name="load_image",
    )
    image.set_shape([*image_size, 3])
    image_present.set_shape([])
    return {**columns, "image": image, "image_present": image_present}


def _check_dispatcher_answers(host: str, port: int):
    """A `UserError` now, rather than a trainer that waits for a dispatcher that is not there."""
    try:
        socket.create_connection((host.strip("[]"), port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise UserError(
            f"--data-service: no tf.data service dispatcher answers at grpc://{host}:{port} ({error}); "
            "start one with `mmkeras data-service dispatcher --port PORT`"
        ) from None
