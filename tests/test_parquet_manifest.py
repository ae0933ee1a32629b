"""Parquet manifests: image paths or image bytes in a column, streamed, and used like files everywhere."""

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from mmkeras.cli.app import main
from mmkeras.data import parquet_manifest
from mmkeras.data.manifest import read_manifest
from mmkeras.data.parquet_manifest import embedded_images_folder, embedded_images_usage
from mmkeras.errors import UserError
from mmkeras.preprocessing.image import JPEG_DRAFT_FACTOR, load_image
from tests.helpers.cli import SAMPLES, WITHOUT_TENSORFLOW, run_cli
from tests.helpers.parquet_files import samples_as_parquet, write_parquet


def encoded(pixels: np.ndarray, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=format, **options)
    return buffer.getvalue()


def photo(seed: int, size=(300, 400)) -> np.ndarray:
    """A smooth photo-like image (a JPEG of it is decoded at reduced DCT scale for small targets)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize(size[::-1], Image.Resampling.BICUBIC))


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MMKERAS_CACHE_DIR", str(tmp_path / "cache" / "features"))
    return tmp_path / "cache"


def test_an_image_path_column_reads_like_the_jsonl_of_the_same_rows(tmp_path, own_cache):
    (tmp_path / "a.png").write_bytes(encoded(photo(0), "PNG"))
    rows = {"text": ["a calm card", None, ""], "image": ["a.png", "a.png", None], "label": ["x", "y", "x"]}
    parquet = write_parquet(tmp_path / "m.parquet", {**rows, "notes": [1.5, None, 2.0]})
    records = [dict(zip(rows, cells)) for cells in zip(*rows.values())]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    from_parquet, from_jsonl = (read_manifest(path, on_bad_row="skip") for path in (parquet, tmp_path / "m.jsonl"))
    assert from_parquet.rows == from_jsonl.rows and len(from_parquet.rows) == 2  # rows numbered alike: line 1, 2
    assert [str(row) for row in from_parquet.skipped] == [f"{parquet}: line 3: the row has neither a text nor an image"]
    assert from_parquet.rows[0].cells == {"text": "a calm card", "image": "a.png", "label": "x", "notes": "1.5"}
    assert not embedded_images_folder().exists()  # nothing written for paths


def test_image_bytes_decode_exactly_as_the_files_they_came_from(tmp_path, own_cache):
    jpeg, png = encoded(photo(1), "JPEG", quality=90), encoded(photo(2), "PNG")
    parquet = write_parquet(tmp_path / "m.parquet", {
        "text": ["one", "two", "three"], "image": pa.array([jpeg, png, jpeg], pa.binary()), "label": [0, 1, 0]})
    manifest = read_manifest(parquet)
    assert [row.label for row in manifest.rows] == ["0", "1", "0"]  # class ids, as JSONL numbers
    first, second, third = (row.image for row in manifest.rows)
    assert first == third and first.parent.parent == own_cache / "parquet-images"  # one file per distinct image
    for image, data in ((first, jpeg), (second, png)):
        assert image.read_bytes() == data
        for factor in (None, JPEG_DRAFT_FACTOR):  # the full decode and the reduced DCT scale of new runs
            np.testing.assert_array_equal(load_image(image, (56, 56), jpeg_draft_factor=factor),
                                          load_image(data, (56, 56), jpeg_draft_factor=factor))
    assert load_image(jpeg, (56, 56), jpeg_draft_factor=2).tolist() != load_image(jpeg, (56, 56)).tolist()


def test_hugging_face_image_structs_read_their_bytes_or_else_their_path(tmp_path, own_cache):
    (tmp_path / "on_disk.png").write_bytes(encoded(photo(3), "PNG"))
    jpeg = encoded(photo(4), "JPEG")
    kind = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    images = pa.array([{"bytes": jpeg, "path": "ignored.jpg"}, {"bytes": None, "path": "on_disk.png"}, None], kind)
    parquet = write_parquet(tmp_path / "m.parquet", {"text": ["a", "b", "c"], "image": images, "label": ["x"] * 3})
    first, second, third = read_manifest(parquet).rows
    assert first.image.read_bytes() == jpeg and second.image == tmp_path / "on_disk.png" and third.image is None


def test_rows_are_numbered_across_record_batches_and_row_groups(tmp_path, own_cache, monkeypatch):
    monkeypatch.setattr(parquet_manifest, "BATCH_ROWS", 3)
    texts = [f"row {index}" for index in range(10)]
    labels = ["x"] * 10
    labels[7] = " "
    parquet = write_parquet(tmp_path / "m.parquet", {"text": texts, "image": [None] * 10, "label": labels},
                            row_group_size=4)
    with pytest.raises(UserError, match=r"m\.parquet: line 8: empty label"):
        read_manifest(parquet)
    assert [row.line for row in read_manifest(parquet, on_bad_row="skip").rows] == [1, 2, 3, 4, 5, 6, 7, 9, 10]


def test_a_second_read_writes_nothing_and_image_checks_are_remembered(tmp_path, own_cache):
    images = pa.array([encoded(photo(5), "PNG"), b"not an image"], pa.binary())
    parquet = write_parquet(tmp_path / "m.parquet", {"text": ["a", "b"], "image": images, "label": ["x", "x"]})
    first = read_manifest(parquet)
    stamps = [row.image.stat().st_mtime_ns for row in first.rows]
    second = read_manifest(write_parquet(tmp_path / "again.parquet", {"text": ["a", "b"], "image": images,
                                                                        "label": ["x", "y"]}))
    assert [row.image for row in second.rows] == [row.image for row in first.rows]
    assert [row.image.stat().st_mtime_ns for row in second.rows] == stamps
    checked, dropped = first.validate_images((16, 16), "skip")
    assert dropped == 1 and str(checked.skipped[0]).startswith(
        f"{parquet}: line 2: cannot read image '<image bytes {first.rows[1].image.name[:12]}>': ")
    with pytest.raises(UserError, match="line 2: cannot read image '<image bytes"):
        first.validate_images((16, 16), "fail")
    assert (own_cache / "image_checks.sqlite3").is_file()


def test_feature_caches_of_image_bytes_are_keyed_by_the_bytes_not_the_parquet_file(tmp_path, own_cache):
    from mmkeras.models import build_model
    from mmkeras.models.backbone_split import split_at_frozen_backbones
    from mmkeras.training.feature_cache import cache_features

    images = [encoded(photo(seed, (32, 32)), "PNG") for seed in range(4)]
    texts, labels = [f"card {index}" for index in range(4)], ["a", "b", "a", "b"]
    model, preprocessor = build_model(num_classes=2, texts=texts, seed=0)
    split = split_at_frozen_backbones(model, ("text_backbone", "vision_backbone"))

    def cache(name, data, **extra):
        manifest = read_manifest(write_parquet(tmp_path / name, {"text": texts, "image": data, "label": labels,
                                                                 **extra}))
        return cache_features(split, manifest, ["a", "b"], preprocessor, cache_dir=own_cache, batch_size=4).folder

    first = cache("first.parquet", pa.array(images, pa.binary()))
    # Another file, other columns, Hugging Face structs: the same bytes, the same cache.
    structs = pa.array([{"bytes": data, "path": f"{index}.png"} for index, data in enumerate(images)])
    assert cache("second.parquet", structs, notes=["n"] * 4) == first
    changed = [*images[:3], encoded(photo(9, (32, 32)), "PNG")]
    assert cache("first.parquet", pa.array(changed, pa.binary())) != first  # one image changed: another cache


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        ({"text": ["a"], "label": ["x"]}, r"missing column\(s\) image \(the file's columns are: text, label\)"),
        ({"text": ["a"], "image": [3], "label": ["x"]}, "the column 'image' holds int64; it must hold image paths"),
        ({"text": [1], "image": ["a.png"], "label": ["x"]}, "the column 'text' holds int64; it must hold strings"),
        ({"text": ["a"], "image": ["a.png"], "label": [1.5]}, "the column 'label' holds double; it must hold strings"),
        ({"text": ["a"], "image": pa.array([{"data": b"x"}]), "label": ["x"]}, "the column 'image' holds struct"),
    ],
)
def test_columns_that_are_missing_or_of_another_type_name_the_file(tmp_path, own_cache, columns, expected):
    parquet = write_parquet(tmp_path / "m.parquet", columns)
    with pytest.raises(UserError, match=expected) as raised:
        read_manifest(parquet)
    assert str(raised.value).startswith(str(parquet))


def test_a_file_that_is_not_parquet_or_missing_is_one_error_line(tmp_path, own_cache):
    (tmp_path / "m.parquet").write_text("text,image,label\n")
    with pytest.raises(UserError, match=r"m\.parquet: not a readable Parquet file"):
        read_manifest(tmp_path / "m.parquet")
    with pytest.raises(UserError, match=r"nope\.parquet: manifest not found"):
        read_manifest(tmp_path / "nope.parquet")


def test_without_pyarrow_the_error_says_how_to_install_it(tmp_path, own_cache, monkeypatch):
    parquet = write_parquet(tmp_path / "m.parquet", {"text": ["a"], "image": [None], "label": ["x"]})
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` now raises ImportError
    with pytest.raises(UserError, match=r"m\.parquet: reading a Parquet manifest needs pyarrow: pip install pyarrow"):
        read_manifest(parquet)


def test_the_runtime_imports_pyarrow_only_to_read_a_parquet_file():
    code = "import sys, mmkeras.runtime.batch_predict; print('pyarrow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.strip() == "False"


@pytest.fixture(scope="module")
def parquet_run(tmp_path_factory):
    """A run trained on Parquet manifests holding the samples' image bytes (binary, and Hugging Face structs
    for validation), its float bundle, and the CSV twins of the manifests."""
    folder = tmp_path_factory.mktemp("parquet_run")
    train, train_csv = samples_as_parquet(SAMPLES / "train.csv", folder / "train.parquet", 48, hugging_face=False)
    val, val_csv = samples_as_parquet(SAMPLES / "val.csv", folder / "val.parquet", 24, hugging_face=True)
    run, bundle = folder / "run", folder / "bundle"
    settings = ["--epochs", "1", "--batch-size", "16", "--seed", "1"]
    assert main(["train", "--data", str(train), "--val", str(val), "--out", str(run), *settings]) == 0
    assert main(["export", str(run), "--out", str(bundle), "--quantize", "none"]) == 0
    return {"folder": folder, "run": run, "bundle": bundle, "val": val, "val_csv": val_csv}


@pytest.mark.slow
def test_evaluate_of_a_parquet_manifest_equals_its_csv_twin(parquet_run, capsys):
    figures = []
    for data in (parquet_run["val"], parquet_run["val_csv"]):
        code, out, _ = run_cli(capsys, "evaluate", str(parquet_run["run"]), "--data", str(data), "--json")
        assert code == 0
        figures.append(json.loads(out))
    for key in ("accuracy", "macro_f1", "n"):
        assert figures[0][key] == figures[1][key]


@pytest.mark.slow
def test_predict_data_reads_parquet_without_tensorflow_and_equals_the_csv_twin(parquet_run):
    scores, images = [], []
    for data in (parquet_run["val"], parquet_run["val_csv"]):
        out = parquet_run["folder"] / f"predictions-{data.suffix[1:]}.csv"
        argv = ["predict", parquet_run["bundle"], "--data", data, "--out", out]
        done = subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW, *map(str, argv)], capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        with out.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        scores.append([(row["prediction"], row["score_1"]) for row in rows])
        images.append([row["image"] for row in rows])
    assert len(scores[0]) == 24 and scores[0] == scores[1]
    # The image as each file has it: bytes without a path by row, the CSV's paths as written.
    assert images[0] == [f"<image bytes of row {line}>" if path else "" for line, path in enumerate(images[1], 1)]


@pytest.mark.slow
def test_evaluate_shows_image_bytes_as_the_file_has_them_and_keeps_the_file_read_for_the_report(
    parquet_run, own_cache, capsys
):
    with parquet_run["val_csv"].open(newline="", encoding="utf-8") as handle:
        records = [record for record in csv.DictReader(handle) if record["image"]][:8]
    names = [f"cats/{line:03}.jpg" if line % 2 else None for line in range(1, len(records) + 1)]
    kind = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    structs = pa.array([{"bytes": Path(record["image"]).read_bytes(), "path": name}
                        for record, name in zip(records, names)], kind)
    data = write_parquet(own_cache.parent / "named.parquet", {
        "text": [record["text"] for record in records], "image": structs,
        "label": [record["label"] for record in records]})
    code, out, _ = run_cli(capsys, "evaluate", parquet_run["run"], "--data", data, "--json")
    assert code == 0
    with (Path(json.loads(out)["results_dir"]) / "predictions.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    # What the user gave: the struct's path, else the row; the file read stays beside it for the report.
    assert [row["image"] for row in rows] == [name or f"<image bytes of row {line}>"
                                              for line, name in enumerate(names, 1)]
    assert [Path(row["image_file"]).read_bytes() for row in rows] == [Path(record["image"]).read_bytes()
                                                                      for record in records]
    assert all(Path(row["image_file"]).parent.parent == embedded_images_folder() for row in rows)
    # A CSV manifest's rows name their files in both columns, as before.
    code, out, _ = run_cli(capsys, "evaluate", parquet_run["run"], "--data", parquet_run["val_csv"], "--json")
    with (Path(json.loads(out)["results_dir"]) / "predictions.csv").open(newline="", encoding="utf-8") as handle:
        first = next(csv.DictReader(handle))
    assert first["image"] == first["image_file"] == records[0]["image"]


def test_rows_echo_image_bytes_as_the_file_has_them_not_as_the_file_written(tmp_path, own_cache):
    jpeg, png = encoded(photo(6), "JPEG"), encoded(photo(7), "PNG")
    kind = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    structs = pa.array([{"bytes": jpeg, "path": "cats/001.jpg"}, {"bytes": png, "path": None}], kind)
    binary = pa.array([jpeg, png], pa.binary())
    for images, shown in ((structs, ["cats/001.jpg", "<image bytes of row 2>"]),
                          (binary, ["<image bytes of row 1>", "<image bytes of row 2>"])):
        parquet = write_parquet(tmp_path / "m.parquet", {"text": ["a", "b"], "image": images, "label": ["x", "y"]})
        rows = read_manifest(parquet).rows
        assert [row.cells["image"] for row in rows] == shown  # what predict --data copies to its output
        assert [row.image.read_bytes() for row in rows] == [jpeg, png]  # what is read: the files written
    (tmp_path / "a.png").write_bytes(png)
    paths = write_parquet(tmp_path / "p.parquet", {"text": ["a"], "image": ["a.png"], "label": ["x"]})
    assert read_manifest(paths).rows[0].cells["image"] == "a.png"  # paths as written, unchanged


def read_in_another_process(manifest: Path):
    """Read `manifest` in a process that ends: this one then holds no lock on the images folder."""
    code = "import sys; from mmkeras.data.manifest import read_manifest; read_manifest(sys.argv[1])"
    subprocess.run([sys.executable, "-c", code, str(manifest)], check=True, timeout=120)


def test_cache_list_and_clear_cover_the_parquet_images_and_nothing_else(tmp_path, own_cache, capsys):
    jpeg, png = encoded(photo(8), "JPEG"), encoded(photo(9), "PNG")
    kind = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    images = pa.array([{"bytes": jpeg, "path": "a.jpg"}, {"bytes": png, "path": None}, {"bytes": jpeg, "path": None}],
                      kind)
    parquet = write_parquet(tmp_path / "m.parquet", {"text": ["a", "b", "c"], "image": images, "label": ["x"] * 3})
    code, out, _ = run_cli(capsys, "cache", "list", "--json")
    assert code == 0 and json.loads(out)["parquet_images"] is None
    read_in_another_process(parquet)
    (own_cache / "features" / "a-feature-cache").mkdir(parents=True)
    (own_cache / "notes.txt").write_text("the user's own")
    code, out, _ = run_cli(capsys, "cache", "list", "--json")
    listed = json.loads(out)["parquet_images"]
    assert code == 0 and (listed["files"], listed["bytes"]) == (2, len(jpeg) + len(png))
    assert listed["folder"] == str(embedded_images_folder())
    code, out, _ = run_cli(capsys, "cache", "list")
    assert f"Parquet images: 2 files, {(len(jpeg) + len(png)) / 1e3:.1f} KB in {embedded_images_folder()}" in out
    for argv in (["--older-than", "1"], ["--cache-dir", str(tmp_path / "other")]):  # used today; another folder
        code, out, _ = run_cli(capsys, "cache", "clear", *argv, "--json")
        assert code == 0 and json.loads(out)["parquet_images_removed"] is None and embedded_images_folder().is_dir()
    code, out, _ = run_cli(capsys, "cache", "clear", "--json")
    cleared = json.loads(out)
    assert code == 0 and cleared["parquet_images_removed"]["files"] == 2 and not embedded_images_folder().exists()
    assert cleared["bytes_freed"] == len(jpeg) + len(png) and cleared["removed"] == ["a-feature-cache"]
    assert (own_cache / "notes.txt").read_text() == "the user's own"
    first = read_manifest(parquet).rows[0]  # the next read writes the images again
    assert first.image.read_bytes() == jpeg


def test_clear_keeps_the_images_while_a_running_process_reads_them(tmp_path, own_cache):
    parquet = write_parquet(tmp_path / "m.parquet", {
        "text": ["a"], "image": pa.array([encoded(photo(10), "PNG")], pa.binary()), "label": ["x"]})
    rows = read_manifest(parquet).rows  # this process now names the files: it holds the folder's shared lock
    assert parquet_manifest.clear_embedded_images() is None
    assert rows[0].image.is_file()
    with pytest.raises(UserError, match="--older-than must be at least 0 days"):
        parquet_manifest.clear_embedded_images(older_than_days=-1)


@pytest.mark.slow
def test_training_after_cache_clear_writes_the_images_again(tmp_path, own_cache, capsys):
    train, _ = samples_as_parquet(SAMPLES / "train.csv", tmp_path / "train.parquet", 16, hugging_face=True)
    read_in_another_process(train)
    written = embedded_images_usage().files
    code, out, _ = run_cli(capsys, "cache", "clear", "--json")
    assert code == 0 and json.loads(out)["parquet_images_removed"]["files"] == written
    settings = ["--epochs", "1", "--batch-size", "8", "--seed", "1"]
    assert main(["train", "--data", str(train), "--out", str(tmp_path / "run"), *settings]) == 0
    assert embedded_images_usage().files == written
