"""`read_pairs`: a manifest of true (text, image) pairs for `align`, every check made before TensorFlow loads.

A pair needs both a text and an image, and its image must exist; a row
without one of them, or whose image file is missing, is a bad row like the
rows `read_manifest` finds (`on_bad_row`: `fail` lists every one in one
error, `skip` drops them into `Manifest.skipped`, hence `skipped_rows.csv`).
Decoding the images needs the model's image size and happens later
(`Manifest.validate_images`). TensorFlow-free: `mmkeras align` calls it
before loading TensorFlow, and the align job again when it reads the data.

Example:
>>> pairs = read_pairs("samples/matching/pairs.csv", on_bad_row="skip")  # doctest: +SKIP
>>> [str(row) for row in pairs.skipped]                                  # doctest: +SKIP
['pairs.csv: line 4: a pair needs an image']
"""

from pathlib import Path

from mmkeras.data.manifest import Manifest, ManifestRow, read_manifest


def read_pairs(path: str | Path, *, on_bad_row: str = "fail", columns: dict[str, str] | None = None) -> Manifest:
    """Read a manifest of true pairs (a label column is optional: rows of one label are grouped).

    Args:
        path: the manifest file (CSV or JSONL).
        on_bad_row: `fail` raises one `UserError` listing every bad row;
            `skip` drops them into the returned manifest's `skipped`.
        columns: the manifest's column names, as `read_manifest` takes them.

    Raises:
        UserError: as `read_manifest`, and for rows that are not complete
            pairs under `fail` (or when no pair is left under `skip`).
    """
    manifest = read_manifest(path, require_labels=False, on_bad_row=on_bad_row, columns=columns)
    bad_rows = [manifest.bad_row(row, problem) for row in manifest.rows
                if (problem := pair_problem(row, manifest.path)) is not None]
    return manifest.without(bad_rows, on_bad_row)


def pair_problem(row: ManifestRow, manifest_path: Path) -> str | None:
    """Why a row is not a usable true pair, or `None`."""
    if row.text is None:
        return "a pair needs a text (align trains on true text-image pairs)"
    if row.image is None:
        return "a pair needs an image (align trains on true text-image pairs)"
    if not row.image.is_file():
        try:
            shown = row.image.relative_to(manifest_path.parent)
        except ValueError:
            shown = row.image
        return f"image not found: {str(shown)!r}"
    return None
