"""Feature cache at scale: peak RSS and time per row from 10k to 100k rows, sharded cache against in-memory.

Prints one JSON object on stdout (progress on stderr). Measures, asserts nothing.

Isolates the cache from any backbone: each row is random float16 tokens shaped like the tiny default model's
(`text_tokens` [32, 64], `image_tokens` [16, 64]; 6 KB a row) plus its masks and label. Each size runs in a
fresh child process (peak RSS is per process), in turn:

- `sharded` (this version): write the rows batch by batch through `ShardWriter` (as `cache_features` does), then
  read one shuffled epoch through `CachedFeatures.dataset` (batch 32, as training does).
- `in_memory` (the previous version's way): the same rows held as whole arrays, saved with `np.savez`, loaded
  back and read one shuffled epoch through `tf.data.Dataset.from_tensor_slices`.

Each size and mode runs `--repeats` times (sizes and modes take turns, so a change in the machine's load hits
all of them); the median of each time and the highest RSS are kept. Per size and mode: `peak_rss_mb` (the
child's ru_maxrss), `rss_over_baseline_mb` (minus the RSS of the same child after importing TensorFlow, before
any row), `write_us_per_row` (wall time from the rows in memory to the cache on disk), `read_us_per_row` (wall
time of one shuffled epoch after its first batch, which includes starting the pipeline), the same two as CPU
time (`write_cpu_us_per_row`, `read_cpu_us_per_row`: the process's user + system time over all its threads,
tf.data's included; it spawns no process), and `reads_alone_us_per_row` / `reads_alone_cpu_us_per_row`: the
same shuffled epoch read by the cache alone, without tf.data (`ShardReader.read` of each batch's rows; in
memory, the arrays indexed by them), `cache_mb` on disk. Then `flatness`: for each mode, the largest size's
figure over the smallest's (1.00 = flat; the issue's target is within 15%). The CPU figures are the robust ones
on a shared machine: other jobs stretch the wall time more than the CPU time the work itself takes. tf.data's
own threads (autotuning, prefetching, waiting by spinning) still move the pipeline's CPU time by tens of
percent from run to run, in both directions; the reads alone are the cache's own cost. `runs` keeps every
run's figures.

With `--accuracy`, instead: the effect of float16 features on a real training run. The tiny default model,
both backbones frozen, `--cache-features`, trained on samples/train.csv (600 rows, 5 epochs, seed 0) with
`cache_dtype` float16 and float32; for each, `val_accuracy`/`val_loss` (on cached features) and the test
figures of `evaluate` on samples/test.csv (the saved full model: float32 backbones), and the largest difference
between the two runs' trained weights.

    python benchmarks/feature_cache.py [--sizes 10000 30000 100000] [--modes sharded in_memory] [--repeats 3]
    python benchmarks/feature_cache.py --accuracy
"""

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH_SIZE = 32
TOKEN_SHAPES = {"text_tokens": (32, 64), "image_tokens": (16, 64)}
SEQUENCE_LENGTH = 32


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def random_batches(rows: int):
    """`rows` rows in batches of 256, cycling through 4 random batches (random numbers cost more than writing)."""
    import numpy as np

    rng = np.random.default_rng(0)
    pool = []
    for _ in range(4):
        batch = {name: rng.standard_normal((256, *shape), np.float32).astype(np.float16)
                 for name, shape in TOKEN_SHAPES.items()}
        batch["padding_mask"] = np.ones((256, SEQUENCE_LENGTH), np.int32)
        batch["modality_mask"] = np.ones((256, 2), np.float32)
        batch["label"] = rng.integers(0, 4, 256).astype(np.int32)
        pool.append(batch)
    for number, start in enumerate(range(0, rows, 256)):
        count = min(256, rows - start)
        yield {name: array[:count] for name, array in pool[number % 4].items()}


