"""Dual-encoder bundles: export of an align run, the TF-free Embedder, index and search."""

import json
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest

from mmkeras import __version__
from mmkeras.cli.app import main
from mmkeras.export.dual_encoder_export import describe_dual_encoder_report
from mmkeras.export.integer_only import float_ops
from mmkeras.runtime.bundle import DUAL_ENCODER_KIND, read_bundle
from mmkeras.runtime.embedder import Embedder
from mmkeras.runtime.image_index import ImageIndex, search_warnings
from mmkeras.runtime.interpreter import load_interpreter
from mmkeras.staged_folder import FOLDER_MODE
from tests.helpers.cli import SAMPLES, WITHOUT_TENSORFLOW, run_cli, write_subset

MATCHING = SAMPLES / "matching"


@pytest.fixture(scope="module")
def align_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("align")
    pairs = write_subset(MATCHING / "pairs.csv", folder / "pairs.csv", 16)
    out = folder / "run"
    assert main(["align", "--data", str(pairs), "--out", str(out), "--epochs", "1", "--batch-size", "8",
                 "--embedding-dim", "16"]) == 0
    return out


# Bundle folder name -> the export options that write it.
EXPORTS = {"none": ["--quantize", "none"], "int8": ["--quantize", "int8"],
           "integer-only": ["--quantize", "int8", "--integer-only"], "int16x8": ["--quantize", "int16x8"]}


