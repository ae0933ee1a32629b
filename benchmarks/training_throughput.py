"""Training throughput: mmkeras' TrainingLoop against stock `model.fit`, same model, same run.

Prints one JSON object on stdout (progress on stderr). Measures, asserts nothing.

- `matmul_peak_gflops`: this machine's 2048x2048 float32 matmul through TensorFlow (the peak to compare with).
- For the reference tiny configuration (tiny BERT + tiny ViT + cross-attention, batch 32, in-memory synthetic
  rows): samples/s (median over the timed epochs, after a warm-up epoch that includes tracing and XLA
  compilation) and its share of the matmul peak (training FLOPs per sample = 3 x the forward pass's FLOPs,
  counted by TensorFlow's profiler), for: `loop` (TrainingLoop, XLA), `loop_no_xla`, `fit` (stock
  `model.fit`, `jit_compile=False`: the stock baseline) and `fit_xla` (`jit_compile=True`).
- `loop_vs_fit`: the ratio the issue targets (>= 2), `loop_vs_fit_xla` for honesty, and `loop_no_xla_vs_fit`
  (on a CPU where XLA is slower, the loop without it).

LoRA against full fine-tuning is measured by `lora_finetuning.py`.

    python benchmarks/training_throughput.py [--epochs 5] [--rows 512]
"""

import argparse
import json
import logging
import statistics
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from mmkeras.config import RunConfig
from mmkeras.models.builder import build_model
from mmkeras.training.optimizers import make_optimizer
from mmkeras.training.training_loop import TrainingLoop

BATCH_SIZE = 32
NUM_CLASSES = 4


def log(message: str):
    print(message, file=sys.stderr, flush=True)


def matmul_peak_gflops(size: int = 2048, repeats: int = 20) -> float:
    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    matmul().numpy()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        matmul().numpy()
        timings.append(time.perf_counter() - started)
    return 2 * size**3 / statistics.median(timings) / 1e9


def synthetic_rows(preprocessor, rows: int):
    rng = np.random.default_rng(0)
    words = ["red", "blue", "circle", "square", "morning", "evening", "photo", "of", "a"]
    texts = [" ".join(rng.choice(words, 6)) for _ in range(rows)]
    inputs = dict(preprocessor(texts, [None] * rows))
    height, width = preprocessor.image_size
    inputs["image"] = rng.integers(0, 256, (rows, height, width, 3)).astype("float32")
    inputs["modality_mask"] = np.ones((rows, 2), "float32")
    return inputs, (np.arange(rows) % NUM_CLASSES).astype("int32")


def fresh_model():
    keras.utils.set_random_seed(0)
    return build_model(num_classes=NUM_CLASSES, texts=["red blue circle square morning evening photo of a"], seed=0)


def forward_flops_per_sample(model, inputs) -> float:
    """FLOPs of one sample's forward pass, counted by the TF profiler on the traced graph."""
    sample = {name: tf.constant(value[:1]) for name, value in inputs.items()}
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(sample)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(graph=concrete.graph, options=options)
    return float(profile.total_float_ops)


def time_loop(inputs, labels, epochs: int, jit_compile: bool) -> list[float]:
    model, _ = fresh_model()
    rows = len(labels)
    optimizer = make_optimizer(RunConfig(), total_steps=(epochs + 1) * -(-rows // BATCH_SIZE), pretrained=False)
    loop = TrainingLoop(model, optimizer, jit_compile=jit_compile)
    dataset = tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(BATCH_SIZE).cache().prefetch(2)
    seconds = []
    for _ in range(epochs + 1):  # the first epoch is the warm-up (tracing, XLA)
        started = time.perf_counter()
        loop.train_epoch(dataset, num_examples=rows, batch_size=BATCH_SIZE)
        seconds.append(time.perf_counter() - started)
    return seconds[1:]


class EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.started)


def time_fit(inputs, labels, epochs: int, jit_compile: bool) -> list[float]:
    model, _ = fresh_model()
    rows = len(labels)
    optimizer = make_optimizer(RunConfig(), total_steps=(epochs + 1) * -(-rows // BATCH_SIZE), pretrained=False)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    dataset = tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(BATCH_SIZE).cache().prefetch(2)
    timer = EpochTimer()
    model.fit(dataset, epochs=epochs + 1, callbacks=[timer], verbose=0)
    return timer.seconds[1:]


def throughput(args) -> dict:
    peak = matmul_peak_gflops()
    log(f"matmul peak {peak:.1f} GFLOP/s")
    model, preprocessor = fresh_model()
    inputs, labels = synthetic_rows(preprocessor, args.rows)
    train_flops = 3 * forward_flops_per_sample(model, inputs)
    modes = {
        "loop": lambda: time_loop(inputs, labels, args.epochs, jit_compile=True),
        "loop_no_xla": lambda: time_loop(inputs, labels, args.epochs, jit_compile=False),
        "fit": lambda: time_fit(inputs, labels, args.epochs, jit_compile=False),
        "fit_xla": lambda: time_fit(inputs, labels, args.epochs, jit_compile=True),
    }
    results = {}
    for name, measure in modes.items():
        seconds = measure()
        samples_per_second = args.rows / statistics.median(seconds)
        results[name] = {
            "samples_per_second": round(samples_per_second, 1),
            "share_of_matmul_peak": round(samples_per_second * train_flops / 1e9 / peak, 3),
            "epoch_seconds": [round(value, 3) for value in seconds],
        }
        log(f"{name}: {samples_per_second:.0f} samples/s")
    return {
        "matmul_peak_gflops": round(peak, 1),
        "train_gflops_per_sample": round(train_flops / 1e9, 5),
        "configuration": {
            "backbones": "tiny/tiny",
            "fusion": "cross-attention",
            "batch_size": BATCH_SIZE,
            "rows_per_epoch": args.rows,
            "timed_epochs": args.epochs,
        },
        "modes": results,
        "loop_vs_fit": round(results["loop"]["samples_per_second"] / results["fit"]["samples_per_second"], 2),
        "loop_vs_fit_xla": round(results["loop"]["samples_per_second"] / results["fit_xla"]["samples_per_second"], 2),
        "loop_no_xla_vs_fit": round(
            results["loop_no_xla"]["samples_per_second"] / results["fit"]["samples_per_second"], 2
        ),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per mode (after one warm-up epoch)")
    parser.add_argument("--rows", type=int, default=512, help="synthetic rows per epoch")
    args = parser.parse_args()
    logging.getLogger("mmkeras").addHandler(logging.StreamHandler(sys.stderr))
    logging.getLogger("mmkeras").setLevel(logging.INFO)
    report = {"versions": {"tensorflow": tf.__version__, "keras": keras.__version__}}
    report.update(throughput(args))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