def measure(mode: str, rows: int, folder: Path) -> dict:
    """One size and mode, in this (fresh) process."""
    import numpy as np
    import tensorflow as tf

    from mmkeras.data.feature_shards import ShardReader, ShardWriter, folder_bytes
    from mmkeras.training.feature_cache import CachedFeatures

    tf.constant(0.0) + 1  # TensorFlow's runtime started: part of the baseline
    baseline = peak_rss_mb()
    started, started_cpu = time.perf_counter(), time.process_time()
    if mode == "sharded":
        writer = ShardWriter(folder)
        for batch in random_batches(rows):
            writer.append(batch)
        writer.close({"features": list(TOKEN_SHAPES), "head_inputs": ["padding_mask", "modality_mask"]})
        written, written_cpu = time.perf_counter(), time.process_time()
        dataset = CachedFeatures(folder).dataset(batch_size=BATCH_SIZE, order_seed=1)
        read_rows = ShardReader(folder).read
    else:
        parts = list(random_batches(rows))
        arrays = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
        del parts
        folder.mkdir(parents=True)
        np.savez(folder / "cache.npz", **arrays)
        del arrays
        written, written_cpu = time.perf_counter(), time.process_time()
        with np.load(folder / "cache.npz") as stored:
            arrays = {key: stored[key] for key in stored.files}
        labels = arrays.pop("label")
        dataset = tf.data.Dataset.from_tensor_slices((tuple(arrays.values()), labels))
        dataset = dataset.shuffle(rows, seed=1).batch(BATCH_SIZE).prefetch(tf.data.AUTOTUNE)
        arrays["label"] = labels

        def read_rows(indices):
            return {name: array[indices] for name, array in arrays.items()}
    batches = iter(dataset)
    seen = len(next(batches)[1])  # the first batch includes starting the pipeline: not timed
    first_read, first_read_cpu = time.perf_counter(), time.process_time()
    for _, labels in batches:
        seen += len(labels)
    read, read_cpu = time.perf_counter(), time.process_time()
    assert seen == rows
    order = np.random.default_rng(1).permutation(rows)
    alone, alone_cpu = time.perf_counter(), time.process_time()
    for start in range(0, rows, BATCH_SIZE):
        read_rows(order[start : start + BATCH_SIZE])
    alone_read, alone_read_cpu = time.perf_counter(), time.process_time()
    peak = peak_rss_mb()
    return {
        "peak_rss_mb": round(peak, 1),
        "rss_over_baseline_mb": round(peak - baseline, 1),
        "write_us_per_row": round(1e6 * (written - started) / rows, 2),
        "read_us_per_row": round(1e6 * (read - first_read) / (rows - BATCH_SIZE), 2),
        "write_cpu_us_per_row": round(1e6 * (written_cpu - started_cpu) / rows, 2),
        "read_cpu_us_per_row": round(1e6 * (read_cpu - first_read_cpu) / (rows - BATCH_SIZE), 2),
        "reads_alone_us_per_row": round(1e6 * (alone_read - alone) / rows, 2),
        "reads_alone_cpu_us_per_row": round(1e6 * (alone_read_cpu - alone_cpu) / rows, 2),
        "cache_mb": round(folder_bytes(folder) / 1e6, 1),
    }


def run_child(mode: str, rows: int) -> dict:
    with tempfile.TemporaryDirectory() as workdir:
        command = [sys.executable, __file__, "--child", mode, str(rows), str(Path(workdir) / "cache")]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        shutil.rmtree(workdir, ignore_errors=True)
    return json.loads(output.strip().splitlines()[-1])


def summarized(runs: list[dict]) -> dict:
    """Of repeated runs: the median of each time (and size) and the highest RSS."""
    return {figure: (max if "rss" in figure else statistics.median)([run[figure] for run in runs])
            for figure in runs[0]}


def float16_effect_on_accuracy() -> dict:
    import numpy as np

    from mmkeras.config import RunConfig
    from mmkeras.evaluation.evaluate import evaluate
    from mmkeras.training.trainer import train

    samples = Path(__file__).resolve().parent.parent / "samples"
    results, weights = {}, {}
    with tempfile.TemporaryDirectory() as workdir:
        for dtype in ("float32", "float16"):
            print(f"training on {dtype} features", file=sys.stderr)
            config = RunConfig(
                data=str(samples / "train.csv"), val=str(samples / "val.csv"), out=str(Path(workdir) / dtype),
                epochs=5, seed=0, freeze="both", cache_features=True, cache_dir=str(Path(workdir) / "cache"),
                cache_dtype=dtype,
            )
            result = train(config)
            test = evaluate(config.out, samples / "test.csv", save_results=False)
            weights[dtype] = result.model.get_weights()
            results[dtype] = {
                "val_accuracy": result.metrics["val_accuracy"], "val_loss": round(result.metrics["val_loss"], 5),
                "test_accuracy": test["accuracy"], "test_macro_f1": round(test["macro_f1"], 5),
            }
    results["max_weight_difference"] = float(
        max(np.abs(a - b).max() for a, b in zip(weights["float16"], weights["float32"], strict=True))
    )
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 30000, 100000])
    parser.add_argument("--modes", nargs="+", default=["sharded", "in_memory"])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each size and mode (median time kept)")
    parser.add_argument("--accuracy", action="store_true", help="float16 against float32 features in training")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.accuracy:
        print(json.dumps({"float16_effect": float16_effect_on_accuracy()}, indent=1))
        return
    if args.child:
        mode, rows, folder = args.child
        print(json.dumps(measure(mode, int(rows), Path(folder))))
        return
    runs = {mode: {rows: [] for rows in args.sizes} for mode in args.modes}
    for repeat in range(args.repeats):
        for rows in args.sizes:
            for mode in args.modes:  # sizes and modes take turns: a change in the machine's load hits all
                print(f"{mode}: {rows} rows (run {repeat + 1})", file=sys.stderr)
                runs[mode][rows].append(run_child(mode, rows))
    results = {
        mode: {str(rows): summarized(repeats) for rows, repeats in by_size.items()}
        for mode, by_size in runs.items()
    }
    smallest, largest = str(min(args.sizes)), str(max(args.sizes))
    flatness = {
        mode: {
            figure: round(by_size[largest][figure] / by_size[smallest][figure], 3)
            for figure in ("peak_rss_mb", "write_us_per_row", "read_us_per_row", "write_cpu_us_per_row",
                           "read_cpu_us_per_row", "reads_alone_us_per_row", "reads_alone_cpu_us_per_row")
        }
        for mode, by_size in results.items()
    }
    print(json.dumps({"machine": "AMD EPYC, 2 cores shared with other work", "batch_size": BATCH_SIZE,
                      "repeats": args.repeats, "sizes_in_turn": args.sizes,
                      "row_bytes": 6144 + 4 * SEQUENCE_LENGTH + 12, "results": results,
                      f"flatness_{largest}_over_{smallest}": flatness, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
