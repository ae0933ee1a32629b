"""Input-bound or compute-bound: photos per second of the input pipeline, locally and through the tf.data service,
against the training step alone.

Prints one JSON object on stdout (progress on stderr). Measures, asserts nothing.

- `input_local_photos_per_second`: `EpochDatasets.for_epoch` decoding every epoch (as for a training set larger
  than the in-memory cache of decoded images: `CACHE_LIMIT_BYTES`), on this host's CPUs.
- `input_service_photos_per_second`: `DataServiceEpochs.for_epoch` through a dispatcher on this host and 1, then
  2, workers started as `mmkeras data-service worker` processes on this host. On one machine the workers share
  its CPUs, so this measures the service's overhead, not scale-out: on separate machines each worker adds its
  own cores.
- `train_step_samples_per_second`: mmkeras' `TrainingLoop` on the same model with the batches already in memory
  (`training_throughput.py`'s `LoopTrainer`).
- `bound`: `input` when the local pipeline delivers fewer photos per second than the step consumes.

Local and service epochs take turns, so a change in the shared machine's load hits both alike.

    python benchmarks/data_service_throughput.py [--photos 32] [--photo-size 4000x3000] [--epochs 3]
"""

import argparse
import json
import logging
import os
import platform
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import skimage.data
from PIL import Image

import mmkeras.data.dataset as dataset_module
from mmkeras.data.data_service import DataServiceEpochs, start_dispatcher
from mmkeras.data.dataset import EpochDatasets
from mmkeras.data.manifest import read_manifest

sys.path.insert(0, str(Path(__file__).parent))
from training_throughput import BATCH_SIZE, LoopTrainer, fresh_model, synthetic_rows  # noqa: E402

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
CLI = "import sys; from mmkeras.cli.app import main; sys.exit(main())"


def log(message: str):
    print(message, file=sys.stderr, flush=True)


def write_photos(folder: Path, count: int, size: tuple[int, int]) -> Path:
    """`count` phone-size JPEGs (scikit-image's photos upscaled, quality 92) and a manifest of them."""
    lines = ["text,image,label"]
    for index in range(count):
        name = PHOTOS[index % len(PHOTOS)]
        photo = Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize(size, Image.LANCZOS)
        path = folder / f"{index}.jpg"
        photo.save(path, quality=92)
        lines.append(f"a photo of {name},{path},{name}")
    manifest = folder / "photos.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def start_worker(dispatcher_port: int) -> subprocess.Popen:
    """`mmkeras data-service worker` on this host, returned once it listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = ["data-service", "worker", "--dispatcher", f"127.0.0.1:{dispatcher_port}", "--port", str(port)]
    process = subprocess.Popen(
        [sys.executable, "-c", CLI, *args, "--host", "127.0.0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    if not select.select([process.stdout], [], [], 120)[0]:
        process.kill()
        raise RuntimeError("the worker did not start")
    log(process.stdout.readline().strip())
    return process


def photos_per_second(epochs, epoch: int, rows: int) -> float:
    started = time.perf_counter()
    for _ in epochs.for_epoch(epoch):
        pass
    return rows / (time.perf_counter() - started)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def measure(args) -> dict:
    width, height = (int(side) for side in args.photo_size.split("x"))
    model, preprocessor = fresh_model()
    dataset_module.CACHE_LIMIT_BYTES = 0  # decode every epoch, as for a training set larger than the cache
    with tempfile.TemporaryDirectory() as folder:
        manifest = read_manifest(write_photos(Path(folder), args.photos, (width, height)))
        labels = sorted({row.label for row in manifest.rows})
        settings = {"batch_size": BATCH_SIZE, "seed": 0}
        local = EpochDatasets(manifest, labels, preprocessor, **settings)
        dispatcher = start_dispatcher(0)
        port = int(dispatcher.target.rsplit(":", 1)[1])
        workers = []
        figures = {"local": [], 1: [], 2: []}
        try:
            for count in (1, 2):
                workers.append(start_worker(port))
                service = DataServiceEpochs(manifest, labels, preprocessor, service=f"127.0.0.1:{port}", **settings)
                photos_per_second(service, 0, args.photos)  # warm-up: the job's first connection to the workers
                for epoch in range(args.epochs):
                    figures["local"].append(photos_per_second(local, epoch, args.photos))
                    figures[count].append(photos_per_second(service, epoch, args.photos))
                    log(f"epoch {epoch}: local {figures['local'][-1]:.1f}, {count} worker(s) {figures[count][-1]:.1f}")
        finally:
            for worker in workers:
                worker.terminate()
                worker.wait()
            dispatcher.stop()
    inputs, labels = synthetic_rows(preprocessor, args.train_rows)
    trainer = LoopTrainer(inputs, labels, jit_compile=False, policy="float32", total_epochs=args.epochs + 1)
    trainer.epoch_seconds()  # warm-up: tracing
    step = statistics.median(args.train_rows / trainer.epoch_seconds() for _ in range(args.epochs))
    local_input = statistics.median(figures["local"])
    return {
        "machine": f"{cpu_name()}, {os.cpu_count()} CPUs",
        "photos": args.photos,
        "photo_size": [width, height],
        "image_size": list(preprocessor.image_size),
        "batch_size": BATCH_SIZE,
        "input_local_photos_per_second": round(local_input, 2),
        "input_service_photos_per_second": {
            "1_worker": round(statistics.median(figures[1]), 2),
            "2_workers": round(statistics.median(figures[2]), 2),
        },
        "train_step_samples_per_second": round(step, 1),
        "bound": "input" if local_input < step else "compute",
        "step_over_input": round(step / local_input, 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=32)
    parser.add_argument("--photo-size", default="4000x3000", help="WIDTHxHEIGHT of the JPEGs")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per mode")
    parser.add_argument("--train-rows", type=int, default=256)
    args = parser.parse_args()
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    print(json.dumps(measure(args)))


if __name__ == "__main__":
    main()
