"""`mmkeras benchmark B1 B2 ...`: bundles side by side, measured interleaved in one run."""

import json
import os

import pytest

from mmkeras.cli.app import main
from mmkeras.export.converter import export_bundle
from mmkeras.runtime.bundle_comparison import compare_bundles, comparison_table, thread_counts
from tests.helpers.tiny_runs import save_tiny_run

RUNS = 3


@pytest.fixture(scope="module")
def bundle_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("comparison")
    run_dir = save_tiny_run(root / "run")
    for mode in ("none", "dynamic"):
        export_bundle(run_dir, root / mode, quantize=mode)
    return [root / "none", root / "dynamic"]


@pytest.fixture(scope="module")
def figures(bundle_dirs):
    return compare_bundles(bundle_dirs, max_threads=2, runs=RUNS, warmup=1)


def test_thread_counts_stop_at_the_cpu_count():
    assert thread_counts(1) == [1]
    assert thread_counts(10_000) == list(range(1, os.cpu_count() + 1))
    assert thread_counts(None) == list(range(1, os.cpu_count() + 1))


@pytest.mark.slow
def test_every_bundle_is_measured_at_every_setting(figures, bundle_dirs):
    threads = thread_counts(2)
    assert figures["threads"] == threads and figures["runs"] == RUNS
    assert [bundle["quantization"] for bundle in figures["bundles"]] == ["none", "dynamic"]
    for bundle, directory in zip(figures["bundles"], bundle_dirs):
        assert bundle["model_size_bytes"] == (directory / "model.tflite").stat().st_size
        assert bundle["cold_start_ms"] > 0 and bundle["peak_memory_bytes"] > 2**20
        settings = [(row["threads"], row["xnnpack"]) for row in bundle["measurements"]]
        assert settings == [(count, xnnpack) for count in threads for xnnpack in (True, False)]
        for row in bundle["measurements"]:
            for part in ("preprocess_ms", "inference_ms"):
                assert 0 < row[part]["p50"] <= row[part]["p90"] <= row[part]["p99"]


@pytest.mark.slow
def test_table_has_a_row_per_bundle_and_setting(figures):
    lines = comparison_table(figures).splitlines()
    assert lines[0].split()[:3] == ["bundle", "quant", "size"]
    assert len(lines) == 1 + 2 * len(figures["bundles"][0]["measurements"])
    rows_per_bundle = 2 * len(figures["threads"])
    assert [line.split()[0] for line in lines[1:]] == ["none"] * rows_per_bundle + ["dynamic"] * rows_per_bundle
    assert all(line.endswith("1.00x") for line in lines[1 : 1 + rows_per_bundle])


@pytest.mark.slow
def test_cli_prints_one_json_object_for_several_bundles(bundle_dirs, capsys):
    code = main(["benchmark", *map(str, bundle_dirs), "--threads", "1", "--runs", "2", "--json"])
    figures = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [bundle["bundle"] for bundle in figures["bundles"]] == [str(path) for path in bundle_dirs]
    assert figures["threads"] == [1]


@pytest.mark.slow
def test_cli_keeps_the_single_bundle_contract(bundle_dirs, capsys):
    code = main(["benchmark", str(bundle_dirs[0]), "--threads", "1", "--runs", "2", "--json"])
    figures = json.loads(capsys.readouterr().out)
    assert code == 0 and figures["threads"] == 1 and "latency_ms" in figures
