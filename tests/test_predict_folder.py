"""`mmkeras predict --images DIR`: a folder of photos predicted as a manifest listing them would be."""

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mmkeras
from mmkeras.errors import UserError
from tests.helpers.cli import SAMPLES, WITHOUT_TENSORFLOW, run_cli

# The photos of the folder, relative to it, and their caption files' texts (None: no caption file).
PHOTOS = {
    "00001.jpg": "honestly a hyper kind of tile",
    "beach/00002.png": None,
    "beach/day2/00003.bmp": "My poster seems wild to me",
    "beach/day2/00004.png": "TRANQUIL VIBES ONLY",
    "zoo/00005.png": None,
}
PREDICTION_COLUMNS = ["prediction", "label_1", "score_1", "label_2", "score_2", "label_3", "score_3"]


@pytest.fixture
def photos(tmp_path) -> Path:
    """A folder of `PHOTOS` (sample images) in nested folders, with caption files, a hidden photo and folder."""
    folder = tmp_path / "photos"
    for number, (name, caption) in enumerate(PHOTOS.items(), start=1):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(next((SAMPLES / "images" / "test").glob(f"{number:05}.*")), path)
        if caption is not None:
            path.with_suffix(".txt").write_text(f"  {caption}\n", encoding="utf-8")
    (folder / ".thumbnails").mkdir()
    shutil.copy(folder / "00001.jpg", folder / ".thumbnails" / "00001.jpg")
    shutil.copy(folder / "00001.jpg", folder / ".hidden.jpg")
    (folder / "notes.md").write_text("not a photo\n", encoding="utf-8")
    return folder


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def predict_data(bundle: Path, photos: Path, texts: dict[str, str | None], tmp_path: Path) -> list[dict[str, str]]:
    """`predict --data` on a manifest listing `texts`' photos (relative to `photos`) with those texts."""
    manifest = tmp_path / "listed.csv"
    with manifest.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "text"])
        writer.writerows([str(photos / name), text or ""] for name, text in texts.items())
    out = tmp_path / "from-data.csv"
    assert mmkeras.predict_file(bundle, manifest, out, overwrite=True)["predicted"] == len(texts)
    return read_rows(out)


def predictions(rows: list[dict[str, str]]) -> list[list[str]]:
    return [[row[column] for column in PREDICTION_COLUMNS] for row in rows]


def test_images_predicts_every_photo_with_its_caption_as_data_does(tiny_bundle, photos, tmp_path, capsys):
    out = tmp_path / "predictions.csv"
    code, stdout, _ = run_cli(capsys, "predict", tiny_bundle["bundle"], "--images", photos, "--out", out)
    assert code == 0 and stdout.strip() == f"predicted 5 of 5 photos into {out}"
    rows = read_rows(out)
    assert list(rows[0]) == ["image", "text", *PREDICTION_COLUMNS]
    # Sorted by path, nested folders read, hidden ones and other files left out; captions stripped.
    assert [(row["image"], row["text"]) for row in rows] == [(name, text or "") for name, text in PHOTOS.items()]
    assert predictions(rows) == predictions(predict_data(tiny_bundle["bundle"], photos, PHOTOS, tmp_path))


def test_text_is_the_text_of_every_photo_and_caption_files_are_not_read(tiny_bundle, photos, tmp_path):
    (photos / "zoo" / "00005.txt").write_bytes(b"\xff not UTF-8")  # not read: no error
    out = tmp_path / "predictions.csv"
    summary = mmkeras.predict_folder(tiny_bundle["bundle"], photos, out, text="a photo of a tile")
    assert summary == {"rows": 5, "predicted": 5, "bad_rows": 0, "out": str(out), "left_out": []}
    rows = read_rows(out)
    assert {row["text"] for row in rows} == {"a photo of a tile"}
    same_text = dict.fromkeys(PHOTOS, "a photo of a tile")
    assert predictions(rows) == predictions(predict_data(tiny_bundle["bundle"], photos, same_text, tmp_path))
    without_text = tmp_path / "without-text.csv"
    mmkeras.predict_folder(tiny_bundle["bundle"], photos, without_text, text="")  # the photos alone
    rows = read_rows(without_text)
    assert {row["text"] for row in rows} == {""}
    no_texts = dict.fromkeys(PHOTOS)
    assert predictions(rows) == predictions(predict_data(tiny_bundle["bundle"], photos, no_texts, tmp_path))
    with_captions = tmp_path / "with-captions.csv"
    mmkeras.predict_folder(tiny_bundle["bundle"], photos / "beach", with_captions)
    assert [row["image"] for row in read_rows(with_captions)] == ["00002.png", "day2/00003.bmp", "day2/00004.png"]


