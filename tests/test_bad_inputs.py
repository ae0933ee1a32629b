"""A corpus of bad inputs a user can hand the CLI: each is exit code 2, one `error:` line, and no file changed.

Every case builds its bad input in a fresh workspace (copies of one tiny run
and one float bundle, trained and exported once for the module), snapshots
the workspace and the shared fixtures (every path, and each file's size and
modification time), runs `main([...])` in-process and compares. Status lines
("loading TensorFlow") may come before the error line; nothing may follow it,
and no traceback or internal error may appear.
"""

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmkeras.cli.app import main
from mmkeras.folder_lock import folder_lock
from tests.helpers.cli import SAMPLES, write_subset

HEADER = "text,image,label\n"


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    """A 32-row manifest, a run trained on it for 1 epoch and its float bundle (about 20 s)."""
    root = tmp_path_factory.mktemp("fixtures")
    train = write_subset(SAMPLES / "train.csv", root / "train.csv", 32)
    assert main(["train", "--data", str(train), "--out", str(root / "run"), "--epochs", "1", "--batch-size", "16"]) == 0
    assert main(["export", str(root / "run"), "--out", str(root / "bundle")]) == 0
    image = next(line.split(",")[1] for line in train.read_text(encoding="utf-8").splitlines()[1:] if ".jpg" in line)
    label = train.read_text(encoding="utf-8").splitlines()[1].rsplit(",", 1)[1]
    return {"root": root, "train": train, "run": root / "run", "bundle": root / "bundle", "image": image,
            "label": label}


def snapshot(*folders: Path) -> dict:
    """Every path under `folders` (folders included), with the size and modification time of each file.

    A folder's own modification time is left out: the lock file `train` and `export` hold beside `--out`
    while they work is created and removed there.
    """
    state = {}
    for folder in folders:
        for path in [folder, *folder.rglob("*")]:
            info = path.lstat()
            state[str(path)] = None if path.is_dir() else (info.st_size, info.st_mtime_ns)
    return state


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return path


def manifest(ws: Path, rows: str, name: str = "m.csv") -> str:
    return str(write(ws / name, HEADER + rows))


def copy_of(source: Path, ws: Path) -> Path:
    return Path(shutil.copytree(source, ws / source.name))


def edited_json(folder: Path, name: str, **changes) -> Path:
    path = folder / name
    values = json.loads(path.read_text(encoding="utf-8"))
    values.update(changes)
    path.write_text(json.dumps(values), encoding="utf-8")
    return folder


def train(data, ws: Path, *extra) -> list:
    return ["train", "--data", data, "--out", ws / "out", *extra]


def evaluate_bundle(fx, ws: Path, rows: str) -> list:
    return ["evaluate", fx["bundle"], "--data", manifest(ws, rows)]


def parquet(ws: Path, columns: dict) -> Path:
    path = ws / "m.parquet"
    pq.write_table(pa.table(columns), path)
    return path


def image_file(ws: Path, content: bytes, name: str = "bad.png") -> Path:
    return write(ws / name, content)


def big_png(ws: Path) -> Path:
    path = ws / "big.png"
    Image.new("1", (7000, 6000)).save(path)  # 42 megapixels in a few kilobytes
    return path


def pipe(ws: Path) -> Path:
    os.mkfifo(ws / "pipe.png")
    return ws / "pipe.png"


def broken_model(folder: Path, content: bytes) -> Path:
    (folder / "model.tflite").write_bytes(content)
    return folder


def truncated(path: Path, keep: int) -> bytes:
    return path.read_bytes()[:keep]


# A JSON "\u0000" in an image path: os.stat raises ValueError on it (found by tests/test_fuzz.py).
NUL_IN_IMAGE = '{"text": "a", "image": "a\\u0000.png", "label": "x"}\n{"text": "b", "image": null, "label": "y"}\n'

