"""Parquet manifests for tests: any columns, or a samples manifest with its images' bytes inside."""

import csv
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def write_parquet(path: Path, columns: dict, **options) -> Path:
    pq.write_table(pa.table(columns), path, **options)
    return path


def samples_as_parquet(source: Path, out: Path, rows: int, *, hugging_face: bool) -> tuple[Path, Path]:
    """The first `rows` rows of a samples manifest as Parquet with the images' bytes inside, and as a CSV of
    the same rows with absolute paths (what the Parquet file must behave like)."""
    with source.open(newline="", encoding="utf-8") as handle:
        records = list(csv.DictReader(handle))[:rows]
    paths = [str(source.parent / record["image"]) if record["image"] else "" for record in records]
    images = [Path(path).read_bytes() if path else None for path in paths]
    column = (pa.array([None if data is None else {"bytes": data, "path": None} for data in images],
                       pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
              if hugging_face else pa.array(images, pa.binary()))
    texts, labels = [record["text"] for record in records], [record["label"] for record in records]
    write_parquet(out, {"text": texts, "image": column, "label": labels})
    with out.with_suffix(".csv").open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["text", "image", "label"], *zip(texts, paths, labels)])
    return out, out.with_suffix(".csv")
