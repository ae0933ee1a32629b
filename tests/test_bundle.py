"""bundle.json: writing, reading, and the errors a broken bundle gives (no TensorFlow needed)."""

import json

import pytest

from mmkeras import __version__
from mmkeras.errors import UserError
from mmkeras.export.bundle_writer import tensor_entry, write_bundle_json
from mmkeras.runtime.bundle import BUNDLE_FORMAT_VERSION, INPUT_NAMES, REQUIRED_KEYS, read_bundle

PREPROCESSING = {"format": 1, "sequence_length": 8, "image_size": [32, 32]}


@pytest.fixture
def bundle_dir(tmp_path):
    """A bundle folder with placeholder model and tokenizer files and a real bundle.json."""
    for name in ("model.tflite", "preprocessor.json", "tokenizer.json"):
        (tmp_path / name).write_bytes(b"placeholder")
    write_bundle_json(
        tmp_path,
        inputs=[
            tensor_entry("token_ids", (1, 8), "int32"),
            tensor_entry("padding_mask", (1, 8), "int32"),
            tensor_entry("image", (1, 32, 32, 3), "float32"),
            tensor_entry("modality_mask", (1, 2), "float32"),
        ],
        output=tensor_entry("logits", (1, 2), "int8", quantization=(0.0625, -3)),
        labels=["cat", "dög"],
        quantization="int8",
        preprocessing=PREPROCESSING,
        source_run="runs/demo",
    )
    return tmp_path


def rewrite(bundle_dir, **changes):
    path = bundle_dir / "bundle.json"
    values = json.loads(path.read_text(encoding="utf-8"))
    values.update(changes)
    path.write_text(json.dumps(values), encoding="utf-8")


def test_written_bundle_reads_back(bundle_dir):
    bundle = read_bundle(bundle_dir)
    assert set(bundle) == set(REQUIRED_KEYS)
    assert bundle["format_version"] == BUNDLE_FORMAT_VERSION
    assert bundle["mmkeras_version"] == __version__
    assert bundle["created"].endswith("+00:00")
    assert [tensor["name"] for tensor in bundle["inputs"]] == list(INPUT_NAMES)
    assert bundle["inputs"][2] == {"name": "image", "shape": [1, 32, 32, 3], "dtype": "float32", "quantization": None}
    assert bundle["output"]["quantization"] == {"scale": 0.0625, "zero_point": -3}
    assert bundle["labels"] == ["cat", "dög"]
    assert bundle["quantization"] == "int8"
    assert bundle["preprocessing"] == PREPROCESSING and bundle["source_run"] == "runs/demo"
    assert (bundle["model_file"], bundle["preprocessor_file"], bundle["tokenizer_file"]) == (
        "model.tflite",
        "preprocessor.json",
        "tokenizer.json",
    )
    # Non-ASCII labels stay readable in the file a mobile developer opens.
    assert "dög" in (bundle_dir / "bundle.json").read_text(encoding="utf-8")
    assert not list(bundle_dir.glob("*partial*"))


def test_unknown_quantization_mode_is_not_written(tmp_path):
    with pytest.raises(ValueError, match="quantization must be one of"):
        write_bundle_json(
            tmp_path, inputs=[], output={}, labels=[], quantization="int4", preprocessing={}, source_run="r"
        )
    assert not (tmp_path / "bundle.json").exists()


def test_missing_bundle_json_names_the_file(tmp_path):
    with pytest.raises(UserError, match="bundle.json is missing") as caught:
        read_bundle(tmp_path)
    assert caught.value.path == str(tmp_path / "bundle.json")


@pytest.mark.parametrize("missing", ["model.tflite", "preprocessor.json", "tokenizer.json"])
def test_missing_bundle_file_names_the_file(bundle_dir, missing):
    (bundle_dir / missing).unlink()
    with pytest.raises(UserError, match=f"{missing} is missing") as caught:
        read_bundle(bundle_dir)
    assert caught.value.path == str(bundle_dir / missing)


def test_newer_format_version_asks_for_an_upgrade(bundle_dir):
    rewrite(bundle_dir, format_version=BUNDLE_FORMAT_VERSION + 1)
    with pytest.raises(UserError, match="newer than this mmkeras reads.*upgrade") as caught:
        read_bundle(bundle_dir)
    assert caught.value.path == str(bundle_dir / "bundle.json")


@pytest.mark.parametrize("version", [0, "1", None, True, 1.5])
def test_unknown_format_version_is_refused(bundle_dir, version):
    rewrite(bundle_dir, format_version=version)
    with pytest.raises(UserError, match="unknown bundle format version"):
        read_bundle(bundle_dir)


def test_missing_key_is_named(bundle_dir):
    values = json.loads((bundle_dir / "bundle.json").read_text(encoding="utf-8"))
    del values["labels"], values["inputs"]
    (bundle_dir / "bundle.json").write_text(json.dumps(values), encoding="utf-8")
    with pytest.raises(UserError, match="missing inputs, labels"):
        read_bundle(bundle_dir)


def test_invalid_json_names_file_and_line(bundle_dir):
    (bundle_dir / "bundle.json").write_text('{\n  "format_version": 1,\n  oops\n}', encoding="utf-8")
    with pytest.raises(UserError, match=r"bundle.json: line 3: invalid JSON"):
        read_bundle(bundle_dir)


def test_a_json_list_is_not_a_bundle(bundle_dir):
    (bundle_dir / "bundle.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(UserError, match="JSON object"):
        read_bundle(bundle_dir)
