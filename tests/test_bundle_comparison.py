"""`mmkeras benchmark B1 B2 ...`: bundles side by side, measured interleaved in one run."""

import csv
import json
import os
import shutil
from pathlib import Path

import pytest

from mmkeras.cli.app import main
from mmkeras.data.manifest import read_manifest
from mmkeras.errors import UserError
from mmkeras.evaluation.evaluate import evaluate_classifier
from mmkeras.export.converter import export_bundle
from mmkeras.models import build_model
from mmkeras.runtime.batch_predict import predict_file
from mmkeras.runtime.bundle_accuracy import bundle_accuracies
from mmkeras.runtime.bundle_comparison import (
    compare_bundles,
    comparison_table,
    fastest_at_equal_accuracy,
    thread_counts,
    verdict_lines,
)
from mmkeras.runtime.cpu import cpu_name
from mmkeras.runtime.predictor import Predictor
from tests.helpers.cli import SAMPLES
from tests.helpers.tiny_runs import SEQUENCE_LENGTH, save_tiny_run

RUNS = 3
TEST_DATA = SAMPLES / "test.csv"


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


def synthetic_bundle(name: str, p50_by_threads: dict[int, float], correct: int | None, rows: int = 200) -> dict:
    """A bundle's figures as `compare_bundles` gives them, with only what the verdict reads."""
    return {
        "bundle": f"bundles/{name}",
        "quantization": name,
        "accuracy": None if correct is None else {
            "rows": rows, "correct": correct, "accuracy": correct / rows, "metric": "accuracy"
        },
        "measurements": [
            {"threads": threads, "xnnpack": xnnpack, "inference_ms": {"p50": p50 if xnnpack else 100 * p50}}
            for threads, p50 in p50_by_threads.items()
            for xnnpack in (True, False)
        ],
    }


def synthetic_figures(*bundles: dict) -> dict:
    return {"threads": [1, 2], "cpu": "AMD EPYC", "cpu_count": 2, "bundles": list(bundles)}


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
    lines, verdict = comparison_table(figures).split("\n\n")
    *lines, timed = lines.splitlines()
    assert timed.startswith("pre: a noise image at each bundle's size and a sample sentence")  # what `pre` timed
    assert verdict.splitlines() == verdict_lines(figures["verdict"])  # no accuracy lines without data
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
    assert figures["cpu"] == cpu_name() and figures["cpu_count"] == os.cpu_count()


def test_the_verdict_picks_the_fastest_of_the_equally_accurate_and_leaves_out_a_less_accurate_one():
    figures = synthetic_figures(
        synthetic_bundle("float", {1: 4.0, 2: 3.0}, correct=130),
        synthetic_bundle("int8", {1: 3.0, 2: 2.8}, correct=128),  # 1 point below the best: as accurate
        synthetic_bundle("dynamic", {1: 3.5, 2: 2.0}, correct=130),
        synthetic_bundle("int16x8", {1: 1.0, 2: 1.0}, correct=127),  # 1.5 points below: left out, fastest or not
    )
    verdict = fastest_at_equal_accuracy(figures, tolerance=0.01)
    assert verdict["candidates"] == ["bundles/float", "bundles/int8", "bundles/dynamic"]
    assert [(row["threads"], row["bundle"]) for row in verdict["fastest"]] == [
        (1, "bundles/int8"), (2, "bundles/dynamic")
    ]
    assert verdict["fastest"][0]["vs_first"] == 0.75 and verdict["fastest"][0]["accuracy"] == 128 / 200
    assert verdict["best_accuracy"] == 130 / 200 and verdict["accuracy_measured"]
    assert fastest_at_equal_accuracy(figures, tolerance=0.0)["fastest"][0]["bundle"] == "bundles/dynamic"
    assert fastest_at_equal_accuracy(figures, tolerance=0.015)["fastest"][0]["bundle"] == "bundles/int16x8"


def test_the_tolerance_compares_counts_of_correct_rows_not_rounded_accuracies():
    # 0.88 - 0.87 is 0.010000000000000009: one row in 100 is within a 0.01 tolerance all the same.
    figures = synthetic_figures(
        synthetic_bundle("float", {1: 2.0}, correct=88, rows=100),
        synthetic_bundle("int8", {1: 1.0}, correct=87, rows=100),
    )
    figures["threads"] = [1]
    assert [row["bundle"] for row in fastest_at_equal_accuracy(figures, 0.01)["fastest"]] == ["bundles/int8"]


def test_without_accuracies_the_verdict_names_the_fastest_and_says_accuracy_was_not_measured():
    figures = synthetic_figures(
        synthetic_bundle("float", {1: 4.0, 2: 3.0}, correct=None),
        synthetic_bundle("int8", {1: 3.0, 2: 3.5}, correct=None),
    )
    verdict = fastest_at_equal_accuracy(figures)
    assert not verdict["accuracy_measured"] and verdict["best_accuracy"] is None
    assert verdict_lines(verdict) == [
        "fastest on AMD EPYC (2 CPUs), 1 thread, XNNPACK: int8 0.75x float (accuracy not measured: pass --data)",
        "fastest on AMD EPYC (2 CPUs), 2 threads, XNNPACK: float 1.00x float (accuracy not measured: pass --data)",
    ]


