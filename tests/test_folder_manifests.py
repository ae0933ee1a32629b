"""`mmkeras manifest`: a folder of photos (caption files or imagefolder metadata) to train/val/test manifests."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from mmkeras.cli.app import main
from mmkeras.data.folder_manifests import folder_manifests
from mmkeras.data.manifest import read_manifest
from mmkeras.errors import UserError
from tests.helpers.cli import WITHOUT_TENSORFLOW, run_cli
from tests.helpers.parquet_files import write_parquet

# Photos per label of the caption folder: "bird" has too few to give val and test one each and keep one to train.
PHOTOS_PER_LABEL = {"bird": 2, "cat": 10, "dog": 10}


def write_photo(path: Path, shade: int = 0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (shade, 100, 200)).save(path)


@pytest.fixture
def caption_folder(tmp_path) -> tuple[Path, dict[Path, str | None]]:
    """Class folders of tiny PNGs; the expected text of each photo (odd photos have a caption file)."""
    folder = tmp_path / "photos"
    texts = {}
    for label, count in PHOTOS_PER_LABEL.items():
        for number in range(count):
            photo = folder / label / f"{number:02d}.png"
            write_photo(photo, number * 20)
            texts[photo] = None
            if number % 2:
                texts[photo] = f"a {label}, photo {number}"
                photo.with_suffix(".txt").write_text(f"  {texts[photo]}\n", encoding="utf-8")
    (folder / "cat" / "01.txt").write_text(" \n", encoding="utf-8")  # an empty caption: a missing text
    texts[folder / "cat" / "01.png"] = None
    (folder / "dog" / "03.txt").write_bytes(b"\xef\xbb\xbfa dog, photo 3")  # a BOM is allowed
    (folder / ".thumbnails").mkdir()
    write_photo(folder / ".thumbnails" / "cat-00.png")  # hidden: not a photo of the set
    return folder, texts


def rows_of(manifest_path: Path) -> list[tuple]:
    """(resolved image, text, label) per row of a manifest, as training reads it."""
    return [(row.image.resolve(), row.text, row.label) for row in read_manifest(manifest_path).rows]


def test_caption_folders_give_stratified_manifests_with_their_texts(caption_folder, tmp_path):
    folder, texts = caption_folder
    written = folder_manifests(folder, tmp_path / "manifests")

    rows = {split: rows_of(path) for split, path in written.manifests.items()}
    every_row = [row for split_rows in rows.values() for row in split_rows]
    assert sorted(every_row) == sorted((photo.resolve(), text, photo.parent.name) for photo, text in texts.items())
    labels = {split: sorted(label for _, _, label in split_rows) for split, split_rows in rows.items()}
    assert labels == {
        "train": ["bird"] * 2 + ["cat"] * 8 + ["dog"] * 8, "val": ["cat", "dog"], "test": ["cat", "dog"],
    }
    assert written.counts == {"train": {"bird": 2, "cat": 8, "dog": 8}, "val": {"cat": 1, "dog": 1},
                              "test": {"cat": 1, "dog": 1}}
    assert written.only_in_train == {"bird": 2}
    assert written.without_text == sum(text is None for text in texts.values()) == 12
    assert written.texts_from == "caption files"


def test_image_paths_are_relative_so_photos_and_manifests_move_together(caption_folder, tmp_path):
    folder, _ = caption_folder
    folder_manifests(folder, tmp_path / "manifests", val=0, test=0)
    assert (tmp_path / "manifests" / "train.csv").read_text(encoding="utf-8").splitlines()[1].startswith(
        "../photos/bird/00.png,,bird"
    )
    moved = tmp_path / "moved"
    for name in ("photos", "manifests"):
        shutil.move(tmp_path / name, moved / name)
    rows = read_manifest(moved / "manifests" / "train.csv").rows
    assert len(rows) == 22 and all(row.image.is_file() and moved in row.image.resolve().parents for row in rows)


def test_the_split_depends_only_on_the_seed(caption_folder, tmp_path):
    folder, _ = caption_folder
    first = folder_manifests(folder, tmp_path / "first", seed=3)
    again = folder_manifests(folder, tmp_path / "again", seed=3)
    other = folder_manifests(folder, tmp_path / "other", seed=4)
    val = {name: (result.manifests["val"]).read_text() for name, result in
           (("first", first), ("again", again), ("other", other))}
    assert val["first"] == val["again"] != val["other"]


def test_no_val_and_no_test_write_only_train(caption_folder, tmp_path):
    folder, texts = caption_folder
    written = folder_manifests(folder, tmp_path / "manifests", val=0, test=0)
    assert list(written.manifests) == ["train"] and written.only_in_train == {}
    assert sorted(path.name for path in (tmp_path / "manifests").iterdir()) == ["train.csv"]
    assert len(rows_of(written.manifests["train"])) == len(texts)


def test_imagefolder_metadata_jsonl_labels_from_the_class_folders(tmp_path):
    folder = tmp_path / "photos"
    lines = []
    for label in ("cat", "dog"):
        for number in range(5):
            write_photo(folder / label / f"{number}.png", number)
            text = None if number == 0 else f"{label} {number}"
            lines.append(json.dumps({"file_name": f"{label}/{number}.png", "caption": text, "width": 8}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")

    written = folder_manifests(folder, folder, val=0.2, test=0, text_column="caption")

    rows = rows_of(written.manifests["train"]) + rows_of(written.manifests["val"])
    assert sorted((image.parent.name, image.name, text, label) for image, text, label in rows) == sorted(
        (label, f"{number}.png", None if number == 0 else f"{label} {number}", label)
        for label in ("cat", "dog") for number in range(5)
    )
    assert written.counts["val"] == {"cat": 1, "dog": 1} and written.without_text == 2
    assert written.texts_from == str(folder / "metadata.jsonl")


def test_imagefolder_metadata_csv_in_a_folder_with_a_label_column(tmp_path):
    folder = tmp_path / "photos"
    rows = ["file_name,text,label"]
    for number in range(6):
        write_photo(folder / "shots" / f"{number}.png", number)
        rows.append(f"{number}.png,shot {number},{'day' if number < 3 else 'night'}")
    (folder / "shots" / "metadata.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")

    written = folder_manifests(folder, tmp_path / "manifests", val=0, test=0)

    assert rows_of(written.manifests["train"]) == [
        ((folder / "shots" / f"{number}.png").resolve(), f"shot {number}", "day" if number < 3 else "night")
        for number in range(6)
    ]


def test_imagefolder_metadata_parquet_is_read_like_the_csv(tmp_path):
    folder = tmp_path / "photos"
    for number in range(6):
        write_photo(folder / "shots" / f"{number}.png", number)
    write_parquet(folder / "shots" / "metadata.parquet", {
        "file_name": [f"{number}.png" for number in range(6)],
        "text": [None if number == 0 else f"shot {number}" for number in range(6)],
        "label": ["day" if number < 3 else "night" for number in range(6)],
    })

    written = folder_manifests(folder, tmp_path / "manifests", val=0, test=0)

    assert rows_of(written.manifests["train"]) == [
        ((folder / "shots" / f"{number}.png").resolve(), None if number == 0 else f"shot {number}",
         "day" if number < 3 else "night")
        for number in range(6)
    ]
    assert written.texts_from == str(folder / "shots" / "metadata.parquet") and written.without_text == 1


def test_a_metadata_file_at_the_top_lists_the_photos_of_the_split_folders(tmp_path, capsys):
    folder = tmp_path / "photos"
    lines = []
    for split, count in (("train", 3), ("Validation", 1), ("test", 1)):
        for label in ("cat", "dog"):
            for number in range(count):
                write_photo(folder / split / label / f"{number}.png", number)
                lines.append(json.dumps({"file_name": f"{split}/{label}/{number}.png", "text": f"{split} {label}"}))
    (folder / "metadata.jsonl").write_text("\n".join(lines), encoding="utf-8")

    written = folder_manifests(folder, tmp_path / "manifests")

    assert written.split_folders == {split: folder / name for split, name in
                                     (("train", "train"), ("val", "Validation"), ("test", "test"))}
    assert written.counts == {"train": {"cat": 3, "dog": 3}, "val": {"cat": 1, "dog": 1}, "test": {"cat": 1, "dog": 1}}
    assert rows_of(written.manifests["val"]) == [
        ((folder / "Validation" / label / "0.png").resolve(), f"Validation {label}", label) for label in ("cat", "dog")
    ]
    assert written.texts_from == str(folder / "metadata.jsonl")
    code, out, _ = run_cli(capsys, "manifest", folder, "--out", tmp_path / "cli")
    assert code == 0 and f"texts from {folder / 'metadata.jsonl'}" in out


def test_labels_that_differ_only_in_case_are_refused_before_anything_is_written(tmp_path, capsys):
    folders = tmp_path / "photos"
    for photo in ("Cat/1.png", "cat/2.png", "dog/1.png"):
        write_photo(folders / photo)
    metadata = tmp_path / "metadata"
    for split, label in (("train", "Cat"), ("validation", "cat")):
        for number in range(2):
            write_photo(metadata / split / f"{number}.png")
        (metadata / split / "metadata.csv").write_text(f"file_name,text,label\n0.png,a,{label}\n1.png,b,dog\n",
                                                      encoding="utf-8")
    for folder, spellings in (
        (folders, f"the labels 'Cat' ({folders / 'Cat'}/) and 'cat' ({folders / 'cat'}/) differ only in case"),
        (metadata, f"the labels 'Cat' ({metadata / 'train' / 'metadata.csv'}: line 2) and 'cat' "
                   f"({metadata / 'validation' / 'metadata.csv'}: line 2) differ only in case"),
    ):
        code, out, err = run_cli(capsys, "manifest", folder, "--out", tmp_path / "manifests")
        assert code == 2 and err.count("\n") == 1 and spellings in err, err
        assert not (tmp_path / "manifests").exists()


def test_split_folders_are_kept_and_a_missing_split_is_made_from_train(caption_folder, tmp_path, capsys):
    folder, texts = caption_folder
    split_photos = tmp_path / "split-photos"
    shutil.copytree(folder, split_photos / "train")
    for label in ("cat", "dog"):
        write_photo(split_photos / "Test" / label / "held-out.png")  # imagefolder's split names, in any case
    (split_photos / "Test" / "dog" / "held-out.txt").write_text("a dog held out", encoding="utf-8")

    written = folder_manifests(split_photos, tmp_path / "manifests", val=0.2, test=0.5)
    code, out, _ = run_cli(capsys, "manifest", split_photos, "--out", tmp_path / "cli", "--val", "0.2")
    assert code == 0 and f"split folders kept as they are: train from {split_photos / 'train'}, test from " \
        f"{split_photos / 'Test'}" in out

    assert written.split_folders == {"train": split_photos / "train", "test": split_photos / "Test"}
    assert rows_of(written.manifests["test"]) == [
        ((split_photos / "Test" / "cat" / "held-out.png").resolve(), None, "cat"),
        ((split_photos / "Test" / "dog" / "held-out.png").resolve(), "a dog held out", "dog"),
    ]
    # --test 0.5 is not used: the Test/ folder is the test split. Val is made from train/ (bird: 1 of its 2 photos).
    assert written.counts["val"] == {"bird": 1, "cat": 2, "dog": 2}
    assert written.counts["train"] == {"bird": 1, "cat": 8, "dog": 8} and written.only_in_train == {}
    trained = rows_of(written.manifests["train"]) + rows_of(written.manifests["val"])
    assert sorted(trained) == sorted(
        ((split_photos / "train" / photo.relative_to(folder)).resolve(), text, photo.parent.name)
        for photo, text in texts.items()
    )


def test_imagefolder_metadata_in_each_split_folder(tmp_path):
    folder = tmp_path / "photos"
    for split, count in (("train", 4), ("validation", 1)):
        lines = []
        for number in range(count * 2):
            write_photo(folder / split / f"{number}.png", number)
            lines.append(json.dumps({"file_name": f"{number}.png", "text": f"{split} {number}",
                                     "label": ["day", "night"][number % 2]}))
        (folder / split / "metadata.jsonl").write_text("\n".join(lines), encoding="utf-8")

    written = folder_manifests(folder, tmp_path / "manifests")

    assert written.counts == {"train": {"day": 3, "night": 3}, "val": {"day": 1, "night": 1},
                              "test": {"day": 1, "night": 1}}
    assert rows_of(written.manifests["val"]) == [
        ((folder / "validation" / "0.png").resolve(), "validation 0", "day"),
        ((folder / "validation" / "1.png").resolve(), "validation 1", "night"),
    ]
    assert written.texts_from == f"{folder / 'train' / 'metadata.jsonl'}, {folder / 'validation' / 'metadata.jsonl'}"


def broken_folders(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Folders a user may give by mistake: each one's folder and the words its error must hold."""
    cases = {}

    def case(name, reason, *photos):
        folder = tmp_path / name
        folder.mkdir()
        for photo in photos:
            write_photo(folder / photo)
        cases[name] = (folder, reason)
        return folder

    case("empty", "no photos (.jpg")
    (tmp_path / "empty" / "notes.txt").write_text("no photos here")
    case("one-label", "every photo has the label 'cat'", "cat/1.png", "cat/2.png")
    case("flat", "the photos lie in the folder itself", "1.png", "2.png")
    loose = case("loose-photo", "loose.png: a photo beside the label folders", "cat/1.png", "dog/1.png", "loose.png")
    assert (loose / "loose.png").is_file()
    latin = case("latin-1-caption", "cat/1.txt: not UTF-8 text (byte 0xe9", "cat/1.png", "dog/1.png")
    (latin / "cat" / "1.txt").write_bytes("caf\xe9".encode("latin-1"))
    case("no-train-split", "split folders (test/, validation/) but none of train", "validation/cat/1.png",
         "test/cat/1.png")
    case("two-val-splits", "two folders of the val split: dev/ and val/", "train/cat/1.png", "dev/cat/1.png",
         "val/cat/1.png")
    case("outside-the-splits", "outside-the-splits/extra/1.png: outside the split folders (train/, test/)",
         "train/cat/1.png", "train/dog/1.png", "test/cat/1.png", "extra/1.png")
    case("untrained-test-label", "test/bird/1.png: the label 'bird' of this test photo has no train photos",
         "train/cat/1.png", "train/dog/1.png", "test/bird/1.png")
    gone = case("missing-photo", "metadata.csv: line 3: photo not found", "cat/1.png", "dog/1.png")
    (gone / "metadata.csv").write_text("file_name,text\ncat/1.png,a cat\ndog/2.png,a dog\n", encoding="utf-8")
    unlisted = case("unlisted-photo", "dog/1.png: no row in", "cat/1.png", "dog/1.png")
    (unlisted / "metadata.csv").write_text("file_name,text\ncat/1.png,a cat\n", encoding="utf-8")
    nameless = case("no-text-column", "missing column(s) text", "cat/1.png", "dog/1.png")
    (nameless / "metadata.csv").write_text("file_name,caption\ncat/1.png,a\ndog/1.png,b\n", encoding="utf-8")
    two_formats = case("two-metadata-formats", "two-metadata-formats/metadata.parquet: a second metadata file "
                       "beside metadata.csv", "cat/1.png", "dog/1.png")
    (two_formats / "metadata.csv").write_text("file_name,text\ncat/1.png,a\ndog/1.png,b\n", encoding="utf-8")
    write_parquet(two_formats / "metadata.parquet", {"file_name": ["cat/1.png", "dog/1.png"], "text": ["a", "b"]})
    # A metadata file at the top of split folders: what it cannot list.
    split_photos = ("train/cat/1.png", "train/dog/1.png", "test/cat/1.png")
    escaping = case("file-name-outside-the-folder", "metadata.csv: line 5: file_name ../elsewhere.png points outside",
                    *split_photos)
    write_photo(tmp_path / "elsewhere.png")
    (escaping / "metadata.csv").write_text(
        "file_name,text\n" + "".join(f"{photo},a\n" for photo in split_photos) + "../elsewhere.png,b\n")
    beside = case("file-name-beside-the-splits", "metadata.csv: line 5: file_name notes.txt is outside the split "
                  "folders (train/, test/)", *split_photos)
    (beside / "notes.txt").write_text("not a photo")
    (beside / "metadata.csv").write_text(
        "file_name,text\n" + "".join(f"{photo},a\n" for photo in split_photos) + "notes.txt,b\n")
    twice = tmp_path / "listed-twice"
    case("listed-twice", f"train/metadata.csv: line 2: {twice / 'train' / 'cat' / '1.png'} is listed twice (first: "
         f"{twice / 'metadata.csv'}: line 2)", *split_photos)
    (twice / "metadata.csv").write_text("file_name,text\n" + "".join(f"{photo},a\n" for photo in split_photos))
    (twice / "train" / "metadata.csv").write_text("file_name,text\ncat/1.png,again\n")
    as_bytes = case("file-name-as-bytes", "metadata.parquet: line 1: file_name holds image bytes, not a path",
                    "cat/1.png", "dog/1.png")
    write_parquet(as_bytes / "metadata.parquet", {"file_name": [(as_bytes / "cat" / "1.png").read_bytes()],
                                                  "text": ["a"]})
    no_row = case("split-photo-without-a-row", "test/cat/1.png: no row in", *split_photos)
    (no_row / "metadata.csv").write_text("file_name,text\n" + "".join(f"{photo},a\n" for photo in split_photos[:2]))
    return cases


