"""benchmarks/tiny_pretrained_presets.py: its corpus, and presets that mmkeras' real loaders take and LoRA trains."""

import csv
import importlib.util
import re

import keras_hub
import numpy as np
import pytest

from benchmarks import tiny_pretrained_presets as pretraining
from mmkeras.config import RunConfig
from mmkeras.training.trainer import train
from tests.helpers.cli import SAMPLES, write_subset


def _import_make_samples():
    spec = importlib.util.spec_from_file_location("make_samples", SAMPLES / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def test_corpus_holds_every_word_samples_texts_are_written_from_but_no_samples_text_or_label():
    mood_texts = _import_make_samples().MOOD_TEXTS
    sample_words = set(mood_texts.nouns).union(*mood_texts.synonyms.values())
    for template in mood_texts.templates:
        sample_words |= words(template.replace("{word}", "").replace("{noun}", ""))
    corpus = pretraining.generate_corpus(3000, seed=0)
    assert sample_words <= words(" ".join(corpus))
    with (SAMPLES / "train.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    lines = {line.lower() for line in corpus}
    assert not lines & {row["text"].lower() for row in rows}
    labels = {row["label"] for row in rows}
    assert not any(label in line for line in lines for label in labels)
    assert pretraining.generate_corpus(50, seed=0) == corpus[:50]


def test_masking_chooses_real_tokens_only():
    token_ids = np.array([[2, 10, 11, 12, 13, 3, 0, 0], [2, 14, 3, 0, 0, 0, 0, 0]])
    padding_mask = (token_ids > 0).astype("int32")
    masked, chosen = pretraining.mask_tokens(token_ids, padding_mask, 20, 4, np.random.default_rng(0))
    assert chosen.sum(axis=1).tolist() == [1, 1]  # 15% of 4 tokens rounds to 1; at least 1 of 1
    assert chosen[1, 1] and 1 <= np.flatnonzero(chosen[0])[0] <= 4
    assert (masked[~chosen] == token_ids[~chosen]).all()  # [CLS], [SEP], padding and other tokens untouched


@pytest.mark.slow
def test_presets_load_through_mmkeras_and_lora_trains_only_adapters_fusion_and_head(tmp_path):
    presets = pretraining.write_presets(
        tmp_path / "presets", seed=0, corpus_lines=64, text_epochs=1, vision_images=64, vision_epochs=1
    )
    assert presets.figures["text"]["lines"] == 64 and presets.figures["vision"]["images"] == 64
    config = RunConfig(
        data=str(write_subset(SAMPLES / "train.csv", tmp_path / "train.csv", 16)),
        val=str(write_subset(SAMPLES / "val.csv", tmp_path / "val.csv", 8)),
        out=str(tmp_path / "run"),
        text_backbone=str(presets.text),
        vision_backbone=str(presets.vision),
        epochs=1,
        batch_size=8,
        sequence_length=16,
        lora_rank=2,
    )
    result = train(config)
    model = result.model
    text, vision = model.get_layer("text_backbone"), model.get_layer("vision_backbone")
    # Pixels 0..255 -> -1..1 as the preset's image converter says (the tiny CNN's scaling).
    normalization = model.get_layer("image_normalization")
    assert (normalization.scale, normalization.offset) == (pretraining.PIXEL_SCALE, pretraining.PIXEL_OFFSET)
    assert not vision.trainable_weights  # no attention layers: LoRA leaves the CNN frozen
    # Keras' LoRA trains the low-rank factors and leaves the adapted layers' biases trainable; nothing else.
    trained_text = {weight.path for weight in text.trainable_weights}
    assert any("lora_kernel" in path for path in trained_text)
    assert all(re.search(r"/(query|value)/(lora_kernel_[ab]|bias)$", path) for path in trained_text)
    lora_params = sum(int(np.prod(weight.shape)) for weight in text.trainable_weights)
    head_params = sum(model.get_layer(name).count_params() for name in ("fusion", "logits"))
    assert result.metrics["trainable_params"] == lora_params + head_params
    # Every frozen weight is the pretrained one, loaded from the preset and untouched by training.
    for layer, preset in ((text, presets.text), (vision, presets.vision)):
        original = {weight.path: weight for weight in keras_hub.models.Backbone.from_preset(str(preset)).weights}
        frozen = [weight for weight in layer.non_trainable_weights if "lora" not in weight.path]
        trained_biases = [weight for weight in layer.trainable_weights if "lora" not in weight.path]
        assert len(frozen) + len(trained_biases) == len(original)
        for weight in frozen:
            np.testing.assert_array_equal(weight.numpy(), original[weight.path].numpy())
