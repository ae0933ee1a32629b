"""Large manifests: reading, checking and splitting 100k rows, time and peak RSS.

Prints one JSON object on stdout (progress on stderr). Measures, asserts nothing.

Writes `--rows` distinct small JPEG files (32x24, in folders of 1,000) and one manifest listing them, as CSV and
as JSONL, then, in one fresh process, times each step and records the process's peak RSS after it:

- `read_csv`, `read_jsonl`: `read_manifest` of each file;
- `check_images_first`: `validate_images((224, 224), "skip")` with an empty image check cache (every image decoded,
  on a thread pool);
- `check_images_again`: the same on the next run: the check cache (`ImageCheckCache`) answers for every
  unchanged file, none is opened;
- `split_5_folds`: `stratified_folds` of the labels (the split of `mmkeras cv`).

`rss_mb` is the process's peak RSS after the step; `baseline_rss_mb` after the imports. No decoded image is
kept: the peak stays that of the rows (paths, texts, labels).

    python benchmarks/large_manifests.py [--rows 100000]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMAGES_PER_FOLDER = 1000


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def write_data(folder: Path, rows: int) -> tuple[Path, Path]:
    """`rows` JPEG files (16 distinct images, encoded once) and the CSV and JSONL manifests listing them."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    tiles = []
    for _ in range(16):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(buffer, format="JPEG", quality=90)
        tiles.append(buffer.getvalue())
    records = []
    for index in range(rows):
        relative = f"{index // IMAGES_PER_FOLDER:03d}/{index}.jpg"
        (folder / relative).parent.mkdir(exist_ok=True)
        (folder / relative).write_bytes(tiles[index % 16])
        records.append({"text": f"a photo of thing number {index}", "image": relative, "label": f"c{index % 10}"})
    csv_path, jsonl_path = folder / "train.csv", folder / "train.jsonl"
    csv_path.write_text("text,image,label\n" + "".join(f"{r['text']},{r['image']},{r['label']}\n" for r in records))
    jsonl_path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return csv_path, jsonl_path


def measure(csv_path: Path, jsonl_path: Path) -> dict:
    """The steps, in this fresh process."""
    from mmkeras.data.manifest import read_manifest
    from mmkeras.training.cross_validation import stratified_folds

    figures = {"baseline_rss_mb": peak_rss_mb()}

    def step(name, work):
        started = time.perf_counter()
        result = work()
        figures[name] = {"seconds": round(time.perf_counter() - started, 2), "rss_mb": peak_rss_mb()}
        return result

    manifest = step("read_csv", lambda: read_manifest(csv_path))
    step("read_jsonl", lambda: read_manifest(jsonl_path))
    step("check_images_first", lambda: manifest.validate_images((224, 224), "skip"))
    checked, dropped = step("check_images_again", lambda: manifest.validate_images((224, 224), "skip"))
    step("split_5_folds", lambda: stratified_folds([row.label for row in checked.rows], 5, 0))
    figures["rows"], figures["dropped"] = len(checked.rows), dropped
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100000)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(Path(args.child[0]), Path(args.child[1]))))
        return
    with tempfile.TemporaryDirectory() as workdir:
        print(f"writing {args.rows} images", file=sys.stderr)
        csv_path, jsonl_path = write_data(Path(workdir), args.rows)
        # An empty image check cache of its own (it lives beside the feature caches).
        environment = {**os.environ, "MMKERAS_CACHE_DIR": str(Path(workdir) / "cache" / "features")}
        command = [sys.executable, __file__, "--child", str(csv_path), str(jsonl_path)]
        output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True, env=environment).stdout
    figures = json.loads(output.strip().splitlines()[-1])
    print(json.dumps({"machine": "AMD EPYC, 2 cores shared with other work", **figures}, indent=1))


if __name__ == "__main__":
    main()
