"""Where the peak memory of fine-tuning a vision backbone goes: RSS by phase, per batch size, each in its own process.

Prints one JSON object on stdout (progress on stderr). Measures, asserts nothing.

For each `--batch-sizes` value, a child process builds the `tiny` text + `--vision-backbone` model at
`--image-size` (float32, the default strategy, as `mmkeras train --freeze none` on a CPU), then trains one epoch
of `TrainingLoop` on a full batch and a last, smaller one of `--last-batch` rows (in memory: no input pipeline),
and reports its RSS after each phase (imports, model, optimizer, the full batch's update, the last batch's) and
its peak (`VmHWM`), with how many times the training step was traced. `--trace-per-batch-size` traces the step on
each batch size's first call, as `TrainingLoop` did before `trace_for_any_batch_size`. The RSS after the full
batch grows with the batch size by what the backward pass keeps per image; `layer_outputs_mb_per_image` adds up
the vision backbone's layer outputs (float32) by layer type, an upper bound of what it can keep.

`--remat segments` trains with `TrainingLoop(remat="vision_backbone")` (the backbone recomputed segment by
segment on the backward pass); `--remat full|larger_than|activations` builds the vision backbone inside
`keras.RematScope(mode=...)` instead (Keras' own rematerialization, layer by layer). `--full-batches N` runs N full
batches before the last one; `step_s` is the median time of the full batches' updates after the first (which
traces), `step_cpu_s` their median CPU time (user + system, all threads: steadier on a shared machine).
`--compare-remat` runs each batch size without and with `--remat` (interleaved, a process each).

    python benchmarks/finetune_peak_memory.py --vision-backbone /tmp/effnet-lite0 --image-size 224 \
        --batch-sizes 8 16 32        # ~3 min on 2 cores; docs/design.md#fine-tuning-peak-memory
    python benchmarks/finetune_peak_memory.py --vision-backbone /tmp/effnet-lite0 --image-size 224 \
        --batch-sizes 8 16 32 --full-batches 5 --remat segments --compare-remat  # docs/design.md#gradient-checkpointing
"""

import argparse
import collections
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

NUM_CLASSES = 3


def log(message: str):
    print(message, file=sys.stderr, flush=True)


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident memory (`VmRSS`) or its peak so far (`VmHWM`), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1000
    raise RuntimeError(f"no {field} in /proc/self/status")


KERAS_REMAT_MODES = ("full", "larger_than", "activations")


def fresh_model(args):
    import keras

    import mmkeras.models.builder as builder

    keras.utils.set_random_seed(0)
    if args.remat in KERAS_REMAT_MODES:
        load_vision_backbone = builder.load_vision_backbone

        def load_in_remat_scope(*load_args):
            # Keras reads the scope when each layer is created: the vision backbone's layers only.
            with keras.RematScope(mode=args.remat):
                return load_vision_backbone(*load_args)

        builder.load_vision_backbone = load_in_remat_scope
    return builder.build_model(
        "tiny", args.vision_backbone, num_classes=NUM_CLASSES, texts=["a photo"], seed=0, image_size=args.image_size
    )


def synthetic_batches(preprocessor, batch_size: int, last_batch: int, full_batches: int = 1):
    """`full_batches` full batches and a last one of `last_batch` rows of random images and texts, as
    `(dataset, rows)`."""
    import numpy as np
    import tensorflow as tf

    rows = batch_size * full_batches + last_batch
    rng = np.random.default_rng(0)
    inputs = dict(preprocessor(["a photo of a cat"] * rows, [None] * rows))
    inputs["image"] = rng.integers(0, 256, (rows, *preprocessor.image_size, 3)).astype("float32")
    inputs["modality_mask"] = np.ones((rows, 2), "float32")
    labels = (np.arange(rows) % NUM_CLASSES).astype("int32")
    return tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(batch_size), rows


