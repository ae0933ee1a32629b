"""A user's own manifest end to end: its own column names, an image size, early stopping, batch predict."""

import csv
import json
import logging
from pathlib import Path

import pytest
import yaml

from mmkeras.cli.app import main
from mmkeras.config import RunConfig
from mmkeras.data.manifest import read_manifest
from mmkeras.errors import UserError
from mmkeras.runs import manifest_columns
from mmkeras.training.fit import kept_weights_summary
from tests.helpers.cli import SAMPLES, LogLines, run_cli

# The user's header: other names than text, image, label, in another order, and a column of their own.
HEADER = ["notes", "photo", "caption", "category"]
COLUMN_FLAGS = ["--text-column", "caption", "--image-column", "photo", "--label-column", "category"]


def write_renamed(source: Path, out: Path, rows: int, *, labels: bool = True) -> Path:
    """The first `rows` rows of a samples manifest under the user's own column names (absolute image paths)."""
    with source.open(newline="", encoding="utf-8") as handle:
        records = list(csv.DictReader(handle))[:rows]
    header = HEADER if labels else HEADER[:3]
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        for number, record in enumerate(records):
            image = str(source.parent / record["image"]) if record["image"] else ""
            cells = {"notes": f"shot {number}", "photo": image,
                     "caption": record["text"], "category": record["label"]}
            writer.writerow({name: cells[name] for name in header})
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    return {
        "train": write_renamed(SAMPLES / "train.csv", folder / "train.csv", 48),
        "val": write_renamed(SAMPLES / "val.csv", folder / "val.csv", 16),
        "unlabelled": write_renamed(SAMPLES / "test.csv", folder / "unlabelled.csv", 10, labels=False),
        "folder": folder,
    }


@pytest.fixture(scope="module")
def trained(photos, tmp_path_factory):
    """A run on the renamed manifests at 48x48 with patience 1, its stdout, stderr (logs) and bundle."""
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    logs = LogLines()
    logging.getLogger("mmkeras").addHandler(logs)
    try:
        code = main(
            ["train", "--data", str(photos["train"]), "--val", str(photos["val"]), "--out", str(run_dir),
             "--epochs", "3", "--batch-size", "16", "--image-size", "48", "--early-stopping-patience", "1",
             "--no-deterministic", *COLUMN_FLAGS]
        )
    finally:
        logging.getLogger("mmkeras").removeHandler(logs)
    assert code == 0
    bundle = run_dir.parent / "bundle"
    assert main(["export", str(run_dir), "--out", str(bundle), "--quantize", "none"]) == 0
    return {"run": run_dir, "bundle": bundle, "logs": logs.lines}


def test_a_run_keeps_its_column_names_and_image_size(trained):
    saved = yaml.safe_load((trained["run"] / "config.yaml").read_text())
    assert (saved["text_column"], saved["image_column"], saved["label_column"]) == ("caption", "photo", "category")
    assert saved["image_size"] == 48 and saved["early_stopping_patience"] == 1
    assert json.loads((trained["run"] / "preprocessor.json").read_text())["image_size"] == [48, 48]
    # Later commands on the run, and on its bundle, read the same columns without flags.
    expected = {"text": "caption", "image": "photo", "label": "category"}
    assert manifest_columns(trained["run"]) == manifest_columns(trained["bundle"]) == expected
    assert manifest_columns(trained["bundle"], {"text": "other", "image": None})["text"] == "other"


def test_training_logs_the_image_settings_once_with_their_sources(trained):
    settings = [line for line in trained["logs"] if line.startswith("images: ")]
    assert settings == [
        (
            "images: 48x48 (image_size setting), bilinear resize (default), no centre crop (default), "
            "mean 0.5 std 0.5 of 0..1 pixels (the tiny CNN's -1..1 pixels)"
        )
    ]


def test_the_summary_says_which_epoch_was_kept(trained):
    metrics = json.loads((trained["run"] / "metrics.json").read_text())
    history = json.loads((trained["run"] / "history.json").read_text())
    kept = metrics["kept_epoch"]
    assert history["val_loss"][kept - 1] == min(history["val_loss"])
    summary = kept_weights_summary(history, kept, metrics["stopped_early"], 1)
    assert summary.startswith(f"kept epoch {kept}'s weights (lowest val_loss {min(history['val_loss']):.4f}")


