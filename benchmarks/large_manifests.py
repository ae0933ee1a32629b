"""Large manifests: reading, checking and splitting 100k rows, time and peak RSS.

Prints one JSON object on stdout (progress on stderr). Measures, asserts nothing.

Writes `--rows` distinct small JPEG files (32x24, in folders of 1,000) and one manifest listing them, as CSV, as
JSONL and as Parquet (the same paths), and a Parquet manifest holding the images' bytes instead (each row's JPEG
distinct, as written to disk), then, in one fresh process, times each step and records the process's peak RSS
after it:

- `read_csv`, `read_jsonl`: `read_manifest` of each file;
- `check_images_first`: `validate_images((224, 224), "skip")` with an empty image check cache (every image decoded,
  on a thread pool);
- `check_images_again`: the same on the next run: the check cache (`ImageCheckCache`) answers for every
  unchanged file, none is opened;
- `split_5_folds`: `stratified_folds` of the labels (the split of `mmkeras cv`).

and in a second fresh process (its own peak RSS), the Parquet manifests:

- `read_parquet_paths`: `read_manifest` of the Parquet file of paths;
- `read_parquet_bytes_first`: `read_manifest` of the Parquet file of bytes, every image written to the
  content-addressed folder (`mmkeras.data.parquet_manifest`);
- `read_parquet_bytes_again`: the same on the next run: every image file is there already (hashed, not written).

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
# CSV, JSONL and Parquet of the image paths; Parquet of the images' bytes.
MANIFEST_NAMES = ("train.csv", "train.jsonl", "train.parquet", "train-bytes.parquet")


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def write_data(folder: Path, rows: int) -> list[Path]:
    """`rows` JPEG files (16 distinct images, encoded once), the CSV, JSONL and Parquet manifests listing them,
    and a Parquet manifest of the images' bytes (each row's distinct: its index in the JPEG comment)."""
    import io

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
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
    csv_path, jsonl_path, parquet_paths, parquet_bytes = (folder / name for name in MANIFEST_NAMES)
    csv_path.write_text("text,image,label\n" + "".join(f"{r['text']},{r['image']},{r['label']}\n" for r in records))
    jsonl_path.write_text("".join(json.dumps(record) + "\n" for record in records))
    columns = {key: [record[key] for record in records] for key in ("text", "image", "label")}
    pq.write_table(pa.table(columns), parquet_paths)
    # A JPEG comment segment (FF FE) right after the start marker makes each row's bytes distinct.
    images = [tile[:2] + b"\xff\xfe\x00\x0c" + index.to_bytes(10, "big") + tile[2:]
              for index, tile in enumerate(tiles[index % 16] for index in range(rows))]
    pq.write_table(pa.table({**columns, "image": pa.array(images, pa.binary())}), parquet_bytes)
    return [csv_path, jsonl_path, parquet_paths, parquet_bytes]


def measure_parquet(parquet_paths: Path, parquet_bytes: Path) -> dict:
    """The Parquet steps, in this fresh process."""
    from mmkeras.data.manifest import read_manifest

    figures = {"baseline_rss_mb": peak_rss_mb()}
    for name, path in (("read_parquet_paths", parquet_paths), ("read_parquet_bytes_first", parquet_bytes),
                       ("read_parquet_bytes_again", parquet_bytes)):
        started = time.perf_counter()
        read_manifest(path)
        figures[name] = {"seconds": round(time.perf_counter() - started, 2), "rss_mb": peak_rss_mb()}
    figures["parquet_bytes_file_mb"] = round(parquet_bytes.stat().st_size / 1e6, 1)
    return figures


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
    parser.add_argument("--parquet-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--write-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_child:
        write_data(Path(args.write_child), args.rows)
        return
    if args.child:
        print(json.dumps(measure(Path(args.child[0]), Path(args.child[1]))))
        return
    if args.parquet_child:
        print(json.dumps(measure_parquet(Path(args.parquet_child[0]), Path(args.parquet_child[1]))))
        return
    with tempfile.TemporaryDirectory() as workdir:
        print(f"writing {args.rows} images", file=sys.stderr)
        # Written by a process of its own: a child's peak RSS counts its parent's at the fork (Linux keeps
        # ru_maxrss across exec), so the parent stays small.
        subprocess.run([sys.executable, __file__, "--write-child", workdir, "--rows", str(args.rows)], check=True)
        csv_path, jsonl_path, parquet_paths, parquet_bytes = (Path(workdir) / name for name in MANIFEST_NAMES)
        # An empty image check cache and Parquet image folder of its own (they live beside the feature caches).
        environment = {**os.environ, "MMKERAS_CACHE_DIR": str(Path(workdir) / "cache" / "features")}
        figures = {}
        children = (("text_manifests", "--child", (csv_path, jsonl_path)),
                    ("parquet_manifests", "--parquet-child", (parquet_paths, parquet_bytes)))
        for name, flag, paths in children:
            command = [sys.executable, __file__, flag, *map(str, paths)]
            output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True, env=environment).stdout
            figures[name] = json.loads(output.strip().splitlines()[-1])
    print(json.dumps({"machine": "AMD EPYC, 2 cores shared with other work", "rows": args.rows, **figures}, indent=1))


if __name__ == "__main__":
    main()
