"""The committed `samples/matching` and `samples/vqa` datasets: exactly what their generators write."""

import csv
import importlib
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
GENERATORS = {"matching": "samples.make_matching_samples", "vqa": "samples.make_vqa_samples"}


@pytest.mark.parametrize("dataset", sorted(GENERATORS))
def test_generator_rewrites_the_committed_files(dataset, tmp_path):
    generator = importlib.import_module(GENERATORS[dataset])
    generator.main(["--out", str(tmp_path)])
    committed = REPOSITORY / "samples" / dataset
    written = sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*") if path.is_file())
    assert written == sorted(path.relative_to(committed) for path in committed.rglob("*") if path.is_file())
    for relative in written:
        assert (tmp_path / relative).read_bytes() == (committed / relative).read_bytes(), relative


def test_half_the_matching_training_claims_are_true():
    with (REPOSITORY / "samples" / "matching" / "train.csv").open(newline="", encoding="utf-8") as handle:
        labels = [row["label"] for row in csv.DictReader(handle)]
    assert labels.count("match") == labels.count("mismatch")
