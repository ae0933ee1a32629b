"""Photo training throughput of any vision backbone: the input pipeline alone against the training step alone.

Prints one JSON object on stdout (progress on stderr). Measures, asserts nothing.

For a vision backbone (`tiny`, or a checkpoint folder such as EfficientNet-Lite0's:
docs/design.md#vision-checkpoint-folders) with the `tiny` text backbone, at the backbone's image size (or
`--image-size`), batch 32, in the two ways `mmkeras train` trains it:

- **fine-tuned** (`--freeze none`): every epoch decodes the photos (`EpochDatasets.for_epoch` with the in-memory
  cache of decoded images off, as for a training set larger than `CACHE_LIMIT_BYTES`) and trains the whole model.
  `input_photos_per_second`: the pipeline alone, per photo size (and `before_full_decode`: the same with every
  JPEG pixel decoded, as before reduced-DCT-scale decoding); `step_photos_per_second`: `TrainingLoop` on the
  whole model with the batches already in memory.
- **frozen with cached features** (`--freeze both --cache-features`): the first run computes the frozen
  backbones' tokens once (`cache_features`: decode + backbone forward, `cache_photos_per_second`, per photo size);
  every epoch then reads them back (`input_photos_per_second`: `CachedFeatures.dataset` alone) and trains the
  head (`step_photos_per_second`: `TrainingLoop` on the head model, tokens in memory).

`bound` is `input` when the input pipeline alone delivers fewer photos per second than the step alone consumes.
Each figure is the median of `--epochs` timed passes after one warm-up pass (tracing); the modes' timed passes
take turns, so a change in a shared machine's load hits them alike. Nothing here assumes a CPU: the strategy is
the default one, the dtype policy and XLA are what `train --mixed-precision auto` and the loop pick on the
device found (mixed float16 and XLA on a GPU), and the JSON names the device.

    python benchmarks/photo_training_throughput.py --vision-backbone /tmp/effnet-lite0 \
        --photo-sizes 4000x3000 400x300 --photos 64 --epochs 2
"""

import argparse
import copy
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import keras
import tensorflow as tf

import mmkeras.data.dataset as dataset_module
from mmkeras.config import RunConfig
from mmkeras.data.dataset import EpochDatasets
from mmkeras.data.manifest import read_manifest
from mmkeras.models.backbone_split import split_at_frozen_backbones
from mmkeras.models.builder import FROZEN_BACKBONES, build_model
from mmkeras.training.feature_cache import cache_features
from mmkeras.training.optimizers import make_optimizer
from mmkeras.training.precision import dtype_policy, resolve_policy, with_loss_scaling
from mmkeras.training.trainer import apply_freeze
from mmkeras.training.training_loop import TrainingLoop

sys.path.insert(0, str(Path(__file__).parent))
from data_service_throughput import PHOTOS, cpu_name, write_photos  # noqa: E402
from training_throughput import synthetic_rows  # noqa: E402

BATCH_SIZE = 32


def log(message: str):
    print(message, file=sys.stderr, flush=True)


def fresh_model(args, policy: str):
    keras.utils.set_random_seed(0)
    with dtype_policy(policy):
        return build_model(
            "tiny",
            args.vision_backbone,
            num_classes=len(PHOTOS),
            texts=[f"a photo of {name}" for name in PHOTOS],
            seed=0,
            image_size=args.image_size,
        )


