"""Text and vision backbone loading: built-in architectures, local presets, user errors."""

import json

import keras
import keras_hub
import numpy as np
import pytest
import requests

from mmkeras.errors import UserError
from mmkeras.models import load_text_backbone, load_vision_backbone, text_sequence, vision_tokens

TEXTS = ["A red circle", "a blue square", "the red square", None]
VOCABULARY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "red", "blue", "circle", "cafe", "a", "##s"]


def save_vit_preset(directory, converter=None):
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(16, 16, 3), patch_size=8, num_layers=1, num_heads=1, hidden_dim=8, mlp_dim=8
    )
    backbone.save_to_preset(directory)
    if converter is not None:
        converter.save_to_preset(directory)
    return backbone


def save_bert_preset(directory, *, lowercase=True, max_sequence_length=24):
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(VOCABULARY), num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16,
        max_sequence_length=max_sequence_length,
    )
    backbone.save_to_preset(directory)
    keras_hub.models.BertTokenizer(vocabulary=VOCABULARY, lowercase=lowercase).save_to_preset(directory)
    return backbone


def test_tiny_vision_backbone_is_a_random_cnn_giving_four_tokens():
    vision = load_vision_backbone("tiny")
    assert isinstance(vision.backbone, keras_hub.models.VGGBackbone)
    assert vision.backbone.name == "vision_backbone"
    # Pixels 0..255 become -1..1: centred inputs for a network without normalisation layers.
    assert (vision.image_size, vision.scale, vision.offset, vision.pretrained) == ((32, 32), 2 / 255, -1.0, False)
    # Only layers that quantize and convert simply: convolutions and pooling.
    layer_types = {type(layer).__name__ for layer in vision.backbone.layers}
    assert layer_types == {"InputLayer", "Conv2D", "MaxPooling2D"}
    tokens = vision_tokens(vision.backbone(np.zeros((2, 32, 32, 3), "float32")))
    assert tuple(tokens.shape) == (2, 4, 128)  # a 2x2 feature map after four 2x2 pools


def test_tiny_vit_vision_backbone_is_a_random_vit_giving_tokens():
    vision = load_vision_backbone("tiny-vit")
    assert isinstance(vision.backbone, keras_hub.models.ViTBackbone)
    assert vision.backbone.name == "vision_backbone"
    assert (vision.image_size, vision.scale, vision.offset, vision.pretrained) == ((32, 32), 1 / 255, 0.0, False)
    tokens = vision_tokens(vision.backbone(np.zeros((2, 32, 32, 3), "float32")))
    assert tuple(tokens.shape) == (2, 17, 64)  # 4x4 patches + the class token


def test_tiny_mobilenet_feature_map_becomes_tokens_in_row_major_order():
    vision = load_vision_backbone("tiny-mobilenet")
    assert isinstance(vision.backbone, keras_hub.models.MobileNetBackbone)
    images = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")
    features = keras.ops.convert_to_numpy(vision.backbone(images))
    assert features.shape == (2, 4, 4, 64)
    tokens = keras.ops.convert_to_numpy(vision_tokens(keras.ops.convert_to_tensor(features)))
    assert tokens.shape == (2, 16, 64)
    np.testing.assert_array_equal(tokens[:, 1 * 4 + 2], features[:, 1, 2])


def test_vision_preset_takes_weights_size_and_normalisation_from_the_folder(tmp_path):
    converter = keras_hub.layers.ViTImageConverter(image_size=(16, 16), scale=[0.1, 0.2, 0.3], offset=[-1.0, 0.0, 1.0])
    saved = save_vit_preset(tmp_path, converter)
    vision = load_vision_backbone(str(tmp_path))
    assert vision.pretrained and vision.backbone.name == "vision_backbone"
    assert vision.image_size == (16, 16)
    np.testing.assert_allclose(vision.scale, [0.1, 0.2, 0.3])
    np.testing.assert_allclose(vision.offset, [-1.0, 0.0, 1.0])
    for loaded, original in zip(vision.backbone.get_weights(), saved.get_weights()):
        np.testing.assert_array_equal(loaded, original)


def test_vision_preset_without_converter_uses_hugging_face_processor_config_or_defaults(tmp_path):
    save_vit_preset(tmp_path)
    plain = load_vision_backbone(str(tmp_path))
    assert (plain.image_size, plain.scale, plain.offset) == ((16, 16), 1 / 255, 0.0)
    processor = {"do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                 "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(processor))
    normalised = load_vision_backbone(str(tmp_path))
    np.testing.assert_allclose(normalised.scale, [1 / 127.5] * 3)
    np.testing.assert_allclose(normalised.offset, [-1.0] * 3)


