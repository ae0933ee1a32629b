"""`rows_fingerprint`: a SHA-256 of a manifest's rows, so a resumed job can tell that its data changed.

`mmkeras cv` keeps it in `folds.json`, and a training run (`train`, `align`,
`qat`) in each checkpoint (`rows_record`): a job resumed on an edited CSV or
a changed Parquet file would otherwise carry on with other rows, and its
"exact" resume would shuffle, train and validate on them. A Parquet file
rewritten with the same rows (other compression, images as binary cells or
Hugging Face structs) has the same fingerprint, so it still resumes
(docs/design.md#parquet-images-in-cache-list-and-cache-clear).

TensorFlow-free.

Example:
>>> record = rows_record(read_manifest("data.csv"))     # doctest: +SKIP
>>> rows_change(record, rows_record(read_manifest("data.csv")))  # doctest: +SKIP
"""

import hashlib
import json
import os

from mmkeras.data.manifest import Manifest
from mmkeras.data.parquet_manifest import embedded_images_folder


def rows_fingerprint(manifest: Manifest) -> str:
    """SHA-256 of a manifest's rows: each row's line, text, image and label.

    An image counts by its path relative to the manifest's folder (however
    the manifest's path was spelled), and image bytes held in a Parquet
    manifest by the name of the file they were written to: their SHA-256.
    So a Parquet file rewritten with the same rows (or whose images were
    written again after `mmkeras cache clear`) keeps its fingerprint, and one
    whose photos changed does not. An image file changed in place under the
    same path is not seen (its path is hashed, not its pixels).

    Args:
        manifest: the rows, as `read_manifest` returns them.

    Example:
    >>> rows_fingerprint(read_manifest("data.parquet"))[:12]  # doctest: +SKIP
    'f0cbe0edee53'
    """
    # Strings, not Paths: pathlib's relative_to took 4 s for 100,000 rows (0.6 s this way).
    manifest_folder, images_folder = str(manifest.path.parent) + os.sep, str(embedded_images_folder()) + os.sep
    digest = hashlib.sha256()
    for row in manifest.rows:
        image = None if row.image is None else str(row.image)
        if image is not None and image.startswith(images_folder):
            image = os.path.basename(image)
        elif image is not None and image.startswith(manifest_folder):
            image = image[len(manifest_folder):]
        digest.update(json.dumps([row.line, row.text, image, row.label], ensure_ascii=False).encode())
    return digest.hexdigest()


def rows_record(manifest: Manifest) -> dict:
    """What a job keeps of its rows to check a resume against: `{"rows": count, "sha256": rows_fingerprint}`."""
    return {"rows": len(manifest.rows), "sha256": rows_fingerprint(manifest)}


def rows_change(saved: dict, current: dict) -> str | None:
    """What changed between two `rows_record`s, in words, or `None` when they match.

    Example:
    >>> rows_change({"rows": 12, "sha256": "a"}, {"rows": 13, "sha256": "b"})
    '12 rows then, 13 now'
    >>> rows_change({"rows": 12, "sha256": "a"}, {"rows": 12, "sha256": "b"})
    'a text, image or label differs'
    """
    if saved["sha256"] == current["sha256"]:
        return None
    if saved["rows"] != current["rows"]:
        return f"{saved['rows']} rows then, {current['rows']} now"
    return "a text, image or label differs"