def measure_batch(args) -> dict:
    """One batch size, in this process: RSS after each phase, the peak, and the training step's traces."""
    phases = {"python": rss_mb()}
    import mmkeras.training.training_loop as training_loop
    from mmkeras.config import RunConfig
    from mmkeras.training.optimizers import make_optimizer

    phases["imports"] = rss_mb()
    model, preprocessor = fresh_model(args)
    phases["model"] = rss_mb()
    if args.trace_per_batch_size:
        training_loop.trace_for_any_batch_size = lambda *unused: None
    remat = "vision_backbone" if args.remat == "segments" else None
    updates = args.full_batches + 1
    loop = training_loop.TrainingLoop(model, make_optimizer(RunConfig(), model, total_steps=updates), remat=remat)
    phases["optimizer"] = rss_mb()
    dataset, rows = synthetic_batches(preprocessor, args.child, args.last_batch, args.full_batches)
    update_ends = [(time.perf_counter(), time.process_time())]
    losses = []

    def after_update(batches_done, totals):
        losses.append(float(totals.numpy()[0]))  # the step has run
        update_ends.append((time.perf_counter(), time.process_time()))
        if batches_done == 1:
            phases["full_batch"] = rss_mb()
        elif batches_done == updates:
            phases["last_batch"] = rss_mb()

    loop.train_epoch(dataset, num_examples=rows, batch_size=args.child, after_update=after_update)
    durations = [end[0] - start[0] for start, end in zip(update_ends, update_ends[1:])]
    cpu_durations = [end[1] - start[1] for start, end in zip(update_ends, update_ends[1:])]
    steady, steady_cpu = durations[1 : args.full_batches], cpu_durations[1 : args.full_batches]
    return {
        "batch_size": args.child,
        "last_batch": args.last_batch,
        "remat": args.remat,
        "rss_mb_after": {name: round(value) for name, value in phases.items()},
        "peak_rss_mb": round(rss_mb("VmHWM")),
        "training_step_traces": loop._update_step.experimental_get_tracing_count(),
        "first_step_s": round(durations[0], 2),
        "step_s": round(statistics.median(steady), 2) if steady else None,
        "step_cpu_s": round(statistics.median(steady_cpu), 2) if steady_cpu else None,
        "first_batch_loss": losses[0] / args.child,
    }


def layer_outputs(args) -> dict:
    """The vision backbone's layer outputs for one image, float32 MB, by layer type."""
    import keras
    import numpy as np

    model, preprocessor = fresh_model(args)
    vision = model.get_layer("vision_backbone")
    layers = vision.layers[1:]
    outputs = keras.Model(vision.inputs, [layer.output for layer in layers])(
        np.zeros((1, *preprocessor.image_size, 3), "float32")
    )
    by_type: dict[str, float] = collections.defaultdict(float)
    for layer, output in zip(layers, outputs):
        by_type[type(layer).__name__] += int(np.prod(output.shape)) * 4 / 1e6
    largest_first = sorted(by_type.items(), key=lambda item: -item[1])
    return {"total": round(sum(by_type.values()), 1), **{name: round(mb, 1) for name, mb in largest_first}}


def run_child(args, *extra, remat=None) -> dict:
    command = [sys.executable, __file__, "--vision-backbone", args.vision_backbone, "--last-batch",
               str(args.last_batch), "--full-batches", str(args.full_batches), *extra]
    if args.image_size:
        command += ["--image-size", str(args.image_size)]
    if args.trace_per_batch_size:
        command.append("--trace-per-batch-size")
    if remat:
        command += ["--remat", remat]
    child = subprocess.run(command, capture_output=True, text=True)
    if child.returncode:  # e.g. a RematScope mode that fails to trace: its error's last line is the figure
        error = [line.strip() for line in child.stderr.splitlines() if "Error" in line or "error" in line]
        return {"batch_size": int(extra[-1]), "remat": remat, "error": error[-1] if error else child.stderr[-300:]}
    return json.loads(child.stdout)


def main():
    parser = argparse.ArgumentParser(description="Where the peak memory of fine-tuning a vision backbone goes.")
    parser.add_argument("--vision-backbone", default="tiny")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--last-batch", type=int, default=4, help="rows of the epoch's last, smaller batch")
    parser.add_argument("--trace-per-batch-size", action="store_true", help="trace as TrainingLoop did before")
    parser.add_argument("--remat", choices=("segments", *KERAS_REMAT_MODES), default=None,
                        help="recompute the vision backbone on the backward pass: mmkeras' segments or a RematScope "
                        "mode")
    parser.add_argument("--compare-remat", action="store_true", help="each batch size without, then with --remat")
    parser.add_argument("--full-batches", type=int, default=1, help="full batches before the last one")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--layer-outputs", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.layer_outputs:
        print(json.dumps(layer_outputs(args)))
        return
    if args.child:
        print(json.dumps(measure_batch(args)))
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from data_service_throughput import cpu_name

    batches = []
    for batch_size in args.batch_sizes:
        for remat in ([None, args.remat] if args.compare_remat else [args.remat]):
            log(f"batch {batch_size}, remat {remat}")
            batches.append(run_child(args, "--child", str(batch_size), remat=remat))
    measured = [batch for batch in batches if batch["remat"] == batches[0]["remat"] and "error" not in batch]
    per_image = None
    if measured:
        first, last = measured[0], measured[-1]
        per_image = round((last["rss_mb_after"]["full_batch"] - first["rss_mb_after"]["full_batch"]) / max(
            last["batch_size"] - first["batch_size"], 1
        ), 1)
    print(json.dumps({
        "cpu": cpu_name(),
        "vision_backbone": args.vision_backbone,
        "image_size": args.image_size,
        "trace_per_batch_size": args.trace_per_batch_size,
        "full_batches": args.full_batches,
        "batches": batches,
        "full_batch_rss_mb_per_image": per_image,
        "layer_outputs_mb_per_image": run_child(args, "--layer-outputs"),
    }, indent=2))


if __name__ == "__main__":
    main()
