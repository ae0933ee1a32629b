"""A trained run's saved results: results.csv and TensorBoard from train, the results folder from evaluate,
and the HTML report rendered in a real (headless) browser."""

import csv
import importlib.util
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from mmkeras.evaluation.report import SECTIONS
from tests.helpers.cli import run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def evaluated(samples_bundle):
    """The session's 2-epoch run and its float bundle next to it (tests/conftest.py), with the validation rows."""
    return samples_bundle


def test_train_writes_results_csv_and_tensorboard_events(evaluated):
    with (evaluated["run"] / "results.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert set(rows[0]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"}
    # The rate after each epoch's last update: the cosine schedule ends at 0.
    learning_rates = [float(row["learning_rate"]) for row in rows]
    assert learning_rates[0] > learning_rates[1] >= 0
    history = json.loads((evaluated["run"] / "history.json").read_text())
    assert [float(row["val_loss"]) for row in rows] == pytest.approx(history["val_loss"])
    if importlib.util.find_spec("tensorboard") is None:
        assert not (evaluated["run"] / "tensorboard").exists()
    else:
        assert list((evaluated["run"] / "tensorboard").glob("*/events.out.tfevents.*"))


def test_tensorboard_draws_the_training_and_validation_loss_in_one_chart(tmp_path):
    pytest.importorskip("tensorboard")
    import tensorflow as tf

    from mmkeras.training.checkpoints import TrainingState
    from mmkeras.training.epoch_log import EpochLog

    log = EpochLog(tmp_path)
    history = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": [], "learning_rate": []}
    for epoch in range(2):
        for key in history:
            history[key].append(0.5 / (epoch + 1))
        log(TrainingState(history=history, epoch_seconds=[1.0] * (epoch + 1)))
    tags = {}
    for folder in ("train", "validation"):
        for events in (tmp_path / "tensorboard" / folder).glob("events.out.tfevents.*"):
            for event in tf.compat.v1.train.summary_iterator(str(events)):
                for value in event.summary.value:
                    tags.setdefault(folder, {}).setdefault(value.tag, []).append(
                        float(tf.make_ndarray(value.tensor)))
    assert tags["train"] == {"loss": [0.5, 0.25], "accuracy": [0.5, 0.25], "learning_rate": [0.5, 0.25],
                             "epoch_seconds": [1.0, 1.0]}
    assert tags["validation"] == {"loss": [0.5, 0.25], "accuracy": [0.5, 0.25]}  # the same tags: one chart each


