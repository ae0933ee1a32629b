"""bundle.json: writing, reading, and the errors a broken bundle gives (no TensorFlow needed)."""

import json
from pathlib import Path

import jsonschema
import pytest

from mmkeras import __version__
from mmkeras.errors import UserError
from mmkeras.export.bundle_writer import tensor_entry, write_bundle_json
from mmkeras.runtime.bundle import BUNDLE_FORMAT_VERSION, INPUT_NAMES, bundle_schema, output_activation, read_bundle

PREPROCESSING = {"format": 1, "sequence_length": 8, "image_size": [32, 32]}
# Passes read_bundle's file checks (size, the TFL3 identifier); the interpreter is never given it here.
PLACEHOLDER_MODEL = b"\x1c\x00\x00\x00TFL3" + bytes(24)


@pytest.fixture
def bundle_dir(tmp_path):
    """A bundle folder with placeholder model and tokenizer files and a real bundle.json."""
    for name in ("preprocessor.json", "tokenizer.json"):
        (tmp_path / name).write_bytes(b"placeholder")
    (tmp_path / "model.tflite").write_bytes(PLACEHOLDER_MODEL)
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
    assert set(bundle) == {*bundle_schema()["required"], "task", "output_activation"}
    assert (bundle["task"], bundle["output_activation"]) == ("classify", "softmax") and "thresholds" not in bundle
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


def test_a_run_folder_given_as_a_bundle_says_to_export_it(tmp_path, capsys):
    # `benchmark RUN_DIR` and `web RUN_DIR` said "not a bundle folder: bundle.json is missing", no word of export.
    from mmkeras.cli.app import main

    (tmp_path / "model.keras").write_bytes(b"a run's model")
    (tmp_path / "labels.json").write_text('["cat", "dog"]')
    for command in (["benchmark", str(tmp_path)], ["web", str(tmp_path), "--out", str(tmp_path / "site")]):
        assert main(command) == 2
        error = capsys.readouterr().err.strip()
        assert error == f"error: {tmp_path}: this is a run folder, not a bundle: run `mmkeras export {tmp_path} " \
                        "--out BUNDLE_DIR` first, then use BUNDLE_DIR"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["labels.json", "model.keras"]


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


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"model_file": "../run/model.tflite"}, "at model_file: '../run/model.tflite' is not allowed (A file in the"),
        ({"tokenizer_file": ".."}, "at tokenizer_file: '..' is not allowed"),
        ({"labels": ["cat", "cat"]}, "at labels: ['cat', 'cat'] has non-unique elements"),
        ({"quantization": "int4"}, "at quantization: 'int4' is not one of"),
        ({"output": {"name": "logits", "shape": [1, 0], "dtype": "float32", "quantization": None}},
         "at output/shape/1"),
        ({"output_activation": "sigmoid"}, "at the top level: 'thresholds' is a required property"),
        ({"output_activation": "sigmoid", "thresholds": [0.5, 1.5]}, "at thresholds/1: 1.5 is greater than"),
        ({"output_activation": "sigmoid", "thresholds": [0.5]}, "at thresholds: 1 thresholds for 2 labels"),
        ({"task": "detect"}, "at task: 'detect' is not one of"),
        ({"output": {"name": "logits", "shape": [1, 2], "dtype": "float32", "quantization": {"scale": 0.1,
                                                                                         "zero_point": 3}}},
         "at output/dtype: 'float32' is not allowed (a tensor with a scale and zero point holds int8 or uint8"),
    ],
)
def test_bundle_json_is_checked_against_its_schema(bundle_dir, changes, message):
    rewrite(bundle_dir, **changes)
    with pytest.raises(UserError) as caught:
        read_bundle(bundle_dir)
    assert str(caught.value).startswith(f"{bundle_dir / 'bundle.json'}: malformed bundle.json {message}")


def test_a_bundle_from_before_the_task_keys_reads_as_single_label_softmax(bundle_dir):
    values = json.loads((bundle_dir / "bundle.json").read_text(encoding="utf-8"))
    del values["task"], values["output_activation"]
    (bundle_dir / "bundle.json").write_text(json.dumps(values), encoding="utf-8")
    assert output_activation(read_bundle(bundle_dir)) == "softmax"


def test_a_multilabel_bundle_json_writes_its_thresholds(bundle_dir):
    values = json.loads((bundle_dir / "bundle.json").read_text(encoding="utf-8"))
    arguments = {key: values[key] for key in ("inputs", "output", "labels", "quantization", "preprocessing")}
    write_bundle_json(bundle_dir, **arguments, source_run="runs/tags", task="multilabel", thresholds=[0.25, 0.75])
    bundle = read_bundle(bundle_dir)
    assert (bundle["output_activation"], bundle["thresholds"]) == ("sigmoid", [0.25, 0.75])
    with pytest.raises(ValueError, match="thresholds go with a sigmoid output"):
        write_bundle_json(bundle_dir, **arguments, source_run="runs/tags", task="multilabel")


def test_a_link_out_of_the_bundle_folder_is_refused(bundle_dir, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere") / "tokenizer.json"
    outside.write_text("{}")
    (bundle_dir / "tokenizer.json").unlink()
    (bundle_dir / "tokenizer.json").symlink_to(outside)
    with pytest.raises(UserError, match="tokenizer.json leads outside the bundle folder"):
        read_bundle(bundle_dir)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not a LiteRT model: 0 bytes"),
        (PLACEHOLDER_MODEL[:10], "not a LiteRT model: 10 bytes"),
        (b"PK\x03\x04ZIPS" + bytes(40), "not a LiteRT model: the file identifier is b'ZIPS', not b'TFL3'"),
    ],
)
def test_a_model_file_that_is_no_litert_model_is_refused_before_the_interpreter(bundle_dir, content, message):
    (bundle_dir / "model.tflite").write_bytes(content)
    with pytest.raises(UserError, match=f"model.tflite: {message}"):
        read_bundle(bundle_dir)


def test_the_schema_ships_in_the_package_and_describes_what_the_writer_writes():
    schema = bundle_schema()
    assert schema["$schema"].endswith("2020-12/schema")
    assert set(schema["required"]) <= set(schema["properties"])


def test_the_documented_example_matches_the_schema():
    text = (Path(__file__).resolve().parents[1] / "docs" / "bundle.md").read_text(encoding="utf-8")
    example = text.split("## Example bundle.json", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    jsonschema.validate(json.loads(example), bundle_schema())