# (case id, builder(fixtures, workspace) -> argv, words the error line must hold)
CASES = [
    # manifests
    ("missing-manifest", lambda fx, ws: train(ws / "nope.csv", ws), "manifest not found"),
    ("manifest-is-a-folder", lambda fx, ws: train(ws, ws), "not a folder"),
    ("manifest-unknown-suffix", lambda fx, ws: train(write(ws / "m.txt", HEADER), ws), "unknown manifest format"),
    ("manifest-empty", lambda fx, ws: train(write(ws / "m.csv", ""), ws), "empty file"),
    ("manifest-missing-column", lambda fx, ws: train(write(ws / "m.csv", "text,label\na,b\n"), ws), "missing column"),
    ("manifest-repeated-column", lambda fx, ws: train(write(ws / "m.csv", "text,image,label,text\n"), ws), "repeats"),
    ("manifest-not-utf8", lambda fx, ws: train(write(ws / "m.csv", (HEADER + "caf\xe9,,a\n").encode("latin-1")), ws),
     "not UTF-8"),
    ("manifest-unclosed-quote", lambda fx, ws: train(manifest(ws, 'a,,x\n"b,,y\nc,,z\n'), ws), "invalid CSV"),
    ("manifest-cell-count", lambda fx, ws: train(manifest(ws, "a,,x\nb,y\n"), ws), "expected 3 cells"),
    ("manifest-empty-label", lambda fx, ws: train(manifest(ws, "a,,x\nb,, \n"), ws), "empty label"),
    ("manifest-no-modality", lambda fx, ws: train(manifest(ws, "a,,x\n,,y\n"), ws), "neither a text nor an image"),
    ("manifest-label-case", lambda fx, ws: train(manifest(ws, "a,,cat\nb,,Cat\n"), ws), "differ only in case"),
    ("manifest-no-rows", lambda fx, ws: train(manifest(ws, ""), ws), "no rows"),
    ("jsonl-broken-line", lambda fx, ws: train(write(ws / "m.jsonl", '{"text": "a",\n'), ws), "invalid JSON"),
    ("jsonl-array", lambda fx, ws: train(write(ws / "m.jsonl", "[1, 2]\n"), ws), "expected a JSON object"),
    ("jsonl-surrogate", lambda fx, ws: train(write(ws / "m.jsonl", '{"text": "\\udcff", "image": "", "label": 1}'), ws),
     "not valid UTF-8"),
    ("jsonl-nul-in-image", lambda fx, ws: train(write(ws / "m.jsonl", NUL_IN_IMAGE), ws), "holds a NUL character"),
    ("jsonl-number-text", lambda fx, ws: train(write(ws / "m.jsonl", '{"text": 1, "image": null, "label": "a"}\n'), ws),
     "must be a string"),
    ("parquet-not-parquet", lambda fx, ws: train(write(ws / "m.parquet", HEADER), ws), "not a readable Parquet file"),
    ("parquet-missing-column", lambda fx, ws: train(parquet(ws, {"text": ["a"], "label": ["x"]}), ws),
     "missing column(s) image"),
    ("parquet-image-column-of-numbers", lambda fx, ws: train(parquet(ws, {"text": ["a"], "image": [3], "label": ["x"]}),
                                                             ws), "the column 'image' holds int64"),
    # images (through the TensorFlow-free evaluation of a bundle)
    ("image-missing", lambda fx, ws: evaluate_bundle(fx, ws, "a,nope.png,x\n"), "file not found"),
    ("image-empty", lambda fx, ws: evaluate_bundle(fx, ws, f"a,{image_file(ws, b'')},x\n"), "cannot read image"),
    ("image-random-bytes", lambda fx, ws: evaluate_bundle(fx, ws, f"a,{image_file(ws, os.urandom(3000))},x\n"),
     "cannot read image"),
    ("image-truncated", lambda fx, ws: evaluate_bundle(
        fx, ws, f"a,{image_file(ws, truncated(Path(fx['image']), 400), 'cut.jpg')},x\n"), "cannot read image"),
    ("parquet-corrupt-image-bytes", lambda fx, ws: ["evaluate", fx["bundle"], "--data", parquet(ws, {
        "text": ["a", "b"], "image": pa.array([None, b"\xff\xd8 not a JPEG"], pa.binary()), "label": [fx["label"]] * 2,
    })], "m.parquet: line 2: cannot read image '<image bytes"),
    ("image-is-a-folder", lambda fx, ws: evaluate_bundle(fx, ws, f"a,{ws},x\n"), "it is a directory"),
    ("image-is-a-pipe", lambda fx, ws: evaluate_bundle(fx, ws, f"a,{pipe(ws)},x\n"), "not a regular file"),
    ("image-too-many-pixels", lambda fx, ws: evaluate_bundle(fx, ws, f"a,{big_png(ws)},x\n"), "7000x6000 pixels"),
    ("evaluate-unknown-label", lambda fx, ws: evaluate_bundle(fx, ws, "a,,no_such_label\n"), "unknown label"),
    ("train-label-left-without-rows", lambda fx, ws: train(
        manifest(ws, "a,,x\nb,,x\nc,nope.png,y\n"), ws, "--on-bad-row", "skip"), "'y' have no usable training row"),
    # values and configs
    ("learning-rate-nan", lambda fx, ws: train(fx["train"], ws, "--learning-rate", "nan"), "finite"),
    ("learning-rate-inf", lambda fx, ws: train(fx["train"], ws, "--learning-rate", "inf"), "finite"),
    ("learning-rate-diverges", lambda fx, ws: train(fx["train"], ws, "--learning-rate", "1e30", "--batch-size", "8",
                                                    "--epochs", "1"), "training diverged: the loss became nan"),
    ("epochs-zero", lambda fx, ws: train(fx["train"], ws, "--epochs", "0"), "--epochs"),
    ("config-invalid-yaml", lambda fx, ws: train(fx["train"], ws, "--config", write(ws / "c.yaml", "a: [\n")),
     "invalid YAML"),
    ("config-python-tag", lambda fx, ws: train(
        fx["train"], ws, "--config", write(ws / "c.yaml", "epochs: !!python/object/apply:os.getpid []\n")),
     "invalid YAML"),
    ("config-unknown-key", lambda fx, ws: train(fx["train"], ws, "--config", write(ws / "c.yaml", "epoch: 3\n")),
     "unknown setting"),
    ("config-nan-dropout", lambda fx, ws: train(fx["train"], ws, "--config", write(ws / "c.yaml", "dropout: .nan\n")),
     "dropout must be a finite number"),
    ("config-not-a-mapping", lambda fx, ws: train(fx["train"], ws, "--config", write(ws / "c.yaml", "- 1\n")),
     "mapping"),
    ("out-is-a-file", lambda fx, ws: ["train", "--data", fx["train"], "--out", write(ws / "out", "mine")],
     "must be a folder"),
    ("out-holds-user-files", lambda fx, ws: train(fx["train"], write(ws / "out" / "a.txt", "x").parent.parent),
     "not an mmkeras run"),
    # run folders
    ("run-not-a-run", lambda fx, ws: ["export", ws, "--out", ws / "b"], "not a run folder"),
    ("run-truncated-model", lambda fx, ws: ["export", broken_run(fx, ws, "model.keras", truncated(
        fx["run"] / "model.keras", 3000)), "--out", ws / "b"], "not a Keras model file"),
    ("run-labels-invalid-json", lambda fx, ws: ["export", broken_run(fx, ws, "labels.json", b"[\"a\","), "--out",
                                                ws / "b"], "invalid JSON"),
    ("run-labels-empty", lambda fx, ws: ["export", broken_run(fx, ws, "labels.json", b"[]"), "--out", ws / "b"],
     "labels.json names no class"),
    ("run-labels-not-a-list", lambda fx, ws: ["report", broken_run(fx, ws, "labels.json", b'{"a": 1}')],
     "list of class names"),
    ("run-config-broken", lambda fx, ws: ["report", broken_run(fx, ws, "config.yaml", b"epochs: [\n")], "invalid YAML"),
    ("report-out-missing-folder", lambda fx, ws: ["report", fx["run"], "--out", ws / "no" / "r.html"],
     "does not exist"),
    ("export-into-user-folder", lambda fx, ws: ["export", fx["run"], "--out", write(ws / "o" / "a.txt", "x").parent],
     "holds no bundle.json"),
    ("export-into-bundle-with-user-file", lambda fx, ws: [
        "export", fx["run"], "--out", write(copy_of(fx["bundle"], ws) / "notes.txt", "mine").parent], "notes.txt"),
    # bundles
    ("bundle-no-bundle-json", lambda fx, ws: ["predict", ws, "--text", "hi"], "not a bundle folder"),
    ("bundle-invalid-json", lambda fx, ws: ["predict", broken_bundle(fx, ws, "bundle.json", b"{"), "--text", "hi"],
     "invalid JSON"),
    ("bundle-newer-format", lambda fx, ws: ["predict", edited_json(copy_of(fx["bundle"], ws), "bundle.json",
                                                                   format_version=99), "--text", "hi"], "newer"),
    ("bundle-path-escapes", lambda fx, ws: ["predict", edited_json(copy_of(fx["bundle"], ws), "bundle.json",
                                                                   model_file="../run/model.keras"), "--text", "hi"],
     "not allowed"),
    ("bundle-unfinished-export", lambda fx, ws: ["predict", broken_bundle(fx, ws, ".export-unfinished", b""), "--text",
                                                 "hi"], "an unfinished export"),
    ("bundle-labels-not-a-list", lambda fx, ws: ["predict", edited_json(copy_of(fx["bundle"], ws), "bundle.json",
                                                                        labels="cat"), "--text", "hi"], "at labels"),
    ("model-truncated", lambda fx, ws: ["predict", broken_model(copy_of(fx["bundle"], ws), truncated(
        fx["bundle"] / "model.tflite", 5000)), "--text", "hi"], "cannot load this model"),
    ("model-empty", lambda fx, ws: ["predict", broken_model(copy_of(fx["bundle"], ws), b""), "--text", "hi"],
     "0 bytes"),
    ("model-random", lambda fx, ws: ["benchmark", broken_model(copy_of(fx["bundle"], ws), os.urandom(4096))],
     "not a LiteRT model"),
    ("benchmark-data-missing", lambda fx, ws: ["benchmark", fx["bundle"], "--data", ws / "nope.csv"],
     "manifest not found"),
    ("benchmark-data-unknown-label", lambda fx, ws: ["benchmark", fx["bundle"], "--data", manifest(
        ws, "a,,no_such_label\n")], "m.csv: line 2: unknown label 'no_such_label'"),
    ("benchmark-not-a-bundle", lambda fx, ws: ["benchmark", fx["bundle"], ws, "--data", fx["train"]],
     "not a bundle folder"),
    ("benchmark-data-labels-differ", lambda fx, ws: ["benchmark", fx["bundle"], edited_json(
        copy_of(fx["bundle"], ws), "bundle.json", labels=bundle_labels(fx)[::-1]), "--data", fx["train"]],
     "its labels differ from those of"),
    ("benchmark-data-tasks-differ", lambda fx, ws: ["benchmark", fx["bundle"], edited_json(
        copy_of(fx["bundle"], ws), "bundle.json", output_activation="sigmoid",
        thresholds=[0.5] * len(bundle_labels(fx))), "--data", fx["train"]],
     "another order or another task"),
    ("benchmark-data-align-bundle", lambda fx, ws: ["benchmark", edited_json(
        copy_of(fx["bundle"], ws), "bundle.json", kind="dual_encoder"), "--data", fx["train"]],
     "a dual_encoder bundle"),
    ("preprocessor-edited", lambda fx, ws: ["predict", edited_json(
        copy_of(fx["bundle"], ws), "preprocessor.json", image_size=[64, 64]), "--text", "hi"], "model takes"),
    ("preprocessor-invalid-json", lambda fx, ws: ["predict", broken_bundle(fx, ws, "preprocessor.json", b"{,"),
                                                  "--text", "hi"], "invalid JSON"),
    ("tokenizer-garbage", lambda fx, ws: ["predict", broken_bundle(fx, ws, "tokenizer.json", b"{}"), "--text", "hi"],
     "tokenizer"),
    ("predict-text-not-utf8", lambda fx, ws: ["predict", fx["bundle"], "--text", "caf\udce9"], "not valid UTF-8"),
    ("predict-image-missing", lambda fx, ws: ["predict", fx["bundle"], "--image", ws / "nope.png"], "file not found"),
    ("predict-image-pipe", lambda fx, ws: ["predict", fx["bundle"], "--image", pipe(ws)], "not a regular file"),
    ("predict-image-too-big", lambda fx, ws: ["predict", fx["bundle"], "--image", big_png(ws)], "max_image_pixels"),
    ("predict-nothing", lambda fx, ws: ["predict", fx["bundle"]], "give --text, --image or both"),
]


