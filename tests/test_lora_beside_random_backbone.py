"""`--lora-rank` adapts pretrained backbones only; a random one beside them trains fully. Cut texts are counted."""

import logging

import pytest

from mmkeras.config import RunConfig
from mmkeras.data.manifest import read_manifest
from mmkeras.models import build_model
from mmkeras.preprocessing.text import TextTokenizer
from mmkeras.training.trainer import prepare_backbones, train
from tests.helpers.cli import SAMPLES, write_subset
from tests.helpers.hugging_face_folders import write_text_folder


@pytest.mark.slow
def test_lora_beside_a_random_vision_backbone_trains_that_backbone_fully_and_reports_cut_texts(tmp_path):
    folder = tmp_path / "bert"
    write_text_folder("bert", folder)
    train_csv = write_subset(SAMPLES / "train.csv", tmp_path / "train.csv", 16)
    config = RunConfig(
        data=str(train_csv), out=str(tmp_path / "run"), text_backbone=str(folder), vision_backbone="tiny",
        epochs=1, batch_size=8, sequence_length=6, lora_rank=2,
    )
    result = train(config)
    text, vision = result.model.get_layer("text_backbone"), result.model.get_layer("vision_backbone")
    assert len(vision.trainable_weights) == len(vision.weights) > 0
    assert {weight.path.rsplit("/", 1)[-1] for weight in text.trainable_weights} <= {
        "lora_kernel_a", "lora_kernel_b", "bias"
    }
    texts = [row.text for row in read_manifest(train_csv).rows]
    expected = TextTokenizer.from_hugging_face_folder(folder, sequence_length=6).count_truncated(texts)
    assert 0 < result.metrics["texts_truncated"] == expected <= len(texts)


def test_lora_with_only_random_backbones_warns_and_trains_them_fully(caplog):
    model, _ = build_model(num_classes=2, texts=["a red circle"], seed=0)
    with caplog.at_level(logging.WARNING, logger="mmkeras"):
        prepare_backbones(model, RunConfig(lora_rank=2))
    assert "no pretrained backbone to adapt" in caplog.text
    for name in ("text_backbone", "vision_backbone"):
        backbone = model.get_layer(name)
        trainable = [weight for weight in backbone.trainable_weights if "lora" in weight.path]
        assert not trainable and backbone.trainable


def test_freeze_still_wins_over_a_random_backbone_next_to_lora(tmp_path):
    write_text_folder("bert", tmp_path)
    config = RunConfig(text_backbone=str(tmp_path), freeze="vision", lora_rank=2)
    model, _ = build_model(str(tmp_path), num_classes=2, sequence_length=8, seed=0)
    prepare_backbones(model, config)
    assert not model.get_layer("vision_backbone").trainable_weights
    assert any("lora" in weight.path for weight in model.get_layer("text_backbone").trainable_weights)