def test_bad_photos_fail_by_path_or_are_written_with_their_reason(tiny_bundle, photos, tmp_path, capsys):
    (photos / "beach" / "broken.jpg").write_bytes(b"\xff\xd8 cut off")
    (photos / "zoo" / "00005.png").write_bytes(b"")
    out = tmp_path / "predictions.csv"
    code, _, err = run_cli(capsys, "predict", tiny_bundle["bundle"], "--images", photos, "--out", out)
    [error] = [line for line in err.splitlines() if not line.startswith("predicting: ")]  # one line
    assert code == 2 and not out.exists() and error.startswith(f"error: {photos}: 2 bad photos")
    assert "cannot read image 'beach/broken.jpg'" in err and "cannot read image 'zoo/00005.png'" in err
    hint = " (--on-bad-row skip predicts the others and writes bad rows with the reason)"
    assert error.endswith(hint)
    code, _, err = run_cli(capsys, "predict", tiny_bundle["bundle"], "--images", photos / "beach", "--out", out)
    [error] = [line for line in err.splitlines() if not line.startswith("predicting: ")]
    # One bad photo says what skip does too (it said nothing).
    assert code == 2 and error == f"error: {photos / 'beach'}: cannot read image 'broken.jpg': " + error.split(
        "cannot read image 'broken.jpg': ")[1] and error.endswith(hint)
    shutil.copy(photos / "00001.jpg", photos / "zoo" / "00005.png")
    (photos / "zoo" / "00005.txt").write_bytes(b"caf\xe9")  # under fail, a bad caption stops before predicting
    code, stdout, _ = run_cli(capsys, "predict", tiny_bundle["bundle"], "--images", photos, "--out", out,
                              "--on-bad-row", "skip")
    assert code == 0 and "predicted 4 of 6 photos" in stdout and "(2 bad photos written" in stdout
    rows = {row["image"]: row for row in read_rows(out)}
    assert list(rows) == ["00001.jpg", "beach/00002.png", "beach/broken.jpg", "beach/day2/00003.bmp",
                          "beach/day2/00004.png", "zoo/00005.png"]
    assert rows["beach/broken.jpg"]["error"].startswith("cannot read image 'beach/broken.jpg'")
    assert rows["zoo/00005.png"]["error"].startswith("cannot read caption 'zoo/00005.txt'")
    assert all(rows[name]["prediction"] == "" for name in ("beach/broken.jpg", "zoo/00005.png"))
    assert all(row["prediction"] and not row["error"] for name, row in rows.items() if name.startswith("beach/day2"))


def test_one_bad_caption_under_fail_is_one_line_naming_the_caption_file(tiny_bundle, photos, tmp_path):
    (photos / "00001.txt").write_bytes(b"\xff")
    with pytest.raises(UserError) as raised:
        mmkeras.predict_folder(tiny_bundle["bundle"], photos, tmp_path / "p.csv")
    assert str(raised.value) == (f"{photos}: cannot read caption '00001.txt': not UTF-8 text "
                                 "(byte 0xff at position 0); save the caption as UTF-8")


@pytest.mark.parametrize("case, argv, message", [
    ("missing", lambda p, t: ["--images", t / "nope", "--out", t / "p.csv"], "nope: folder not found"),
    ("a file", lambda p, t: ["--images", p / "00001.jpg", "--out", t / "p.csv"], "not a folder of photos"),
    ("empty", lambda p, t: ["--images", t / "empty", "--out", t / "p.csv"], "no photos (.jpg, .jpeg"),
    ("no out", lambda p, t: ["--images", p], "--images needs --out PREDICTIONS.csv"),
    ("with data", lambda p, t: ["--images", p, "--data", t / "x.csv", "--out", t / "p.csv"], "leave out --data"),
    ("with image", lambda p, t: ["--images", p, "--image", p / "00001.jpg", "--out", t / "p.csv"],
     "leave out --image"),
    ("with a column", lambda p, t: ["--images", p, "--text-column", "caption", "--out", t / "p.csv"],
     "leave out --text-column"),
    ("out exists", lambda p, t: ["--images", p, "--out", p / "00001.txt"], "--out exists; pass --overwrite"),
    ("text not UTF-8", lambda p, t: ["--images", p, "--text", "caf\udce9", "--out", t / "p.csv"],
     "--text is not valid UTF-8"),
])
def test_wrong_images_options_are_one_line_and_exit_2(tiny_bundle, photos, tmp_path, capsys, case, argv, message):
    (tmp_path / "empty").mkdir()
    (photos / "00001.txt").write_text("kept\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "predict", tiny_bundle["bundle"], *argv(photos, tmp_path))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert (photos / "00001.txt").read_text(encoding="utf-8") == "kept\n" and not (tmp_path / "p.csv").exists()


def test_heic_photos_left_out_are_named_with_what_to_do(tiny_bundle, photos, tmp_path, capsys):
    # An iPhone dump's HEIC photos were left out in silence: "predicted 5 of 5 photos", the others never named.
    heic = b"\x00\x00\x00\x18ftypheic" + bytes(200)
    for name in ("IMG_0001.HEIC", "zoo/IMG_0002.heic", ".hidden/IMG_0003.HEIC"):
        (photos / name).parent.mkdir(exist_ok=True)
        (photos / name).write_bytes(heic)
    out = tmp_path / "predictions.csv"
    code, stdout, err = run_cli(capsys, "predict", tiny_bundle["bundle"], "--images", photos, "--out", out)
    assert code == 0 and stdout.strip() == f"predicted 5 of 5 photos into {out}"
    assert (f"warning: {photos}: left out 2 HEIC photos (IMG_0001.HEIC, zoo/IMG_0002.heic), which mmkeras cannot "
            "read: convert them to JPEG") in err
    summary = mmkeras.predict_folder(tiny_bundle["bundle"], photos, out, overwrite=True)
    assert summary["left_out"] == ["IMG_0001.HEIC", "zoo/IMG_0002.heic"]
    only_heic = tmp_path / "only-heic"
    only_heic.mkdir()
    (only_heic / "IMG_0001.HEIC").write_bytes(heic)
    with pytest.raises(UserError, match=r"no photos here but 1 HEIC photo \(IMG_0001.HEIC\).* convert it to JPEG"):
        mmkeras.predict_folder(tiny_bundle["bundle"], only_heic, tmp_path / "none.csv")


def test_predict_images_runs_without_tensorflow(tiny_bundle, photos, tmp_path):
    out = tmp_path / "predictions.csv"
    argv = ["predict", tiny_bundle["bundle"], "--images", photos, "--out", out]
    done = subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW, *map(str, argv)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(read_rows(out)) == len(PHOTOS)
