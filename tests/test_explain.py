"""`explain`: occlusion attribution and cross-attention maps point at what decides the label."""

import csv
import json
import re

import numpy as np
import pytest
from PIL import Image

from mmkeras.evaluation.occlusion import occlusion_attribution
from mmkeras.preprocessing import MultimodalPreprocessor
from mmkeras.preprocessing.text import TextTokenizer
from tests.helpers.cli import run_cli

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}
WORDS = ["maybe", "some", "plain", "words", "here", "today", "again", "still"]


def quadrant_image(path, colour, rng, size=32):
    """Grey noise with a coloured square inside the top-left quadrant: the label lies there only."""
    pixels = rng.integers(90, 166, size=(size, size, 3)).astype(np.uint8)
    pixels[3:13, 3:13] = COLOURS[colour]
    Image.fromarray(pixels).save(path)
    return path


def quadrant_manifest(folder, rows, seed):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "data.csv"
    with manifest.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["text", "image", "label"])
        for index in range(rows):
            colour = list(COLOURS)[index % len(COLOURS)]
            image = quadrant_image(folder / f"{index}.png", colour, rng)
            writer.writerow([" ".join(rng.choice(WORDS, size=4)), image.name, colour])
    return manifest


def test_occlusion_finds_the_quadrant_and_the_word_a_model_reads(tmp_path):
    """A hand-made model: the class is the top-left quadrant's red level, pushed by the word "red"."""
    tokenizer = TextTokenizer.train_from_texts(["a red thing", "plain words"], vocabulary_size=32, sequence_length=8)
    preprocessor = MultimodalPreprocessor(tokenizer, (32, 32))
    said_red_ids = set(tokenizer.encode("red")[0].tolist()) - set(tokenizer.encode("")[0].tolist())

    def predict_logits(inputs):
        redness = inputs["image"][:, :16, :16, 0].mean(axis=(1, 2)) / 255 * inputs["modality_mask"][:, 1]
        said_red = np.isin(inputs["token_ids"], list(said_red_ids)).any(axis=1) * inputs["modality_mask"][:, 0]
        return np.stack([4 * redness + said_red, np.full(len(redness), 1.0)], axis=1)

    image = quadrant_image(tmp_path / "x.png", "red", np.random.default_rng(0))
    figures = occlusion_attribution(predict_logits, preprocessor, "a red thing", image, grid=8)
    assert figures["class_index"] == 0
    heatmap = np.array(figures["image_heatmap"])
    peak_row, peak_column = np.unravel_index(heatmap.argmax(), heatmap.shape)
    assert peak_row < 4 and peak_column < 4  # the top-left quadrant of an 8x8 grid
    assert np.abs(heatmap[4:, :]).max() == pytest.approx(0.0, abs=1e-9)  # the rest never matters
    importances = {entry["word"]: entry["importance"] for entry in figures["words"]}
    assert max(importances, key=importances.get) == "red"
    assert figures["modality"]["fused"] > figures["modality"]["text_only"]


@pytest.mark.slow
def test_explain_of_a_trained_run_and_its_bundle_points_at_the_quadrant(tmp_path, capsys):
    train = quadrant_manifest(tmp_path / "train", 150, seed=0)
    run_dir, bundle_dir = tmp_path / "run", tmp_path / "bundle"
    code, _, _ = run_cli(capsys, "train", "--data", train, "--out", run_dir, "--epochs", "8", "--batch-size", "16",
                         "--learning-rate", "0.002", "--seed", "0", "--json")
    assert code == 0
    assert run_cli(capsys, "export", run_dir, "--out", bundle_dir)[0] == 0
    example = quadrant_image(tmp_path / "example.png", "green", np.random.default_rng(7))
    for target in (run_dir, bundle_dir):
        code, out, _ = run_cli(capsys, "explain", target, "--text", "plain words here today",
                               "--image", example, "--out", tmp_path / f"why-{target.name}", "--json")
        assert code == 0
        explanation = json.loads(out)
        assert explanation["label"] == "green"  # correctly classified
        heatmap = np.array(explanation["image_heatmap"])
        peak_row, peak_column = np.unravel_index(heatmap.argmax(), heatmap.shape)
        assert peak_row < 4 and peak_column < 4, heatmap.round(3)
        assert (tmp_path / f"why-{target.name}" / "explanation.png").read_bytes().startswith(b"\x89PNG")
    attention = json.loads((tmp_path / "why-run" / "explanation.json").read_text())["attention"]
    assert np.array(attention["image"]).shape == (2, 2)  # the tiny CNN's 2x2 patch grid
    assert np.array(attention["image"]).sum() == pytest.approx(1.0, abs=1e-4)
    assert explanation["attention"] is None  # a bundle has no attention to show


def test_explain_without_matplotlib_writes_the_json_and_says_why_there_is_no_figure(
    tiny_bundle, tmp_path, monkeypatch, caplog
):
    # The device-only install has no matplotlib: explanation.png was silently missing from --out.
    from mmkeras.evaluation import plots
    from mmkeras.evaluation.explain import explain

    monkeypatch.setattr(plots, "can_plot", lambda: False)
    image = quadrant_image(tmp_path / "x.png", "red", np.random.default_rng(0))
    with caplog.at_level("INFO", logger="mmkeras"):
        explain(tiny_bundle["bundle"], "plain words", image, out=tmp_path / "why")
    assert sorted(path.name for path in (tmp_path / "why").iterdir()) == ["explanation.json"]
    assert "matplotlib is not installed: no explanation.png" in caplog.text


def test_explain_draws_no_attention_map_for_an_image_without_a_text(samples_run, tmp_path):
    # A cross-attention run given a photo alone drew "cross-attention of the text" as a flat map of nothing.
    from mmkeras.evaluation.explain import explain

    image = quadrant_image(tmp_path / "x.png", "red", np.random.default_rng(0))
    assert explain(samples_run["run"], None, image)["attention"] is None
    assert explain(samples_run["run"], "a calm card", image)["attention"] is not None  # a cross-attention run


def test_explains_line_names_a_missing_modality_instead_of_scoring_an_empty_input(tiny_bundle, tmp_path, capsys):
    # "text only 0.333" for a photo given alone was the answer to an empty text, read as the text's contribution.
    image = quadrant_image(tmp_path / "x.png", "red", np.random.default_rng(0))
    code, out, _ = run_cli(capsys, "explain", tiny_bundle["bundle"], "--image", image)
    assert code == 0 and out.strip().endswith("; no text)")
    code, out, _ = run_cli(capsys, "explain", tiny_bundle["bundle"], "--text", "plain words")
    assert code == 0 and out.strip().endswith("; no image)")
    code, out, _ = run_cli(capsys, "explain", tiny_bundle["bundle"], "--text", "plain words", "--image", image)
    assert code == 0 and re.search(r"; text only \d\.\d{3}, image only \d\.\d{3}\)$", out.strip())