def test_mistakes_in_the_folder_are_one_line_naming_the_file_and_exit_2(tmp_path, capsys):
    for name, (folder, reason) in broken_folders(tmp_path).items():
        code, out, err = run_cli(capsys, "manifest", folder, "--out", tmp_path / f"{name}-manifests")
        assert code == 2, name
        assert err.startswith("error: ") and err.count("\n") == 1 and reason in err, (name, err)
        assert out == "" and not (tmp_path / f"{name}-manifests").exists(), name


def test_existing_manifests_are_kept_unless_overwrite(caption_folder, tmp_path, capsys):
    folder, _ = caption_folder
    out = tmp_path / "manifests"
    out.mkdir()
    (out / "test.csv").write_text("the user's own test set\n")

    code, _, err = run_cli(capsys, "manifest", folder, "--out", out)
    assert code == 2 and f"{out / 'test.csv'}: the manifest exists; pass --overwrite" in err
    assert sorted(path.name for path in out.iterdir()) == ["test.csv"]
    assert (out / "test.csv").read_text() == "the user's own test set\n"

    code, out_text, _ = run_cli(capsys, "manifest", folder, "--out", out, "--overwrite", "--json")
    assert code == 0 and json.loads(out_text)["counts"]["test"] == {"cat": 1, "dog": 1}
    assert rows_of(out / "test.csv")


