import csv
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from mmkeras.config import RunConfig
from mmkeras.data.manifest import Manifest, ManifestRow, read_manifest
from mmkeras.data.rows_fingerprint import rows_fingerprint
from mmkeras.errors import UserError
from mmkeras.evaluation.evaluate import prediction_rows
from mmkeras.evaluation.report import sample_card
from mmkeras.evaluation.results_folder import sample_rows, write_csv
from mmkeras.training.cross_validation import (
    FOLDS_FILE,
    ROWS_KEY,
    TEST_MANIFEST,
    TRAIN_MANIFEST,
    check_folds_train_every_tested_label,
    checked_split,
    stratified_folds,
    write_manifest,
)
from tests.helpers.cli import SAMPLES, run_cli, write_subset
from tests.helpers.parquet_files import samples_as_parquet, write_parquet

RUN_CLI = "import sys; from mmkeras.cli.app import main; sys.exit(main(sys.argv[1:]))"


@given(st.lists(st.sampled_from("abcd"), min_size=4, max_size=80), st.integers(2, 4), st.integers(0, 5))
def test_folds_are_stratified_and_balanced(labels, folds, seed):
    assignment = stratified_folds(labels, folds, seed)
    assert set(assignment.tolist()) <= set(range(folds))
    sizes = np.bincount(assignment, minlength=folds)
    assert sizes.max() - sizes.min() <= 1
    for label in set(labels):
        per_fold = np.bincount(assignment[np.array(labels) == label], minlength=folds)
        assert per_fold.max() - per_fold.min() <= 1
    assert stratified_folds(labels, folds, seed).tolist() == assignment.tolist()  # the seed fixes the split


@pytest.mark.slow
def test_cv_averages_the_folds_and_resumes_without_redoing_finished_ones(tmp_path, capsys):
    data = write_subset(SAMPLES / "train.csv", tmp_path / "data.csv", 60)
    out = tmp_path / "cv"
    args = ["cv", "--data", data, "--folds", "2", "--out", out, "--epochs", "1", "--batch-size", "16", "--json"]
    code, stdout, _ = run_cli(capsys, *args)
    assert code == 0
    result = json.loads(stdout)
    assert len(result["per_fold"]) == 2
    accuracies = [fold["accuracy"] for fold in result["per_fold"]]
    assert result["summary"]["accuracy"]["mean"] == pytest.approx(np.mean(accuracies))
    assert result["summary"]["accuracy"]["std"] == pytest.approx(np.std(accuracies, ddof=1))
    assert {"ece", "text_only_accuracy", "flipped_without_text"} <= set(result["summary"])
    test_rows = sum(len((out / f"fold-{k}" / "test.csv").read_text().splitlines()) - 1 for k in (1, 2))
    assert test_rows == 60  # every row is held out exactly once

    # An interruption during fold 2: its evaluation was never written.
    kept_model = (out / "fold-1" / "run" / "model.keras").stat().st_mtime_ns
    (out / "fold-2" / "run" / "results" / "test" / "metrics.json").unlink()
    code, stdout, err = run_cli(capsys, *args)
    assert code == 0
    assert err.count("finished before") == 1
    assert (out / "fold-1" / "run" / "model.keras").stat().st_mtime_ns == kept_model
    assert json.loads(stdout)["per_fold"][:1] == result["per_fold"][:1]

    # The table ends by saying where the figures and the folds' runs are.
    code, stdout, _ = run_cli(capsys, *args[:-1])
    assert code == 0
    assert stdout.splitlines()[-1] == (
        f"every fold's figures in {out / 'cv.json'}; fold K's run, results and report in {out}/fold-K/run")

    # Each fold's predictions and report name a row by its line in the user's file, not in fold-K/test.csv.
    for fold in ("fold-1", "fold-2"):
        results = out / fold / "run" / "results" / "test"
        with (results / "predictions.csv").open(encoding="utf-8") as handle:
            predictions = list(csv.DictReader(handle))
        assert {prediction["manifest"] for prediction in predictions} == {str(data.resolve())}
        for prediction in predictions:
            assert row_at(data, int(prediction["line"])) == (prediction["text"], prediction["label"])
        # A cross-attention run: one overlay per sample row with both modalities, named by its line there.
        sampled = [row for row in sample_rows(predictions) if row["text"] and row["image_file"]]
        overlays = {path.name for path in (results / "attention").glob("line-*.png")}
        assert sampled and overlays == {f"line-{row['line']}.png" for row in sampled}
        page = (out / fold / "run" / "report.html").read_text(encoding="utf-8")
        assert f"line {sampled[0]['line']} of data.csv</div>" in page
        assert page.count('alt="attention over the image"') == len(overlays)