@pytest.fixture(scope="module")
def bundles(align_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bundles")
    reports = {}
    for name, options in EXPORTS.items():
        assert main(["export", str(align_run), "--out", str(folder / name), *options]) == 0
        reports[name] = json.loads((folder / name / "bundle.json").read_text())
    return folder, reports


@pytest.mark.slow
def test_float_encoders_embed_as_the_keras_towers(bundles):
    folder, reports = bundles
    assert {"text_encoder.tflite", "image_encoder.tflite", "tokenizer.json", "bundle.json"} <= {
        path.name for path in (folder / "none").iterdir()
    }
    bundle = reports["none"]
    assert bundle["kind"] == "dual_encoder" and bundle["embedding_dim"] == 16
    for name in ("text_encoder", "image_encoder"):
        assert bundle["conversion"]["parity"][name]["min_cosine"] > 0.9999


@pytest.mark.slow
def test_int8_bundle_has_an_int8_image_encoder_and_int8_text_weights(bundles):
    _, reports = bundles
    encoders = reports["int8"]["conversion"]["encoders"]
    image_compute = encoders["image_encoder"]["ops"]["compute_ops"]
    assert image_compute["int8"] == image_compute["total"] > 0
    text_compute = encoders["text_encoder"]["ops"]["compute_ops"]
    assert text_compute["hybrid"] > 0 and text_compute["float"] < text_compute["total"]
    assert reports["int8"]["encoder_quantization"] == {"text_encoder": "dynamic", "image_encoder": "int8"}
    assert reports["int8"]["conversion"]["parity"]["text_encoder"]["min_cosine"] > 0.999


def test_the_printed_report_counts_the_text_encoders_hybrid_ops():
    # An int8 bundle's text encoder has int8 weights and float activations (hybrid ops): the line once left
    # them out and read "0 int8 / 0 int16x8 / 4 float" for a tower of 17 compute ops, as if nothing was quantized.
    compute = {"total": 17, "int8": 0, "int16x8": 0, "hybrid": 13, "float": 4}
    report = {
        "path": "b", "quantize": "int8", "integer_only": False,
        "encoders": {"text_encoder": {"quantize": "dynamic", "size_bytes": 1, "ops": {"compute_ops": compute}}},
        "parity": {"text_encoder": {"rows": 100, "mean_cosine": 1.0, "min_cosine": 0.9999}},
    }
    line = describe_dual_encoder_report(report).splitlines()[1]
    assert "compute ops 0 int8 / 0 int16x8 / 13 hybrid / 4 float of 17;" in line


@pytest.mark.slow
def test_integer_only_bundle_has_no_float_op_in_either_encoder(bundles):
    folder, reports = bundles
    bundle = reports["integer-only"]
    assert bundle["encoder_quantization"] == {"text_encoder": "int8", "image_encoder": "int8"}
    assert bundle["conversion"]["integer_only"] is True
    assert describe_dual_encoder_report({**bundle["conversion"], "path": "b"}).splitlines()[0] == (
        "wrote b (dual encoder, int8, integer-only)"
    )
    for name, file_name in bundle["encoders"].items():
        assert float_ops((folder / "integer-only" / file_name).read_bytes()) == {}, name
        interpreter = load_interpreter(folder / "integer-only" / file_name)
        assert {np.dtype(details["dtype"]).kind for details in interpreter.get_output_details()} == {"u"}
    image_input = load_interpreter(folder / "integer-only" / "image_encoder.tflite").get_input_details()[0]
    assert np.dtype(image_input["dtype"]) == np.uint8 and image_input["quantization"] == (1.0, 0)
    assert bundle["conversion"]["parity"]["text_encoder"]["min_cosine"] > 0.98
    assert bundle["conversion"]["parity"]["image_encoder"]["min_cosine"] > 0.999


@pytest.mark.slow
def test_int16x8_bundle_embeds_as_the_keras_towers(bundles):
    _, reports = bundles
    for name, facts in reports["int16x8"]["conversion"]["encoders"].items():
        compute = facts["ops"]["compute_ops"]
        assert compute["int16x8"] == compute["total"] > 0, name
    # Before the towers ended at their projection, the in-graph L2 norm in int16 gave cosines down to -0.9.
    for name, parity in reports["int16x8"]["conversion"]["parity"].items():
        assert parity["min_cosine"] > 0.999, name


@pytest.mark.slow
def test_encoders_with_quantized_activations_leave_the_l2_norm_to_the_embedder(bundles):
    folder, _ = bundles
    embedder = Embedder(folder / "integer-only")
    token_ids, padding_mask, _ = embedder.preprocessor.encode_texts(["a red ring", "a blue square"])
    raw = embedder.text_encoder({"token_ids": token_ids, "padding_mask": padding_mask})
    assert np.abs(np.linalg.norm(raw, axis=1) - 1.0).max() > 0.01  # the projection, not a unit vector
    assert np.allclose(np.linalg.norm(embedder.embed_text(["a red ring"]), axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("bundle", ["int8", "integer-only"])
def test_index_and_search_run_without_tensorflow(bundles, tmp_path, bundle):
    folder, _ = bundles
    images = tmp_path / "images"
    images.mkdir()
    rows = [line.split(",") for line in (MATCHING / "concepts.csv").read_text().splitlines()[1:11]]
    for _, image, _ in rows:
        shutil.copy(MATCHING / image, images / image.split("/")[-1])
    index_file = tmp_path / "index.npz"

    def device_cli(*args):
        done = subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW, *map(str, args)], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    assert device_cli("index", folder / bundle, "--images", images, "--out", index_file, "--json")["images"] == 10
    stored = ImageIndex.load(index_file)
    assert stored.embeddings.dtype == np.float16 and stored.embeddings.shape == (10, 16)
    results = device_cli("search", folder / bundle, index_file, "--text", "a red ring", "--top-k", "3", "--json")
    scores = [hit["score"] for hit in results["results"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    # The run was aligned without --val: nothing says whether it learned, and search says so.
    assert json.loads((folder / bundle / "bundle.json").read_text())["alignment"] is None
    assert ["no validation figures" in warning for warning in results["warnings"]] == [True]


ALIGNMENT = {"val_recall": {"text_to_image": {"1": 0.9}}, "val_recall_chance": 0.01,
             "val_pair_similarity": {"p10": 0.3, "median": 0.5}}


@pytest.mark.parametrize(
    ("recall", "best_score", "expected"),
    [(0.9, 0.6, []), (0.9, 0.2, ["the best image scores 0.2000"]), (0.05, 0.6, ["the align run never learned"]),
     (0.05, 0.2, ["the align run never learned", "the best image scores 0.2000"])],
)
def test_search_warns_when_the_run_never_learned_or_the_best_image_scores_low(recall, best_score, expected):
    alignment = {**ALIGNMENT, "val_recall": {"text_to_image": {"1": recall}}}
    warnings = search_warnings(alignment, [("a.jpg", best_score), ("b.jpg", best_score - 0.1)])
    assert [warning[: len(start)] for warning, start in zip(warnings, expected)] == expected
    assert len(warnings) == len(expected)


def test_search_finds_the_image_whose_embedding_is_the_query():
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(50, 8)).astype("float32")
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    index = ImageIndex(embeddings, [f"{number}.png" for number in range(50)], "/images")
    hits = index.search(embeddings[17], top_k=4)
    assert hits[0][0] == "17.png" and abs(hits[0][1] - 1.0) < 1e-3
    exact = np.argsort(-(embeddings @ embeddings[17]))[:4]
    assert [path for path, _ in hits] == [f"{number}.png" for number in exact]


def test_a_classifier_bundle_is_not_a_dual_encoder_bundle(tmp_path, capsys):
    (tmp_path / "bundle.json").write_text(json.dumps({"format_version": 1}))
    code, _, err = run_cli(capsys, "search", tmp_path, tmp_path / "index.npz", "--text", "a red ring")
    assert code == 2
    assert "a classifier bundle" in err and "needs a dual_encoder bundle" in err


@pytest.mark.slow
def test_the_exported_bundle_reads_back_by_its_kind_with_ordinary_permissions(bundles, capsys):
    folder, _ = bundles
    bundle = read_bundle(folder / "none", kinds=(DUAL_ENCODER_KIND,))
    assert bundle["mmkeras_version"] == __version__ and bundle["created"].endswith("+00:00")
    assert stat.S_IMODE((folder / "none").stat().st_mode) == FOLDER_MODE
    code, _, err = run_cli(capsys, "predict", folder / "none", "--text", "a red ring")
    assert code == 2
    assert "a dual_encoder bundle" in err and "missing model_file" not in err and len(err.strip().splitlines()) == 1