def bundle_labels(fx) -> list[str]:
    return json.loads((fx["bundle"] / "bundle.json").read_text(encoding="utf-8"))["labels"]


def broken_run(fx, ws: Path, name: str, content: bytes) -> Path:
    folder = copy_of(fx["run"], ws)
    (folder / name).write_bytes(content)
    return folder


def broken_bundle(fx, ws: Path, name: str, content: bytes) -> Path:
    folder = copy_of(fx["bundle"], ws)
    (folder / name).write_bytes(content)
    return folder


def test_the_corpus_is_large_and_varied():
    assert len(CASES) >= 40 and len({case_id for case_id, _, _ in CASES}) == len(CASES)


@pytest.mark.slow
@pytest.mark.parametrize("case_id, build, words", CASES, ids=[case[0] for case in CASES])
def test_a_bad_input_is_one_error_line_exit_2_and_changes_nothing(case_id, build, words, fixtures, tmp_path, capsys):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    argv = [str(arg) for arg in build(fixtures, workspace)]
    before = snapshot(workspace, fixtures["root"])
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:], err
    assert words in lines[-1]
    assert "Traceback" not in err and "internal error" not in err
    assert snapshot(workspace, fixtures["root"]) == before


@pytest.mark.slow
def test_a_folder_being_written_is_refused_naming_the_writer(fixtures, tmp_path, capsys):
    with folder_lock(tmp_path / "bundle"):
        code = main(["export", str(fixtures["run"]), "--out", str(tmp_path / "bundle")])
    err = capsys.readouterr().err
    assert code == 2 and f"another mmkeras process (pid {os.getpid()} host " in err.strip().splitlines()[-1]
    assert sorted(path.name for path in tmp_path.iterdir()) == []