def test_cv_refuses_a_folder_of_another_split(tmp_path, capsys):
    data = write_subset(SAMPLES / "train.csv", tmp_path / "data.csv", 13)
    (tmp_path / "cv").mkdir()
    (tmp_path / "cv" / "folds.json").write_text(json.dumps({"data": "other.csv"}))
    code, _, err = run_cli(capsys, "cv", "--data", data, "--folds", "3", "--out", tmp_path / "cv")
    assert code == 2
    assert "another --out" in err


def test_cv_refuses_a_class_on_one_row_before_training_any_fold(tmp_path, capsys):
    data = write_subset(SAMPLES / "train.csv", tmp_path / "data.csv", 13)  # every class on two rows or more
    with data.open("a", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerow(["a lone violet card", "", "violet_calm"])  # line 15: its only row
    out = tmp_path / "cv"
    code, _, err = run_cli(capsys, "cv", "--data", data, "--folds", "3", "--out", out, "--epochs", "1")
    assert code == 2
    assert err.strip().splitlines()[-1].startswith(f"error: {data}: line 15: label 'violet_calm' is on no row")
    assert not (out / FOLDS_FILE).exists() and not list(out.glob("fold-*"))  # refused before any split or training


def test_a_multilabel_label_whose_rows_share_one_fold_is_refused(tmp_path):
    cells = ["a|b", "a|c", "b|c", "a|b", "c"]
    rows = [ManifestRow("t", None, cell, line) for line, cell in enumerate(cells, start=2)]
    manifest = Manifest(tmp_path / "data.csv", rows)
    check_folds_train_every_tested_label(manifest, np.array([0, 1, 0, 1, 1]), "multilabel")  # each fold trains a, b, c
    with pytest.raises(UserError, match="line 3: label 'c'"):
        check_folds_train_every_tested_label(manifest, np.array([0, 1, 1, 0, 1]), "multilabel")  # c: fold 2 only


def photo_bytes(color) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_cv_resumes_a_rewritten_parquet_file_and_refuses_a_changed_or_missing_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MMKERAS_CACHE_DIR", str(tmp_path / "cache" / "features"))
    rows = {"text": ["a", "b", "c", "d"], "label": ["x", "y", "x", "y"]}
    colors = [(200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0)]
    data, out = tmp_path / "data.parquet", tmp_path / "cv"
    write_parquet(data, {**rows, "image": pa.array(map(photo_bytes, colors), pa.binary())})
    split = checked_split(out, read_manifest(data), 2, seed=0)
    # Rewritten with the same rows (Hugging Face structs, another compression): the same split resumes.
    structs = pa.array([{"bytes": photo_bytes(color), "path": None} for color in colors],
                       pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    write_parquet(data, {**rows, "image": structs}, compression="gzip")
    assert checked_split(out, read_manifest(data), 2, seed=0).tolist() == split.tolist()

    write_parquet(data, {**rows, "image": pa.array(map(photo_bytes, [*colors[:3], (9, 9, 9)]), pa.binary())})
    code, _, err = run_cli(capsys, "cv", "--data", data, "--folds", "2", "--out", out)
    assert code == 2
    assert err.splitlines()[-1] == (
        f"error: {data}: the rows changed since the cross-validation in {out} began (a text, image or label "
        "differs); restore the file, or give another --out to start again"
    )
    data.unlink()
    code, _, err = run_cli(capsys, "cv", "--data", data, "--folds", "2", "--out", out)
    assert code == 2 and err.splitlines()[-1] == f"error: {data}: manifest not found"


def test_a_folds_json_written_before_the_rows_fingerprint_still_resumes(tmp_path):
    data = write_subset(SAMPLES / "train.csv", tmp_path / "data.csv", 13)
    manifest, out = read_manifest(data), tmp_path / "cv"
    split = checked_split(out, manifest, 3, seed=0)
    folds_json = out / FOLDS_FILE
    older = json.loads(folds_json.read_text())
    del older[ROWS_KEY]
    folds_json.write_text(json.dumps(older))
    assert checked_split(out, manifest, 3, seed=0).tolist() == split.tolist()


def test_the_rows_fingerprint_does_not_depend_on_how_the_manifest_path_is_spelled(tmp_path, monkeypatch):
    (tmp_path / "a.png").write_bytes(photo_bytes((1, 2, 3)))
    (tmp_path / "data.csv").write_text("text,image,label\na red card,a.png,x\n")
    absolute = rows_fingerprint(read_manifest(tmp_path / "data.csv"))
    monkeypatch.chdir(tmp_path)
    assert rows_fingerprint(read_manifest("data.csv")) == rows_fingerprint(read_manifest("./data.csv")) == absolute
    (tmp_path / "data.csv").write_text("text,image,label\na red card,b.png,x\n")
    assert rows_fingerprint(read_manifest("data.csv")) != absolute


@pytest.mark.slow
def test_cv_of_parquet_image_bytes_resumes_after_cache_clear(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MMKERAS_CACHE_DIR", str(tmp_path / "cache" / "features"))
    data, _ = samples_as_parquet(SAMPLES / "train.csv", tmp_path / "data.parquet", 24, hugging_face=False)
    out = tmp_path / "cv"
    args = ["cv", "--data", data, "--folds", "2", "--out", out, "--epochs", "1", "--batch-size", "8", "--json"]
    # The first run in a process of its own, which ends: nothing then holds the images folder.
    subprocess.run([sys.executable, "-c", RUN_CLI, *map(str, args)], check=True, capture_output=True, timeout=600)
    written = (out / "fold-2" / TRAIN_MANIFEST).read_text()
    (out / "fold-2" / "run" / "results" / "test" / "metrics.json").unlink()  # interrupted before its evaluation
    code, stdout, _ = run_cli(capsys, "cache", "clear", "--json")
    assert code == 0 and json.loads(stdout)["parquet_images_removed"]["files"] > 0
    code, stdout, err = run_cli(capsys, *args)
    assert code == 0, err
    assert err.count("finished before") == 1 and len(json.loads(stdout)["per_fold"]) == 2
    # The images were written again from the Parquet file, to the same content-named files.
    assert (out / "fold-2" / TRAIN_MANIFEST).read_text() == written
    # Each fold's predictions name a photo as the user's file does (its row there), not by the file read.
    user_rows = pq.read_table(data).to_pylist()
    for fold in ("fold-1", "fold-2"):
        with (out / fold / "run" / "results" / "test" / "predictions.csv").open(encoding="utf-8") as handle:
            predictions = [prediction for prediction in csv.DictReader(handle) if prediction["image_file"]]
        assert predictions
        for prediction in predictions:
            row = int(prediction["image"].removeprefix("<image bytes of row ").removesuffix(">"))
            assert prediction["text"] == user_rows[row - 1]["text"]
            assert (prediction["manifest"], prediction["line"]) == (str(data.resolve()), str(row))
            assert Path(prediction["image_file"]).name == hashlib.sha256(user_rows[row - 1]["image"]).hexdigest()


def test_fold_manifests_name_each_image_as_the_users_file_writes_it(tmp_path):
    data = write_subset(SAMPLES / "train.csv", tmp_path / "data.csv", 4)
    manifest = read_manifest(data)
    write_manifest(tmp_path / "fold.csv", manifest, manifest.rows, RunConfig(data=str(data)))
    with (tmp_path / "fold.csv").open(encoding="utf-8", newline="") as handle:
        fold_rows = list(csv.DictReader(handle))
    assert list(fold_rows[0]) == ["text", "image", "label", "source_manifest", "source_line", "source_image"]
    assert [row["source_image"] for row in fold_rows] == [row.cells["image"] for row in manifest.rows]
    assert all(Path(row["image"]).is_absolute() for row in fold_rows if row["image"])


# A user's manifest whose rows do not sit on consecutive lines: a blank line, a text over two lines.
USER_CSV = 'text,image,label\na red card,a.png,x\n\n"a text over\ntwo lines",,y\na blue card,b.png,x\nonly a text,,y\n'
USER_JSONL = ('{"text": "a red card", "image": "a.png", "label": "x"}\n\n'
              '{"text": "a text", "image": null, "label": "y"}\n'
              '{"text": "a blue card", "image": "b.png", "label": "x"}\n'
              '{"text": "only a text", "image": "", "label": "y"}\n')


def write_users_manifest(folder: Path, kind: str) -> Path:
    """A small manifest of the user's, as CSV, JSONL or Parquet (images as paths; a.png, b.png written)."""
    (folder / "a.png").write_bytes(photo_bytes((200, 0, 0)))
    (folder / "b.png").write_bytes(photo_bytes((0, 0, 200)))
    if kind == "parquet":
        return write_parquet(folder / "data.parquet", {
            "text": ["a red card", "a text", "a blue card", "only a text"],
            "image": ["a.png", None, "b.png", None], "label": ["x", "y", "x", "y"]})
    path = folder / f"data.{kind}"
    path.write_text(USER_CSV if kind == "csv" else USER_JSONL, encoding="utf-8")
    return path


def row_at(data: Path, line: int) -> tuple[str, str]:
    """The (text, label) of the row the user's file has at `line`, read without mmkeras' reader."""
    if data.suffix == ".parquet":
        row = pq.read_table(data).to_pylist()[line - 1]  # Parquet rows are numbered from 1
        return row["text"], row["label"]
    lines = data.read_text(encoding="utf-8").split("\n")
    if data.suffix == ".jsonl":
        row = json.loads(lines[line - 1])
        return row["text"], row["label"]
    text, _, label = next(csv.reader(io.StringIO("\n".join(lines[line - 1:]))))  # the record starting there
    return text, label


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet"])
def test_fold_manifests_name_each_rows_file_and_line_in_the_users_manifest(tmp_path, kind):
    data = write_users_manifest(tmp_path, kind)
    manifest = read_manifest(data)
    held_out = [manifest.rows[0], *manifest.rows[2:]]  # a fold's rows: their lines there differ from the user's
    write_manifest(tmp_path / "fold.csv", manifest, held_out, RunConfig(data=str(data)))
    fold = read_manifest(tmp_path / "fold.csv")
    places = [fold.where(row) for row in fold.rows]
    assert places == [(data.resolve(), row.line) for row in held_out]
    assert [row.line for row in fold.rows] != [line for _, line in places]
    for row, (_, line) in zip(fold.rows, places):
        assert row_at(data, line) == (row.text, row.label)
    # The lines an error about each row in the user's file names.
    with pytest.raises(UserError) as error:
        read_manifest(data).encode_labels(["nothing"])
    assert str(error.value).startswith(f"{data}: line {manifest.rows[0].line}: unknown label")


def fold_with_bad_images(tmp_path) -> tuple[Path, Manifest]:
    """A user's CSV whose rows on lines 2 and 7 have unreadable images, and a fold of all its rows."""
    data = write_users_manifest(tmp_path, "csv")
    data.write_text(USER_CSV.replace("only a text,,y", "only a text,broken.png,y"), encoding="utf-8")
    (tmp_path / "a.png").write_bytes(b"not a picture")
    (tmp_path / "broken.png").write_bytes(b"not a picture either")
    manifest = read_manifest(data)
    (tmp_path / "fold-1").mkdir()
    write_manifest(tmp_path / "fold-1" / TEST_MANIFEST, manifest, manifest.rows, RunConfig(data=str(data)))
    return data.resolve(), read_manifest(tmp_path / "fold-1" / TEST_MANIFEST)


def test_errors_about_a_folds_rows_name_the_users_file_and_line(tmp_path):
    data, fold = fold_with_bad_images(tmp_path)
    with pytest.raises(UserError) as error:
        fold.validate_images((32, 32), "fail", remember=False)
    message = str(error.value)
    assert message.startswith(f"{data}: 2 bad rows: line 2: cannot read image")
    assert "; line 7: cannot read image" in message and "fold-1" not in message.split(": cannot")[0]
    checked, dropped = fold.validate_images((32, 32), "skip", remember=False)
    assert dropped == 2 and [(row.path, row.line) for row in checked.skipped] == [(data, 2), (data, 7)]
    # Each image as the user's file writes it, not the fold manifest's absolute path.
    assert [row.reason.split(":")[0] for row in checked.skipped] == [
        "cannot read image 'a.png'", "cannot read image 'broken.png'"]
    assert [checked.where(row) for row in checked.rows] == [(data, 4), (data, 6)]
    with pytest.raises(UserError) as error:
        checked.encode_labels(["x"])  # a class the other folds lack
    assert str(error.value) == f"{data}: line 4: unknown label 'y' (known labels: x)"
    known = fold.with_known_labels(["x"], "skip")
    assert [known.where(row) for row in known.rows] == [(data, 2), (data, 6)]
    assert [(row.path, row.line) for row in known.skipped] == [(data, 4), (data, 7)]



@pytest.mark.slow
def test_cv_skips_an_unreadable_image_before_the_split_and_resumes(tmp_path, capsys):
    data = write_users_manifest(tmp_path, "csv")  # usable rows on lines 2, 4, 6 and 7: x, y, x, y
    with data.open("a", encoding="utf-8") as handle:
        handle.write("a broken photo,broken.jpg,y\n")  # line 8
        handle.write("a row without its label,,\n")  # line 9: a bad row to reading, not to its image
    (tmp_path / "broken.jpg").write_bytes(b"not a picture")
    val = tmp_path / "val.csv"
    val.write_text("text,image,label\na red card,a.png,x\nonly a text,,y\nno label,,\nbroken again,broken_val.jpg,x\n",
                   encoding="utf-8")
    (tmp_path / "broken_val.jpg").write_bytes(b"not a picture either")
    out = tmp_path / "cv"
    args = ["cv", "--data", data, "--val", val, "--folds", "2", "--out", out, "--epochs", "1", "--on-bad-row", "skip",
            "--json"]
    code, stdout, err = run_cli(capsys, *args)
    assert code == 0, err  # was: exit 2, the held-out fold's evaluation failing on the row its training skipped
    assert json.loads(stdout)["bad_rows_skipped"] == 2
    assert json.loads(stdout)["val_rows_skipped"] == 2
    assert err.count("broken.jpg") == 1  # named once, at the split, not by each fold's run
    assert err.count("broken_val.jpg") == 1  # was: once by each fold's run, and in no CV_DIR file
    # Named once too: read before TensorFlow, then handed to the split and to every fold (were: 2 and 3 times).
    assert err.count(f"skipped: {data}: line 9: empty label") == 1
    assert err.count(f"skipped: {val}: line 4: empty label") == 1
    with (out / "skipped_rows.csv").open(encoding="utf-8", newline="") as handle:
        skipped_rows = list(csv.DictReader(handle))
    assert [(row["file"], row["line"]) for row in skipped_rows] == [
        (str(data), "9"), (str(data), "8"), (str(val), "4"), (str(val), "5")]
    assert skipped_rows[1]["reason"].startswith("cannot read image 'broken.jpg'")
    # The row is in no fold: each usable row is evaluated once, and predictions.csv holds only those.
    evaluated = []
    for fold in ("fold-1", "fold-2"):
        with (out / fold / "run" / "results" / "test" / "predictions.csv").open(encoding="utf-8") as handle:
            evaluated += [int(prediction["line"]) for prediction in csv.DictReader(handle)]
    assert sorted(evaluated) == [2, 4, 6, 7]
    code, stdout, err = run_cli(capsys, *args[:-1])  # without --json
    assert code == 0 and err.count("finished before") == 2
    assert f"2 bad rows skipped, in no fold, and 2 of --val: {out / 'skipped_rows.csv'}" in stdout

def test_a_fold_written_before_the_source_columns_still_names_its_own_lines(tmp_path):
    data = write_users_manifest(tmp_path, "csv")
    manifest = read_manifest(data)
    old_fold = tmp_path / "fold-1" / TEST_MANIFEST
    old_fold.parent.mkdir()
    write_csv(old_fold, [{"text": row.text or "", "image": "" if row.image is None else str(row.image),
                          "label": row.label} for row in manifest.rows[1:]])
    fold = read_manifest(old_fold)
    assert [fold.where(row) for row in fold.rows] == [(old_fold, 2), (old_fold, 4), (old_fold, 5)]  # a text of 2 lines
    scores = np.tile([[0.9, 0.1]], (3, 1))
    rows = prediction_rows(fold, "image", ["x", "y"], fold.encode_labels(["x", "y"]), scores, scores, scores)
    assert [(row["manifest"], row["line"]) for row in rows] == [(str(old_fold), line) for line in (2, 4, 5)]
    # Its results folder, written before predictions.csv's `manifest` column, is named after the fold's file.
    results = tmp_path / "fold-1" / "run" / "results" / "test"
    written_before = {key: str(value) for key, value in rows[0].items() if key != "manifest"}
    assert "line 2 of test</div>" in sample_card(written_before, results)
    written_now = {**written_before, "manifest": str(data.resolve()), "line": "4"}
    assert "line 4 of data.csv</div>" in sample_card(written_now, results)
