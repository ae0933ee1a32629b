"""Every reader of bundles says which kinds it can use; a bundle of another kind is refused in one line naming it."""

import json

import pytest

from mmkeras.errors import UserError
from mmkeras.runtime.bundle import (
    BUNDLE_KINDS,
    DUAL_ENCODER_KIND,
    ENCODER_FILES,
    bundle_kind,
    read_bundle,
)
from tests.helpers.cli import run_cli

# The smallest file `check_tflite_file` takes for a LiteRT model: 16 bytes with the TFL3 identifier at 4..8.
FAKE_TFLITE = b"\0" * 4 + b"TFL3" + b"\0" * 8


def dual_encoder_bundle(folder, **changes):
    """A dual-encoder bundle folder as `export_dual_encoder` writes it (models faked: nothing runs them here)."""
    folder.mkdir()
    values = {
        "format_version": 1, "mmkeras_version": "0.1.0", "created": "2026-01-01T00:00:00+00:00",
        "kind": DUAL_ENCODER_KIND, "encoders": ENCODER_FILES, "embedding_dim": 16, "labels": [],
        "quantization": "none", "encoder_quantization": {"text_encoder": "none", "image_encoder": "none"},
        "preprocessing": {}, "source_run": "runs/align", **changes,
    }
    (folder / "bundle.json").write_text(json.dumps({key: value for key, value in values.items() if value is not None}))
    for name in ENCODER_FILES.values():
        (folder / name).write_bytes(FAKE_TFLITE)
    for name in ("preprocessor.json", "tokenizer.json"):
        (folder / name).write_text("{}")
    return folder


def test_a_dual_encoder_bundle_reads_back_as_its_kind(tmp_path):
    bundle = read_bundle(dual_encoder_bundle(tmp_path / "align"), kinds=(DUAL_ENCODER_KIND,))
    assert bundle["embedding_dim"] == 16


def test_a_dual_encoder_bundle_is_checked_against_its_schema(tmp_path):
    with pytest.raises(UserError, match="malformed bundle.json: missing embedding_dim"):
        read_bundle(dual_encoder_bundle(tmp_path / "align", embedding_dim=None), kinds=(DUAL_ENCODER_KIND,))
    with pytest.raises(UserError, match="incomplete bundle: image_encoder.tflite is missing"):
        folder = dual_encoder_bundle(tmp_path / "no_image_encoder")
        (folder / "image_encoder.tflite").unlink()
        read_bundle(folder, kinds=(DUAL_ENCODER_KIND,))


@pytest.mark.parametrize("command", [["predict", "--text", "a red ring"], ["web", "--out", "site"]])
def test_predict_and_web_name_the_kind_of_a_dual_encoder_bundle(tmp_path, capsys, command):
    bundle = dual_encoder_bundle(tmp_path / "align")
    code, _, err = run_cli(capsys, command[0], bundle, *[tmp_path / part if part == "site" else part
                                                        for part in command[1:]])
    assert code == 2
    expected = (f"error: {bundle / 'bundle.json'}: a dual_encoder bundle ({BUNDLE_KINDS['dual_encoder']}); "
                "this needs a classifier or multilabel bundle")
    assert err.strip().splitlines() == [expected]
    assert not (tmp_path / "site").exists()


def test_the_kind_comes_from_kind_else_from_the_output_activation(tmp_path):
    assert bundle_kind({"labels": ["cat"]}) == "classifier"
    assert bundle_kind({"output_activation": "sigmoid"}) == "multilabel"
    assert bundle_kind({"kind": "dual_encoder"}) == "dual_encoder"
    with pytest.raises(UserError, match="unknown bundle kind 'detector'"):
        bundle_kind({"kind": "detector"})
