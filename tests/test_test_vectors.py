"""Test vectors: every export writes them, the Python runtime verifies a bundle against them."""

import hashlib
import json
import shutil

import numpy as np
import pytest

from mmkeras.errors import UserError
from mmkeras.export.converter import export_bundle
from mmkeras.runtime.bundle import TEST_VECTORS_FILE
from mmkeras.runtime.test_vectors import (
    FLOAT_LOGIT_TOLERANCE,
    examples_from_manifest,
    logit_quantization_step,
    pixel_checksum,
    read_test_vectors,
    verify_bundle,
)
from tests.helpers.cli import SAMPLES


@pytest.fixture(scope="module")
def run_dir(tiny_bundle):
    return tiny_bundle["run"]


@pytest.fixture(scope="module")
def bundle_dir(tiny_bundle):
    return tiny_bundle["bundle"]


@pytest.fixture
def bundle_copy(bundle_dir, tmp_path):
    return shutil.copytree(bundle_dir, tmp_path / "bundle")


def edit_vectors(bundle, change):
    path = bundle / TEST_VECTORS_FILE
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))


def test_export_writes_vectors_with_every_modality_case(bundle_dir):
    content = read_test_vectors(bundle_dir)
    vectors = content["vectors"]
    assert content["quantization"] == "none" and content["logit_tolerance"] == FLOAT_LOGIT_TOLERANCE
    assert [vector["modality_mask"] for vector in vectors] == [[1, 1]] * 3 + [[1, 0], [0, 1]]
    for vector in vectors:
        if vector["image"]:
            image_bytes = (bundle_dir / vector["image"]).read_bytes()
            assert hashlib.sha256(image_bytes).hexdigest() == vector["image_sha256"]
        assert len(vector["token_ids"]) == 16 and vector["token_ids"][0] == 2  # [CLS] of the tiny vocabulary
    # A missing image is an all-zero tensor; a missing text is [CLS] [SEP] and padding.
    assert vectors[3]["pixels"] == pixel_checksum(np.zeros((1, 32, 32, 3), np.float32))
    assert vectors[4]["padding_mask"] == [1, 1] + [0] * 14


def test_a_fresh_bundle_verifies(bundle_dir):
    assert verify_bundle(bundle_dir) == {"passed": True, "vectors": 5, "failures": []}


@pytest.mark.parametrize(
    "change, failure",
    [
        (lambda content: content["vectors"][1]["token_ids"].__setitem__(1, 7), "vector 1: token_ids"),
        (lambda content: content["vectors"][0]["pixels"].__setitem__("sha256", "0" * 64), "vector 0: pixels differ"),
        (lambda content: content["vectors"][2]["logits"].__setitem__(0, content["vectors"][2]["logits"][0] + 1e-3),
         "vector 2: logits differ by 0.001"),
        (lambda content: content["vectors"][4].__setitem__("label", "no_such_label"), "vector 4: label"),
    ],
)
def test_a_mismatch_fails_naming_the_vector_and_the_step(bundle_copy, change, failure):
    edit_vectors(bundle_copy, change)
    result = verify_bundle(bundle_copy)
    assert not result["passed"]
    assert [line for line in result["failures"] if line.startswith(failure)], result["failures"]


def test_a_replaced_image_file_is_named(bundle_copy):
    image = read_test_vectors(bundle_copy)["vectors"][0]["image"]
    shutil.copyfile(sorted((SAMPLES / "images" / "test").iterdir())[0], bundle_copy / image)
    assert verify_bundle(bundle_copy)["failures"][0] == (
        f"vector 0: {image} is not the file the vectors were made from"
    )


def test_malformed_or_missing_vectors_are_user_errors(bundle_copy):
    edit_vectors(bundle_copy, lambda content: content["vectors"][0].pop("logits"))
    with pytest.raises(UserError, match=r"malformed test_vectors.json at vectors/0: 'logits' is a required"):
        verify_bundle(bundle_copy)
    (bundle_copy / TEST_VECTORS_FILE).unlink()
    with pytest.raises(UserError, match="no test_vectors.json"):
        verify_bundle(bundle_copy)


def test_without_a_manifest_a_generated_example_stands_in():
    examples = examples_from_manifest(None, (8, 8))
    assert [(text is not None, image is not None) for text, image in examples] == [
        (True, True), (True, False), (False, True)
    ]
    assert examples[0][1].startswith(b"\x89PNG")


@pytest.mark.slow  # an int8 export
def test_int8_tolerance_is_one_step_of_the_logits(run_dir, tmp_path):
    out = tmp_path / "int8"
    export_bundle(run_dir, out, quantize="int8")
    step = logit_quantization_step(out / "model.tflite")
    assert step is not None and step > 0
    assert read_test_vectors(out)["logit_tolerance"] == max(FLOAT_LOGIT_TOLERANCE, step)
    assert verify_bundle(out)["passed"]