@pytest.mark.slow
def test_export_replaces_its_own_bundle_and_cleans_what_a_killed_export_left(fixtures, tmp_path, capsys):
    out = copy_of(fixtures["bundle"], tmp_path)
    for stale in (".bundle.partial-x1", ".bundle.old-x2"):
        write(tmp_path / stale / "model.tflite", b"half")
    write(tmp_path / ".other.partial-x3" / "keep", b"another bundle's")
    assert main(["export", str(fixtures["run"]), "--out", str(out)]) == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == [".other.partial-x3", "bundle"]
    assert sorted(path.name for path in out.iterdir()) == [
        "bundle.json", "model.tflite", "preprocessor.json", "test_vectors", "test_vectors.json", "tokenizer.json"
    ]
    assert out.stat().st_mode & 0o077, "a bundle folder is not private to its user"


@pytest.mark.slow
def test_train_replaces_only_its_own_run_and_lists_skipped_rows(fixtures, tmp_path, capsys):
    run = copy_of(fixtures["run"], tmp_path)
    (run / "quantization.json").write_text("{}")  # an earlier QAT run's record must not survive
    rows = fixtures["train"].read_text(encoding="utf-8") + "broken,nope.png,red_calm\n"
    data = write(tmp_path / "data.csv", rows + "an owl,,\n")  # line 35: a bad row to reading, not to its image
    val = write(tmp_path / "val.csv", "\n".join(rows.splitlines()[:5]) + "\nan owl,,no_such_label\n")
    code = main([
        "train", "--data", str(data), "--val", str(val), "--out", str(run), "--epochs", "1",
        "--on-bad-row", "skip", "--json",
    ])
    captured = capsys.readouterr()
    assert code == 0 and json.loads(captured.out)["bad_rows_skipped"] == 3
    assert f"the run in {run} will be replaced" in captured.err
    assert not (run / "quantization.json").exists()
    skipped_rows = (run / "skipped_rows.csv").read_text(encoding="utf-8").splitlines()
    assert skipped_rows[:3] == [
        "file,line,reason", f"{data},35,empty label", f"{data},34,cannot read image 'nope.png': file not found"
    ]
    assert len(skipped_rows) == 4 and skipped_rows[3].startswith(f'{val},6,"unknown label \'no_such_label\' (known')
    # Each named once: the run is handed the manifests the CLI read before TensorFlow (was: line 35 twice).
    logged = [line for line in captured.err.splitlines() if line.startswith("skipped: ")]
    assert [line.split(": line ")[1].split(":")[0] for line in logged] == ["35", "34", "6"]
    assert not (tmp_path / ".run.lock").exists()