def test_the_summary_counts_photos_per_label_and_split(caption_folder, tmp_path, capsys):
    folder, _ = caption_folder
    code, out, _ = run_cli(capsys, "manifest", folder, "--out", tmp_path / "manifests")
    assert code == 0
    lines = out.splitlines()
    assert [line.split() for line in lines[1:5]] == [
        ["label", "train", "val", "test"], ["bird", "2", "0", "0"], ["cat", "8", "1", "1"], ["dog", "8", "1", "1"],
    ]
    assert lines[5].startswith("12 photos without a text")
    assert lines[6] == "too few photos to split, all in train: bird (2)"


@pytest.mark.parametrize("shares", [("--val", "1"), ("--val", "0.5", "--test", "0.5")])
def test_shares_that_leave_nothing_to_train_on_are_refused(caption_folder, tmp_path, capsys, shares):
    folder, _ = caption_folder
    code, _, err = run_cli(capsys, "manifest", folder, "--out", tmp_path / "manifests", *shares)
    assert code == 2 and "--val" in err
    with pytest.raises(UserError, match="leave no photos to train on"):
        folder_manifests(folder, tmp_path / "manifests", val=0.5, test=0.5)


def test_a_folder_given_as_a_manifest_names_the_command(caption_folder, tmp_path, capsys):
    folder, _ = caption_folder
    code, _, err = run_cli(capsys, "train", "--data", folder, "--out", tmp_path / "run")
    assert code == 2 and f"--data must be a manifest file (.csv, .jsonl or .parquet), not a folder; " \
        f"mmkeras manifest {folder} --out DIR writes them" in err