def test_adaptive_modality_balance_record_goes_to_results_csv_and_tensorboard(tmp_path):
    from mmkeras.training.checkpoints import TrainingState
    from mmkeras.training.epoch_log import EpochLog
    from mmkeras.training.modality_balance import SUMMARY_KEYS

    history = {"loss": [0.9, 0.7], **{key: [0.25, 0.5] for key in SUMMARY_KEYS}}
    EpochLog(tmp_path)(TrainingState(history=history, epoch_seconds=[1.0, 2.0]))
    with (tmp_path / "results.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["epoch", "loss", *SUMMARY_KEYS, "seconds"]  # was: loss and seconds alone
    assert [row["image_drop_rate"] for row in rows] == ["0.25", "0.5"]
    if importlib.util.find_spec("tensorboard") is None:
        return
    import tensorflow as tf

    tags = set()
    for events in (tmp_path / "tensorboard" / "train").glob("events.out.tfevents.*"):
        summaries = tf.compat.v1.train.summary_iterator(str(events))
        tags |= {value.tag for event in summaries for value in event.summary.value}
    assert {f"modality_balance/{key}" for key in SUMMARY_KEYS} <= tags


@pytest.mark.parametrize("target", ["run", "bundle"])
def test_evaluate_json_has_calibration_consistency_and_saves_a_results_folder(evaluated, target, capsys):
    code, out, _ = run_cli(capsys, "evaluate", evaluated[target], "--data", evaluated["val"], "--json")
    assert code == 0
    figures = json.loads(out, parse_constant=lambda name: pytest.fail(f"{name} in --json"))
    assert 0.0 <= figures["calibration"]["ece"] <= 1.0
    assert set(figures["top_k_accuracy"]) == {"top_2", "top_3", "top_5"}
    assert figures["top_k_accuracy"]["top_5"] >= figures["top_k_accuracy"]["top_2"] >= figures["accuracy"]
    consistency = figures["consistency"]
    assert {"agreement_with_text_only", "agreement_with_image_only", "flipped_without_image",
            "flipped_without_text"} <= set(consistency)
    text_only = figures["modality_ablation"]["text_only"]
    assert set(text_only["per_class_recall"]) == set(figures["per_class"])

    folder = evaluated[target] / "results" / "val"
    assert figures["results_dir"] == str(folder)
    assert json.loads((folder / "metrics.json").read_text())["accuracy"] == figures["accuracy"]
    for name in ("confusion_matrix.png", "confusion_matrix_normalized.png", "reliability.png", "modality_ablation.png",
                 "pr_curves.png"):
        assert (folder / name).read_bytes().startswith(b"\x89PNG")
    with (folder / "predictions.csv").open(newline="") as file:
        predictions = list(csv.DictReader(file))
    assert len(predictions) == figures["n"] == 32
    assert sum(int(row["correct"]) for row in predictions) == round(figures["accuracy"] * 32)
    scores = [float(value) for key, value in predictions[0].items() if key.startswith("score_")]
    assert math.isclose(sum(scores), 1.0, abs_tol=1e-3)
    with (folder / "per_class.csv").open(newline="") as file:
        per_class = {row["label"]: float(row["average_precision"]) for row in csv.DictReader(file)}
    assert per_class == {label: values["average_precision"] for label, values in figures["per_class"].items()}
    present = [values["average_precision"] for values in figures["per_class"].values() if values["support"]]
    assert figures["macro_average_precision"] == round(sum(present) / len(present), 4)


# The device-only install: no TensorFlow, Keras, keras-hub or matplotlib.
DEVICE_ONLY = """
import importlib.util
import sys

BLOCKED = ("tensorflow", "keras", "keras_hub", "matplotlib")

class BlockTrainingExtra:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked import of {name}")

# As where they are not installed: importing them fails, and looking them up finds nothing.
sys.meta_path.insert(0, BlockTrainingExtra())
find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, package=None: (
    None if name.split(".")[0] in BLOCKED else find_spec(name, package)
)
from mmkeras.cli.app import main

sys.exit(main(sys.argv[1:]))
"""


def test_evaluating_a_bundle_without_the_training_extra_saves_figures_without_plots(evaluated, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(evaluated["bundle"], bundle, ignore=shutil.ignore_patterns("results"))
    completed = subprocess.run(
        [sys.executable, "-c", DEVICE_ONLY, "evaluate", str(bundle), "--data", str(evaluated["val"]), "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    figures = json.loads(completed.stdout)
    assert "ece" in figures["calibration"] and 0 < figures["macro_average_precision"] <= 1
    saved = {path.name for path in (bundle / "results" / "val").iterdir()}
    assert saved == {"metrics.json", "per_class.csv", "predictions.csv"}  # no pr_curves.png without matplotlib
    with (bundle / "results" / "val" / "per_class.csv").open(newline="") as file:
        assert all(0 <= float(row["average_precision"]) <= 1 for row in csv.DictReader(file))


def test_report_has_every_section_and_lists_the_bundle(evaluated, capsys):
    run_cli(capsys, "evaluate", evaluated["run"], "--data", evaluated["val"])
    page = (evaluated["run"] / "report.html").read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in page
    assert "http://" not in page and "https://" not in page  # nothing from the network
    assert "On val" in page and "Sample predictions" in page
    assert 'alt="precision-recall curves"' in page and "<th>average precision</th>" in page
    assert f">{evaluated['bundle'].resolve()}<" in page  # the bundle exported next to the run
    # curves (3), confusion (2), ablation, reliability, precision-recall, and the sample cards' images
    assert len(re.findall(r'src="data:image/png;base64,', page)) > 9


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_report_renders_in_a_browser_with_every_image_loaded(evaluated, capsys):
    run_cli(capsys, "evaluate", evaluated["run"], "--data", evaluated["val"])
    page = evaluated["run"] / "report.html"
    with tempfile.TemporaryDirectory() as profile:
        completed = subprocess.run(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000",
             "--dump-dom", page.as_uri()],
            capture_output=True, text=True, timeout=180,
        )
    body = re.search(r"<body([^>]*)>", completed.stdout)
    assert body, completed.stderr[-2000:]
    attributes = dict(re.findall(r'([\w-]+)="([^"]*)"', body.group(1)))
    assert int(attributes["data-sections"]) == len(SECTIONS)
    assert int(attributes["data-images-total"]) > 8
    assert attributes["data-images-loaded"] == attributes["data-images-total"]


def test_compare_evaluates_each_run_and_benchmarks_its_bundles(evaluated, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "compare", evaluated["run"], "--data", evaluated["val"], "--out", tmp_path, "--json")
    assert code == 0
    [run] = json.loads(out)["runs"]
    saved = json.loads((evaluated["run"] / "results" / "val" / "metrics.json").read_text())
    assert run["figures"]["accuracy"] == saved["accuracy"]
    assert run["settings"]["fusion"] == "cross-attention"
    # The bundle beside the run, and the copy another test evaluated (the run lists every bundle it knows).
    [bundle] = [bundle for bundle in run["bundles"] if bundle["path"] == str(evaluated["bundle"].resolve())]
    assert bundle["name"] == "bundle"
    assert bundle["size_bytes"] == (evaluated["bundle"] / "model.tflite").stat().st_size
    assert bundle["p50_ms"] > 0
    assert (tmp_path / "comparison.png").read_bytes().startswith(b"\x89PNG")


def test_evaluating_a_cross_attention_run_saves_attention_overlays_the_report_shows(evaluated, capsys):
    run_cli(capsys, "evaluate", evaluated["run"], "--data", evaluated["val"])
    overlays = list((evaluated["run"] / "results" / "val" / "attention").glob("line-*.png"))
    assert overlays and all(path.read_bytes().startswith(b"\x89PNG") for path in overlays)
    page = (evaluated["run"] / "report.html").read_text()
    assert page.count('alt="attention over the image"') == len(overlays)


def test_export_and_report_lists_a_bundle_written_away_from_the_run(evaluated, tmp_path):
    # Only a bundle next to the run is found by the report on its own; this one is listed by the refresh.
    import mmkeras

    report = mmkeras.export_and_report(evaluated["run"], tmp_path / "api-bundle")
    assert report["path"] == str(tmp_path / "api-bundle")
    assert ">api-bundle<" in (evaluated["run"] / "report.html").read_text()


def test_a_short_runs_curves_mark_whole_epochs_only(monkeypatch):
    from mmkeras.evaluation import plots

    figures = []
    monkeypatch.setattr(plots, "_png", lambda figure: figures.append(figure) or b"")
    plots.curve_png({"loss": [0.9, 0.5, 0.4]}, ("loss",), ylabel="loss", best_epoch=3)
    ticks = figures[0].axes[0].get_xticks()
    assert len(ticks) >= 3 and all(float(tick).is_integer() for tick in ticks)


def test_a_small_confusion_matrix_counts_in_whole_numbers_on_its_colour_scale(monkeypatch):
    from mmkeras.evaluation import plots

    figures = []
    monkeypatch.setattr(plots, "_png", lambda figure: figures.append(figure) or b"")
    plots.confusion_png([[2, 0], [0, 2]], ["cat", "dog"])
    colour_scale = figures[0].axes[1]  # the colorbar's axes, beside the heatmap
    ticks = colour_scale.get_yticks()
    assert len(ticks) >= 2 and all(float(tick).is_integer() for tick in ticks)


def test_a_bar_charts_legend_stands_beside_the_bars_not_over_them(monkeypatch):
    from mmkeras.evaluation import plots

    figures = []
    monkeypatch.setattr(plots, "_png", lambda figure: figures.append(figure) or b"")
    plots.bar_chart_png({"recall": {"cat": 1.0, "dog": 1.0}, "F1": {"cat": 1.0, "dog": 0.5}}, title="t", ylabel="y")
    figure = figures[0]
    axes = figure.axes[0]
    renderer = figure.canvas.get_renderer()
    legend, plotting_area = axes.get_legend().get_window_extent(renderer), axes.get_window_extent(renderer)
    assert legend.x0 >= plotting_area.x1  # right of the plotting area: no bar can run under it


def test_a_bar_charts_upright_labels_stand_centred_under_their_groups(monkeypatch):
    from mmkeras.evaluation import plots

    figures = []
    monkeypatch.setattr(plots, "_png", lambda figure: figures.append(figure) or b"")
    runs = {"concat": 1.0, "gated": 0.56, "cross-attention": 1.0}
    plots.bar_chart_png({"fused": runs, "text only": runs}, title="runs compared", ylabel="accuracy")
    figure = figures[0]
    axes = figure.axes[0]
    renderer = figure.canvas.get_renderer()
    for position, label in zip(axes.get_xticks(), axes.get_xticklabels()):
        box = label.get_window_extent(renderer)
        centre = axes.transData.transform((position, 0))[0]
        assert abs((box.x0 + box.x1) / 2 - centre) < 1, label.get_text()


def test_explains_heatmaps_have_a_colour_scale(monkeypatch):
    from mmkeras.evaluation import plots

    figures = []
    monkeypatch.setattr(plots, "_png", lambda figure: figures.append(figure) or b"")
    explanation = {
        "class_index": 0, "probability": 0.93, "image_heatmap": [[0.0, 0.05], [0.01, -0.002]],
        "attention": {"image": [[0.1, 0.2], [0.3, 0.4]]}, "words": [{"word": "cat", "importance": 0.06}],
        "modality": {"fused": 0.93, "text_only": 0.5, "image_only": 0.83},
    }
    plots.explanation_png([[[0, 0, 0]] * 8] * 8, explanation, ["cat", "dog"])
    colour_scales = [axes for axes in figures[0].axes if axes.get_label() == "<colorbar>"]
    assert [scale.get_ylim() for scale in colour_scales] == [(-0.002, 0.05), (0.1, 0.4)]


def test_a_sample_card_says_no_text_outside_quotes(tmp_path):
    from mmkeras.evaluation.report import card_example

    row = {"image": "", "image_file": "", "line": "2", "manifest": str(tmp_path / "test.csv"), "text": ""}
    card = card_example(row, tmp_path)
    assert '<div class="muted">no text</div>' in card
    assert "“" not in card  # quotes would make it a caption that reads "(no text)"
    assert "<div>“(no text)”</div>" in card_example({**row, "text": "(no text)"}, tmp_path)


def test_the_reports_attention_overlay_has_a_colour_scale(monkeypatch):
    import numpy as np

    from mmkeras.evaluation import plots

    figures = []
    monkeypatch.setattr(plots, "_png", lambda figure: figures.append(figure) or b"")
    plots.heatmap_overlay_png(np.zeros((8, 8, 3)), np.array([[0.0274, 0.0282], [0.0278, 0.0279]]), title="t")
    colour_scales = [axes for axes in figures[0].axes if axes.get_label() == "<colorbar>"]
    assert [scale.get_ylim() for scale in colour_scales] == [pytest.approx((0.0274, 0.0282))]


@pytest.mark.parametrize("missing", ["text", "image"])
def test_explains_panels_of_a_missing_modality_say_so(monkeypatch, missing):
    from mmkeras.evaluation import plots

    figures = []
    monkeypatch.setattr(plots, "_png", lambda figure: figures.append(figure) or b"")
    explanation = {
        "class_index": 0, "probability": 0.79, "attention": None,
        "image_heatmap": None if missing == "image" else [[0.0, 0.004], [0.001, -0.004]],
        "words": [{"word": "coffee", "importance": 0.04}] if missing == "image" else [],
        "modality": {"fused": 0.79, "text_only": 0.33, "image_only": 0.79},
    }
    image = None if missing == "image" else [[[0, 0, 0]] * 8] * 8
    plots.explanation_png(image, explanation, ["cat", "coffee"])
    said = [[text.get_text() for text in axes.texts] for axes in figures[0].axes if axes.get_label() != "<colorbar>"]
    expected = {"image": [["no image"], ["no image"], [], ["no image"]], "text": [[], [], ["no text"], ["no text"]]}
    assert said == expected[missing]  # the photo, the occlusion map, the words, the modalities
    modalities = [axes for axes in figures[0].axes if axes.get_label() != "<colorbar>"][-1]
    assert [tick.get_text() for tick in modalities.get_xticklabels()] == ["fused", "text only", "image only"]
    assert [bar.get_height() for bar in modalities.patches] == (
        [0.79, 0.33, 0.0] if missing == "image" else [0.79, 0.0, 0.79])  # no bar for an empty input's answer
