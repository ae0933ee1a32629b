"""Benchmark: dual-encoder bundles of an align run in every export mode, and exact search over 100k images.

The checks (issue #13): the int8 encoders' embeddings have a cosine of at
least 0.99 on average to the float ones, and recall@1 within 1 point of the
float bundle's; searching 100k images takes at most 50 ms on one core.

It exports the run as a float, an int8, an integer-only int8 and an int16x8
dual-encoder bundle (`MODES`), embeds the
validation pairs (`--pairs`) with each through the TF-free runtime, compares
them, then times `ImageIndex.search` over 100k random unit embeddings of the
run's width (stored float16, as `mmkeras index` writes them) with NumPy on one
thread. Prints one JSON object; nothing is asserted.

Usage:
    python benchmarks/dual_encoder_search.py --run runs/align --pairs samples/matching/val_pairs.csv
"""

import os

# One core for the search timing: NumPy's BLAS reads these when it is first imported.
for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[variable] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from mmkeras.data.manifest import read_manifest  # noqa: E402
from mmkeras.evaluation.retrieval_metrics import retrieval_recall  # noqa: E402
from mmkeras.runtime.embedder import Embedder  # noqa: E402
from mmkeras.runtime.image_index import ImageIndex  # noqa: E402

INDEX_SIZE = 100_000
QUERIES = 200
# Bundle name -> (export --quantize, --integer-only).
MODES = {"none": ("none", False), "int8": ("int8", False), "int8_integer_only": ("int8", True),
         "int16x8": ("int16x8", False)}


def embed_pairs(bundle_dir: Path, pairs) -> tuple[np.ndarray, np.ndarray]:
    embedder = Embedder(bundle_dir, num_threads=1)
    texts, images = [row.text for row in pairs.rows], [row.image for row in pairs.rows]
    return embedder.embed_text(texts), embedder.embed_image(images)


def search_latency_ms(dim: int, seed: int = 0) -> dict:
    """p50 / p99 milliseconds of one exact top-10 search over INDEX_SIZE float16 embeddings, one thread."""
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(INDEX_SIZE, dim)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "index.npz"
        ImageIndex(embeddings, [f"{number}.png" for number in range(INDEX_SIZE)], folder).save(path)
        index = ImageIndex.load(path)
    queries = embeddings[rng.choice(INDEX_SIZE, QUERIES, replace=False)]
    times = []
    for query in queries:
        started = time.perf_counter()
        index.search(query, top_k=10)
        times.append((time.perf_counter() - started) * 1000)
    return {"p50": round(float(np.percentile(times, 50)), 3), "p99": round(float(np.percentile(times, 99)), 3)}


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="an align run")
    parser.add_argument("--pairs", type=Path, required=True, help="labelled validation pairs")
    args = parser.parse_args(argv)
    from mmkeras.export.converter import export_bundle

    pairs = read_manifest(args.pairs)
    groups = np.asarray(pairs.encode_labels(pairs.labels()))
    figures = {}
    with tempfile.TemporaryDirectory() as folder:
        embedded = {}
        for mode, (quantize, integer_only) in MODES.items():
            bundle = Path(folder) / mode
            report = export_bundle(args.run, bundle, quantize=quantize, integer_only=integer_only)
            embedded[mode] = embed_pairs(bundle, pairs)
            figures[mode] = {
                "encoder_bytes": {name: facts["size_bytes"] for name, facts in report["encoders"].items()},
                "recall": retrieval_recall(*embedded[mode], groups),
            }
    for mode in list(MODES)[1:]:
        for position, name in enumerate(("text", "image")):
            cosine = np.sum(embedded[mode][position] * embedded["none"][position], axis=1)
            figures[mode][f"{name}_cosine_to_float"] = {"mean": round(float(cosine.mean()), 4),
                                                        "min": round(float(cosine.min()), 4)}
    dim = embedded["none"][0].shape[1]
    figures["search_100k_ms_one_thread"] = search_latency_ms(dim)
    print(json.dumps({"rows": len(pairs.rows), "embedding_dim": int(dim), **figures}, indent=2))


if __name__ == "__main__":
    main()
