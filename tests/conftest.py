"""What every test file shares: distributed and browser tests count as slow, and one trained run of the
samples and its bundle are built once per session.

Training and exporting cost most of a CLI test's time, so the files that test what a finished run or bundle
does share these instead of each training its own. A test may evaluate, report on or benchmark them (which
writes `results/` and `report.html` inside, the same each time) but must not change what `train` and
`export` wrote: copy the folder first (`shutil.copytree`) to damage or replace it. Nothing else is written
beside the run, so the bundle is the only one a report or `compare` finds next to it.
"""

import pytest

from mmkeras.cli.app import main
from tests.helpers.cli import SAMPLES, write_subset
from tests.helpers.dataset_rows import ten_row_manifest, ten_row_preprocessor

# Code for the tests to import, not tests (nor doctests: `--doctest-modules` would import it a second time).
collect_ignore = ["helpers"]

# Markers that imply `slow`, so that `-m "not slow"` leaves them out without each test saying so twice.
SLOW_KINDS = ("distributed", "browser")


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items):
    for item in items:
        if any(item.get_closest_marker(kind) for kind in SLOW_KINDS):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def own_cache_dir(tmp_path_factory):
    """Feature caches and remembered image checks go to a folder of this test session, not the user's cache
    (subprocesses inherit it): no test sees what an earlier session, or the user, cached."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MMKERAS_CACHE_DIR", str(tmp_path_factory.mktemp("mmkeras_cache") / "features"))
        yield


@pytest.fixture(scope="session")
def samples_run(tmp_path_factory) -> dict:
    """The first 96 training and 32 validation rows of `samples/`, and a run trained on them.

    `mmkeras train` with the default settings but 2 epochs, batch 16 and seed 1. Keys: `folder` (holding
    everything), `train` and `val` (the manifests, absolute image paths) and `run` (`folder/run`).
    """
    folder = tmp_path_factory.mktemp("samples_run")
    train = write_subset(SAMPLES / "train.csv", folder / "train.csv", 96)
    val = write_subset(SAMPLES / "val.csv", folder / "val.csv", 32)
    run = folder / "run"
    settings = ["--epochs", "2", "--batch-size", "16", "--seed", "1", "--json"]
    assert main(["train", "--data", str(train), "--val", str(val), "--out", str(run), *settings]) == 0
    return {"folder": folder, "train": train, "val": val, "run": run}


@pytest.fixture(scope="session")
def samples_bundle(samples_run) -> dict:
    """`samples_run` with its float32 bundle (`mmkeras export` defaults) beside the run, under the key `bundle`."""
    bundle = samples_run["folder"] / "bundle"
    assert main(["export", str(samples_run["run"]), "--out", str(bundle), "--json"]) == 0
    return {**samples_run, "bundle": bundle}


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> dict:
    """An untrained tiny run of the samples' labels (`save_tiny_run`) under `run` and its float32 bundle under
    `bundle`: for runtime tests, which need a bundle but not a trained one."""
    from mmkeras.export.converter import (
        export_bundle,  # here, so that collecting the tests imports no TensorFlow
    )
    from tests.helpers.tiny_runs import save_tiny_run

    root = tmp_path_factory.mktemp("tiny_bundle")
    export_bundle(save_tiny_run(root / "run"), root / "bundle")
    return {"run": root / "run", "bundle": root / "bundle"}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """The dataset tests' ten-row manifest (`tests.helpers.dataset_rows.ten_row_manifest`)."""
    return ten_row_manifest(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def preprocessor(manifest):
    """A preprocessor fitted to `manifest` (`tests.helpers.dataset_rows.ten_row_preprocessor`)."""
    return ten_row_preprocessor(manifest)