def test_predict_data_writes_one_row_per_input_row_with_the_input_columns(trained, photos, tmp_path, capsys):
    out = tmp_path / "predictions.csv"
    code, stdout, _ = run_cli(capsys, "predict", trained["bundle"], "--data", photos["unlabelled"], "--out", out,
                              "--top-k", "2", "--json")
    assert code == 0 and json.loads(stdout) == {"rows": 10, "predicted": 10, "bad_rows": 0, "out": str(out)}
    with out.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    labels = json.loads((trained["bundle"] / "bundle.json").read_text())["labels"]
    assert list(rows[0]) == [*HEADER[:3], "prediction", "label_1", "score_1", "label_2", "score_2"]
    with photos["unlabelled"].open(newline="", encoding="utf-8") as handle:
        inputs = list(csv.DictReader(handle))
    assert [row["caption"] for row in rows] == [row["caption"] for row in inputs]
    for row in rows:
        assert row["prediction"] == row["label_1"] and row["label_1"] in labels
        assert float(row["score_1"]) >= float(row["score_2"])


def test_predict_data_never_overwrites_unless_asked(trained, photos, tmp_path, capsys):
    out = tmp_path / "mine.csv"
    out.write_text("my own file\n")
    code, _, err = run_cli(capsys, "predict", trained["bundle"], "--data", photos["unlabelled"], "--out", out)
    assert code == 2 and "--out exists; pass --overwrite" in err
    assert out.read_text() == "my own file\n"
    code, _, _ = run_cli(capsys, "predict", trained["bundle"], "--data", photos["unlabelled"], "--out", out,
                         "--overwrite")
    assert code == 0 and out.read_text().startswith("notes,photo,caption,prediction")


def test_predict_data_bad_rows_fail_or_are_written_with_their_reason(trained, photos, tmp_path, capsys):
    manifest = tmp_path / "rows.csv"
    lines = photos["unlabelled"].read_text(encoding="utf-8").splitlines()
    lines[2] = "shot x,missing.jpg,a text"  # an image that is not there
    lines.append("shot y,,")  # neither text nor image
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.csv"
    code, _, err = run_cli(capsys, "predict", trained["bundle"], "--data", manifest, "--out", out)
    assert code == 2 and "line 12" in err and not out.exists()
    code, _, _ = run_cli(capsys, "predict", trained["bundle"], "--data", manifest, "--out", out, "--on-bad-row", "skip")
    with out.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert code == 0 and len(rows) == 11
    assert "cannot read image 'missing.jpg'" in rows[1]["error"] and rows[1]["prediction"] == ""
    assert rows[-1]["error"] == "the row has neither a text nor an image"
    assert rows[0]["error"] == "" and rows[0]["prediction"]


def test_predict_on_a_run_folder_names_export(trained, photos, capsys):
    code, _, err = run_cli(capsys, "predict", trained["run"], "--data", photos["unlabelled"], "--out", "x.csv")
    assert code == 2 and f"mmkeras export {trained['run']} --out BUNDLE_DIR" in err


def test_a_manifest_is_read_under_its_own_column_names(tmp_path):
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text('{"caption": "a red ring", "file": "", "class": 3, "extra": [1]}\n', encoding="utf-8")
    manifest = read_manifest(jsonl, columns={"text": "caption", "image": "file", "label": "class"})
    [row] = manifest.rows
    assert (row.text, row.image, row.label) == ("a red ring", None, "3")
    assert row.cells["extra"] == "[1]"


def test_a_wrong_column_name_names_the_file_and_the_columns_it_has(photos):
    with pytest.raises(UserError) as raised:
        read_manifest(photos["train"], columns={"text": "captions"})
    message = str(raised.value)
    assert str(photos["train"]) in message and "missing column(s) captions, image, label" in message
    assert "(the header has: notes, photo, caption, category)" in message


def test_a_yaml_config_names_the_columns_and_the_image_size(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("text-column: caption\nimage_column: photo\nlabel_column: category\nimage_size: 96\n")
    loaded = RunConfig.from_yaml(config)
    assert loaded.columns == {"text": "caption", "image": "photo", "label": "category"} and loaded.image_size == 96


def test_column_names_and_image_size_are_checked():
    with pytest.raises(UserError, match="must differ"):
        RunConfig(text_column="caption", image_column="caption")
    with pytest.raises(UserError, match="text_column must be a column name"):
        RunConfig(text_column=" ")
    with pytest.raises(UserError, match="image_size must be at least 1"):
        RunConfig(image_size=0)


def test_boolean_options_are_flag_pairs_without_a_value(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run_cli(capsys, "train", "--help")
    options = [line for line in out.splitlines() if "--" in line and "--help" not in line]  # --help is typer's own
    assert code == 0 and any("--deterministic  " in line and "--no-deterministic" in line for line in options)
    assert not [line for line in options if "<bool>" in line]
    code, _, err = run_cli(capsys, "train", "--deterministic")  # parsed; then the missing manifest is the error
    assert code == 2 and "training needs a training manifest" in err