def csv_column(path, column: str) -> list[str]:
    with path.open(encoding="utf-8") as file:
        return [row[column] for row in csv.DictReader(file)]


@pytest.mark.slow
def test_accuracies_are_those_evaluate_and_predict_give(bundle_dirs, tmp_path):
    figures = bundle_accuracies(bundle_dirs, TEST_DATA)
    truth = csv_column(TEST_DATA, "label")
    predicted = []
    for directory, accuracy in zip(bundle_dirs, figures):
        assert accuracy["rows"] == len(truth)
        assert accuracy["accuracy"] == evaluate_classifier(directory, TEST_DATA, save_results=False)["accuracy"]
        predicted.append(csv_column(Path(predict_file(directory, TEST_DATA, tmp_path / f"{directory.name}.csv")["out"]),
                                    "prediction"))
        assert accuracy["correct"] == sum(map(str.__eq__, predicted[-1], truth))
    assert [accuracy["agreeing"] for accuracy in figures] == [len(truth), sum(map(str.__eq__, *predicted))]


@pytest.mark.slow
def test_cli_with_data_prints_the_accuracies_and_the_verdict(bundle_dirs, capsys):
    argv = ["benchmark", *map(str, bundle_dirs), "--data", str(TEST_DATA), "--threads", "2", "--runs", "2"]
    assert main([*argv, "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["cpu"] == cpu_name() and figures["data"] == str(TEST_DATA)
    assert [bundle["accuracy"] for bundle in figures["bundles"]] == bundle_accuracies(bundle_dirs, TEST_DATA)
    verdict = figures["verdict"]
    assert verdict["accuracy_measured"] and verdict["accuracy_tolerance"] == 0.01
    assert [row["threads"] for row in verdict["fastest"]] == sorted({1, max(thread_counts(2))})
    assert set(verdict["fastest"][0]) == {"threads", "bundle", "quantization", "inference_p50_ms", "vs_first",
                                          "accuracy"}
    assert verdict["fastest"][0]["bundle"] in verdict["candidates"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()  # timed anew: the same lines, other figures
    verdicts = [line for line in lines if line.startswith("fastest")]
    assert lines[-len(verdicts):] == verdicts and len(verdicts) == len(verdict["fastest"])
    assert all(line.startswith(f"fastest at equal accuracy on {cpu_name()} (") for line in verdicts)
    assert f"accuracy on {TEST_DATA}:" in lines


@pytest.mark.slow
def test_bundles_with_other_labels_are_refused_before_anything_is_timed(bundle_dirs, tmp_path):
    other = shutil.copytree(bundle_dirs[1], tmp_path / "other")
    values = json.loads((other / "bundle.json").read_text(encoding="utf-8"))
    values["labels"] = values["labels"][::-1]
    (other / "bundle.json").write_text(json.dumps(values), encoding="utf-8")
    with pytest.raises(UserError, match="its labels differ from those of"):
        bundle_accuracies([bundle_dirs[0], other], TEST_DATA)


@pytest.fixture(scope="module")
def other_run_bundle(tmp_path_factory):
    """A bundle of the same labels as `bundle_dirs` from another random run (its model built with another seed)."""
    root = tmp_path_factory.mktemp("other_run")
    labels = read_manifest(SAMPLES / "train.csv").labels()
    texts = [row.text for row in read_manifest(SAMPLES / "train.csv").rows if row.text]
    model, preprocessor = build_model(num_classes=len(labels), texts=texts, sequence_length=SEQUENCE_LENGTH, seed=1)
    export_bundle(save_tiny_run(root / "run", model, preprocessor), root / "bundle")
    return root / "bundle"


def labelled_by(bundle_dir, out):
    """`samples/test.csv` with the labels `bundle_dir` predicts: that bundle is right on every row."""
    predictor = Predictor(bundle_dir)
    with TEST_DATA.open(encoding="utf-8") as source, out.open("w", encoding="utf-8", newline="") as target:
        writer = csv.DictWriter(target, ["text", "image", "label"])
        writer.writeheader()
        for row in csv.DictReader(source):
            image = str(SAMPLES / row["image"]) if row["image"] else ""
            writer.writerow({**row, "image": image, "label": predictor.predict(row["text"], image or None).label})
    return out


@pytest.mark.slow
def test_a_less_accurate_bundle_of_the_same_labels_is_left_out_of_the_verdict(
    bundle_dirs, other_run_bundle, tmp_path, capsys
):
    data = labelled_by(bundle_dirs[0], tmp_path / "test.csv")
    # The other run's bundle first, so that the verdict cannot fall to the first bundle by default.
    bundles = [str(other_run_bundle), *map(str, bundle_dirs)]
    assert main(["benchmark", *bundles, "--data", str(data), "--threads", "1", "--runs", "2", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    other, labeller = (figures["bundles"][index]["accuracy"] for index in (0, 1))
    assert labeller["correct"] == labeller["rows"] and other["correct"] < 0.9 * other["rows"]
    verdict = figures["verdict"]
    assert bundles[0] not in verdict["candidates"] and bundles[1] in verdict["candidates"]
    assert all(row["bundle"] in verdict["candidates"] for row in verdict["fastest"])
    assert verdict["best_accuracy"] == 1.0
