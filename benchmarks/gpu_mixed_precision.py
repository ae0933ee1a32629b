"""The mmkeras model under mixed precision on a GPU, through Keras' JAX backend.

Why JAX and not mmkeras' TensorFlow trainer: the GPU machine this project is
lent has no TensorFlow (its image holds PyTorch and JAX, it cannot reach a
package index, and at most 64 MiB travels with a run, far less than
TensorFlow and its CUDA libraries). What can be checked there is the model
itself: the same `build_model` graph (keras-hub backbones, the fusion layer,
the float32 logits) built under `float32`, `mixed_bfloat16` and
`mixed_float16` (Keras' own loss scaling), trained with `fit` on a fixed set
of random examples. For each policy it reports whether the logits stay
float32 and the loss stays finite and falls, how far the initial logits are
from float32's (same seed, same weights), and training samples/s after the
first epoch; ratios against float32 are taken in the same run.

    KERAS_BACKEND=jax python benchmarks/gpu_mixed_precision.py --fusion-dim 256 --batch-size 256
"""

import argparse
import json
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from mmkeras.models.builder import build_model  # noqa: E402

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
NUM_CLASSES = 10


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.started)


def random_texts(rows: int, rng) -> list[str]:
    words = ["red", "blue", "circle", "square", "morning", "evening", "a", "the", "photo", "of"]
    return [" ".join(rng.choice(words, size=rng.integers(3, 12))) for _ in range(rows)]


def random_examples(preprocessor, texts, rng):
    """The texts' token ids, random pixels, every modality present, random labels."""
    rows = len(texts)
    inputs = preprocessor(texts, [None] * rows)
    inputs["image"] = rng.uniform(0, 255, inputs["image"].shape).astype("float32")
    inputs["modality_mask"][:] = 1.0
    return inputs, rng.integers(0, NUM_CLASSES, rows).astype("int32")


def measure(policy: str, args, texts, inputs, labels, reference_logits):
    keras.config.set_dtype_policy(policy)
    model, _ = build_model(
        num_classes=NUM_CLASSES, fusion_dim=args.fusion_dim, num_heads=args.num_heads,
        sequence_length=args.sequence_length, texts=texts, seed=0,
    )
    probe = {name: value[: args.batch_size] for name, value in inputs.items()}
    logits = keras.ops.convert_to_numpy(model(probe))
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    timer = EpochTimer()
    history = model.fit(inputs, labels, batch_size=args.batch_size, epochs=args.epochs, verbose=0, callbacks=[timer])
    losses = [float(loss) for loss in history.history["loss"]]
    steady = float(np.median(timer.seconds[1:]))
    reference = logits if reference_logits is None else reference_logits
    return logits, {
        "compute_dtype": model.get_layer("fusion").compute_dtype,
        "logits_dtype": str(logits.dtype),
        "optimizer": type(model.optimizer).__name__,
        "losses": [round(loss, 4) for loss in losses],
        "loss_finite_and_falling": bool(np.all(np.isfinite(losses)) and losses[-1] < losses[0]),
        "max_initial_logit_diff_vs_float32": float(np.max(np.abs(logits.astype("float32") - reference))),
        "initial_label_agreement_vs_float32": float(np.mean(logits.argmax(-1) == reference.argmax(-1))),
        "samples_per_second": round(len(labels) / steady, 1),
        "first_epoch_seconds": round(timer.seconds[0], 2),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--fusion-dim", type=int, default=64)
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--sequence-length", type=int, default=32)
    args = parser.parse_args(argv)
    import jax

    result = {"backend": keras.backend.backend(), "devices": [str(device) for device in jax.devices()], **vars(args)}
    rng = np.random.default_rng(0)
    texts = random_texts(args.rows, rng)
    keras.config.set_dtype_policy("float32")
    _, preprocessor = build_model(num_classes=NUM_CLASSES, sequence_length=args.sequence_length, texts=texts, seed=0)
    inputs, labels = random_examples(preprocessor, texts, rng)
    reference = None
    for policy in POLICIES:
        logits, result[policy] = measure(policy, args, texts, inputs, labels, reference)
        reference = logits if reference is None else reference
    for policy in POLICIES[1:]:
        result[policy]["speedup_vs_float32"] = round(
            result[policy]["samples_per_second"] / result["float32"]["samples_per_second"], 2
        )
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