def test_unknown_vision_spec_is_a_user_error_naming_it(tmp_path):
    with pytest.raises(UserError, match="unknown vision backbone 'tiny-resnet'"):
        load_vision_backbone("tiny-resnet")
    with pytest.raises(UserError, match="cannot load vision backbone .*config.json"):
        load_vision_backbone(str(tmp_path))  # an empty folder


def test_text_backbone_as_vision_spec_is_a_user_error(tmp_path):
    save_bert_preset(tmp_path)
    with pytest.raises(UserError, match="BertBackbone.*not an image backbone"):
        load_vision_backbone(str(tmp_path))


@pytest.mark.parametrize("load", [load_vision_backbone, lambda spec: load_text_backbone(spec, sequence_length=8)])
def test_named_preset_that_cannot_download_is_a_user_error(monkeypatch, load):
    def offline(*args, **kwargs):
        raise requests.exceptions.ConnectionError("Failed to resolve 'api.kaggle.com'")

    monkeypatch.setattr(keras_hub.models.Backbone, "from_preset", offline)
    with pytest.raises(UserError, match="backbone 'bert_tiny_en_uncased' is a keras-hub preset name: .*needs the "
                       "internet.*pass a local folder"):
        load("bert_tiny_en_uncased")


def test_tiny_text_backbone_learns_its_vocabulary_from_the_texts():
    text = load_text_backbone("tiny", sequence_length=12, texts=TEXTS)
    assert not text.pretrained and text.backbone.name == "text_backbone"
    assert {"red", "blue", "square", "circle"} <= set(text.tokenizer.vocabulary)
    assert text.backbone.vocabulary_size == text.tokenizer.vocabulary_size
    assert text.backbone.max_sequence_length == 12
    token_ids, padding_mask = text.tokenizer.encode_batch(["a red circle", "blue"])
    assert not np.any(token_ids == text.tokenizer.vocabulary.index("[UNK]"))
    sequence = text_sequence(text.backbone, token_ids, padding_mask)
    assert tuple(sequence.shape) == (2, 12, 64)


def test_text_preset_is_tokenized_with_its_vocabulary_and_casing(tmp_path):
    saved = save_bert_preset(tmp_path / "uncased", lowercase=True)
    text = load_text_backbone(str(tmp_path / "uncased"), sequence_length=10)
    assert text.pretrained and text.backbone.name == "text_backbone"
    assert text.tokenizer.vocabulary == VOCABULARY
    assert text.tokenizer.sequence_length == 10
    # Uncased BERT strips accents, as Hugging Face does (keras-hub would not).
    ids, _ = text.tokenizer.encode("Red CAFÉ")
    assert [text.tokenizer.vocabulary[i] for i in ids[:4]] == ["[CLS]", "red", "cafe", "[SEP]"]
    for loaded, original in zip(text.backbone.get_weights(), saved.get_weights()):
        np.testing.assert_array_equal(loaded, original)
    save_bert_preset(tmp_path / "cased", lowercase=False)
    cased = load_text_backbone(str(tmp_path / "cased"), sequence_length=10)
    assert not cased.tokenizer.lowercase and not cased.tokenizer.strip_accents
    ids, _ = cased.tokenizer.encode("Red red")
    assert [cased.tokenizer.vocabulary[i] for i in ids[:4]] == ["[CLS]", "[UNK]", "red", "[SEP]"]


def test_text_preset_shorter_than_the_sequence_length_is_a_user_error(tmp_path):
    save_bert_preset(tmp_path, max_sequence_length=8)
    with pytest.raises(UserError, match="sequence_length 16 is longer than .* allows \\(8\\)"):
        load_text_backbone(str(tmp_path), sequence_length=16)


def test_text_preset_without_wordpiece_vocabulary_is_a_user_error(tmp_path):
    keras_hub.models.GPT2Backbone(
        vocabulary_size=4, num_layers=1, num_heads=1, hidden_dim=8, intermediate_dim=8, max_sequence_length=16
    ).save_to_preset(tmp_path)
    byte_pair_vocabulary = {"<|endoftext|>": 0, "a": 1, "b": 2, "ab": 3}
    keras_hub.models.GPT2Tokenizer(vocabulary=byte_pair_vocabulary, merges=["a b"]).save_to_preset(tmp_path)
    with pytest.raises(UserError, match="GPT2Tokenizer; mmkeras supports WordPiece"):
        load_text_backbone(str(tmp_path), sequence_length=8)


def test_image_preset_as_text_spec_is_a_user_error(tmp_path):
    save_vit_preset(tmp_path)
    with pytest.raises(UserError, match="ViTBackbone.* is not a text backbone"):
        load_text_backbone(str(tmp_path), sequence_length=8)