def make_trainer(model, dataset, rows: int, args, policy: str, freeze: str):
    """A pass of `TrainingLoop` over `dataset` (`rows` rows, in memory) with the run's optimizer; returns seconds."""
    config = RunConfig(
        vision_backbone=args.vision_backbone, freeze=freeze, epochs=args.epochs + 1, batch_size=BATCH_SIZE
    )
    optimizer = make_optimizer(config, model, total_steps=(args.epochs + 1) * -(-rows // BATCH_SIZE))
    loop = TrainingLoop(model, with_loss_scaling(optimizer, policy))

    def one_pass() -> float:
        started = time.perf_counter()
        loop.train_epoch(dataset, num_examples=rows, batch_size=BATCH_SIZE)
        return time.perf_counter() - started

    return one_pass


def in_memory(dataset) -> tf.data.Dataset:
    """The batches of `dataset`, read once and held in memory (the step alone, no input cost)."""
    return dataset.cache().prefetch(2)


def photos_per_second(passes: dict, rows: dict, epochs: int) -> dict:
    """Each pass's rows per second: one warm-up, then `epochs` timed passes taking turns; medians."""
    for name, one_pass in passes.items():
        log(f"{name}: warm-up {one_pass():.1f} s")
    seconds = {name: [] for name in passes}
    for epoch in range(epochs):
        for name, one_pass in passes.items():
            seconds[name].append(one_pass())
            log(f"epoch {epoch}: {name} {rows[name] / seconds[name][-1]:.1f} photos/s")
    return {name: round(rows[name] / statistics.median(values), 2) for name, values in seconds.items()}


def iterate(dataset) -> float:
    started = time.perf_counter()
    for _ in dataset:
        pass
    return time.perf_counter() - started


def measure(args) -> dict:
    policy = resolve_policy("auto")
    dataset_module.CACHE_LIMIT_BYTES = 0  # decode every epoch, as for a training set larger than the cache
    fine_tuned, preprocessor = fresh_model(args, policy)
    frozen, _ = fresh_model(args, policy)
    apply_freeze(frozen, "both")
    split = split_at_frozen_backbones(frozen, FROZEN_BACKBONES["both"])
    # Before reduced-DCT-scale JPEG decoding (docs/design.md#photo-decoding-at-reduced-dct-scale): every pixel.
    full_decode = copy.copy(preprocessor)
    full_decode.jpeg_draft_factor = None
    inputs, labels = synthetic_rows(preprocessor, args.step_rows)
    passes = {
        "fine_tuned_step": make_trainer(
            fine_tuned,
            in_memory(tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(BATCH_SIZE)),
            args.step_rows,
            args,
            policy,
            "none",
        )
    }
    rows = {"fine_tuned_step": args.step_rows}
    cache_rate = {}
    # Trace the feature model once, outside the timed caches.
    split.feature_model.predict_on_batch({name: value[:BATCH_SIZE] for name, value in inputs.items()})
    with tempfile.TemporaryDirectory() as folder:
        for width, height in args.photo_sizes:
            size = f"{width}x{height}"
            photos = Path(folder) / size
            photos.mkdir()
            log(f"writing {args.photos} photos at {size}")
            manifest = read_manifest(write_photos(photos, args.photos, (width, height)))
            names = sorted({row.label for row in manifest.rows})
            for name, decoder in (("", preprocessor), ("_full_decode", full_decode)):
                epochs = EpochDatasets(manifest, names, decoder, batch_size=BATCH_SIZE, seed=0)
                passes[f"fine_tuned_input{name}_{size}"] = lambda epochs=epochs: iterate(epochs.for_epoch(0))
                rows[f"fine_tuned_input{name}_{size}"] = args.photos
            started = time.perf_counter()
            cached = cache_features(
                split, manifest, names, preprocessor, cache_dir=Path(folder) / "cache", batch_size=BATCH_SIZE
            )
            cache_rate[size] = round(args.photos / (time.perf_counter() - started), 2)
            log(f"{size}: features computed at {cache_rate[size]} photos/s")
        # The cached tokens do not depend on the photos' size: the last size's cache feeds the frozen mode.
        repeats = -(-args.step_rows // cached.num_examples)
        cached_batches = cached.dataset(batch_size=BATCH_SIZE, order_seed=0)
        passes["frozen_cached_input"] = lambda: iterate(cached_batches)
        rows["frozen_cached_input"] = cached.num_examples
        head_rows = repeats * cached.num_examples
        head_data = in_memory(cached.dataset(batch_size=BATCH_SIZE).unbatch().repeat(repeats).batch(BATCH_SIZE))
        passes["frozen_cached_step"] = make_trainer(split.head_model, head_data, head_rows, args, policy, "both")
        rows["frozen_cached_step"] = head_rows
        rates = photos_per_second(passes, rows, args.epochs)
    return report(args, policy, rates, cache_rate, preprocessor.image_size, cached.bytes / cached.num_examples)


def report(args, policy: str, rates: dict, cache_rate: dict, image_size, cache_bytes_per_row: float) -> dict:
    def bound(input_rate, step_rate):
        return {
            "input_photos_per_second": input_rate,
            "step_photos_per_second": step_rate,
            "bound": "input" if input_rate < step_rate else "compute",
            "step_over_input": round(step_rate / input_rate, 2),
        }

    sizes = [f"{width}x{height}" for width, height in args.photo_sizes]
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return {
        "machine": f"{cpu_name()}, {os.cpu_count()} CPUs",
        "device": devices[0].device_type,
        "dtype_policy": policy,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
        "vision_backbone": args.vision_backbone,
        "image_size": list(image_size),
        "batch_size": BATCH_SIZE,
        "photos": args.photos,
        "fine_tuned": {
            size: {
                **bound(rates[f"fine_tuned_input_{size}"], rates["fine_tuned_step"]),
                "before_full_decode": bound(rates[f"fine_tuned_input_full_decode_{size}"], rates["fine_tuned_step"]),
            }
            for size in sizes
        },
        "frozen_cached": {
            **bound(rates["frozen_cached_input"], rates["frozen_cached_step"]),
            "cache_bytes_per_photo": round(cache_bytes_per_row),
            "first_run_cache_photos_per_second": cache_rate,
        },
    }


def photo_size(text: str) -> tuple[int, int]:
    width, height = (int(side) for side in text.split("x"))
    return width, height


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vision-backbone", default="tiny", help="tiny, or a checkpoint folder")
    parser.add_argument("--image-size", type=int, default=None, help="default: the backbone's own")
    parser.add_argument(
        "--photo-sizes",
        type=photo_size,
        nargs="+",
        default=[(4000, 3000), (400, 300)],
        help="WIDTHxHEIGHT of the JPEGs, one input figure each",
    )
    parser.add_argument("--photos", type=int, default=64, help="photos per size (input passes, feature cache)")
    parser.add_argument("--step-rows", type=int, default=64, help="in-memory rows per training-step pass")
    parser.add_argument("--epochs", type=int, default=2, help="timed passes per mode (after one warm-up)")
    args = parser.parse_args()
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    print(json.dumps(measure(args)))


if __name__ == "__main__":
    main()