def test_the_command_runs_without_tensorflow(caption_folder, tmp_path):
    folder, _ = caption_folder
    argv = ["manifest", str(folder), "--out", str(tmp_path / "manifests"), "--json"]
    done = subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW, *argv], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["counts"]["val"] == {"cat": 1, "dog": 1}


@pytest.mark.slow
def test_the_manifests_train(caption_folder, tmp_path):
    folder, _ = caption_folder
    written = folder_manifests(folder, tmp_path / "manifests", val=0.2, test=0)
    code = main(["train", "--data", str(written.manifests["train"]), "--val", str(written.manifests["val"]),
                 "--out", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "8", "--no-deterministic"])
    assert code == 0


def test_heic_photos_left_out_are_named_and_a_folder_of_only_heic_is_refused(caption_folder, tmp_path, capsys):
    # A phone dump's HEIC photos were left out of the manifests without a word.
    folder, _ = caption_folder
    heic = b"\x00\x00\x00\x18ftypheic" + bytes(200)
    for name in ("cat/IMG_0001.HEIC", "dog/IMG_0002.heic", ".thumbnails/IMG_0003.HEIC"):
        (folder / name).write_bytes(heic)
    code, out, err = run_cli(capsys, "manifest", folder, "--out", tmp_path / "manifests", "--json")
    assert code == 0 and json.loads(out)["left_out"] == ["cat/IMG_0001.HEIC", "dog/IMG_0002.heic"]
    assert (f"warning: {folder}: left out 2 HEIC photos (cat/IMG_0001.HEIC, dog/IMG_0002.heic), which mmkeras "
            "cannot read: convert them to JPEG") in err
    only_heic = tmp_path / "only-heic"
    (only_heic / "cat").mkdir(parents=True)
    (only_heic / "cat" / "IMG_0001.HEIC").write_bytes(heic)
    code, out, err = run_cli(capsys, "manifest", only_heic, "--out", tmp_path / "none")
    assert code == 2 and out == "" and err.count("\n") == 1 and not (tmp_path / "none").exists()
    assert "no photos here but 1 HEIC photo (cat/IMG_0001.HEIC), which mmkeras cannot read: convert it to JPEG" in err
