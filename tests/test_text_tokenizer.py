"""TextTokenizer: BERT-style WordPiece on Hugging Face `tokenizers`, one JSON file."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers.implementations import BertWordPieceTokenizer

from mmkeras.errors import UserError
from mmkeras.preprocessing.text import TextTokenizer
from tests.helpers.hugging_face_folders import WORDPIECE_VOCABULARY, write_text_folder

VOCABULARY = [
    *["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    *["a", "red", "circle", "cafe", "café", "##s", "Red", "東", "京"],
]
UNICODE_TEXTS = [
    "",
    "   ",
    "Café naïve résumé Ångström ß ½ ﬁ",
    "東京タワー 北京 中文字符",
    "한국어 문장입니다 서울",
    "emoji 😀🎉👍🏽 👨‍👩‍👧",
    "مرحبا بالعالم שלום עולם",
    "zero\u200bwidth\u200d joiner\ufeff bom",
    "control\x00\x01\x07\x1b chars\ttab\nnewline\r",
    "x" * 150 + " supercalifragilisticexpialidocious" * 3,
    "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ १२३ हिन्दी",
    "[CLS] [SEP] [PAD] [MASK] [UNK]",
]
TRAINING_TEXTS = [
    "a red circle on white",
    "a blue square",
    "the red square and the blue circle",
    "Café au lait, naïve résumé",
    None,
    "東京 and 서울",
]


@pytest.fixture(scope="module")
def trained():
    return TextTokenizer.train_from_texts(TRAINING_TEXTS * 3, vocabulary_size=200, sequence_length=16)


@pytest.fixture(scope="module")
def round_trips(tmp_path_factory, trained):
    """(original, reloaded) pairs: a trained uncased tokenizer and a cased one from a vocabulary."""
    cased = TextTokenizer.from_vocabulary(VOCABULARY, lowercase=False, strip_accents=False, sequence_length=12)
    pairs = []
    for index, tokenizer in enumerate([trained, cased]):
        path = tmp_path_factory.mktemp("tokenizer") / f"tokenizer{index}.json"
        tokenizer.save(path)
        pairs.append((tokenizer, TextTokenizer.load(path)))
    return pairs


def test_from_vocabulary_encodes_bert_style_with_cls_sep_and_padding():
    tokenizer = TextTokenizer.from_vocabulary(VOCABULARY, lowercase=True, strip_accents=None, sequence_length=8)
    token_ids, padding_mask = tokenizer.encode("A RED circles")
    assert token_ids.dtype == np.int32 and padding_mask.dtype == np.int32
    assert token_ids.tolist() == [2, 5, 6, 7, 10, 3, 0, 0]
    assert padding_mask.tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
    assert tokenizer.vocabulary == VOCABULARY
    assert tokenizer.vocabulary_size == len(VOCABULARY)
    assert tokenizer.sequence_length == 8


def test_case_and_accent_settings_are_applied_and_reported():
    uncased = TextTokenizer.from_vocabulary(VOCABULARY, lowercase=True, strip_accents=None, sequence_length=6)
    cased = TextTokenizer.from_vocabulary(VOCABULARY, lowercase=False, strip_accents=False, sequence_length=6)
    assert (uncased.lowercase, uncased.strip_accents) == (True, True)  # None follows lowercase, as in BERT
    assert (cased.lowercase, cased.strip_accents) == (False, False)
    cafe, cafe_accented, red_cased = VOCABULARY.index("cafe"), VOCABULARY.index("café"), VOCABULARY.index("Red")
    assert uncased.encode("Café")[0][1] == cafe
    assert cased.encode("café")[0][1] == cafe_accented
    assert cased.encode("Red")[0][1] == red_cased
    assert uncased.encode("Red")[0][1] == VOCABULARY.index("red")


def test_empty_text_is_cls_sep_then_padding(trained):
    token_ids, padding_mask = trained.encode("")
    cls_id, sep_id, pad_id = (trained.vocabulary.index(token) for token in ("[CLS]", "[SEP]", "[PAD]"))
    assert token_ids.tolist() == [cls_id, sep_id] + [pad_id] * 14
    assert padding_mask.tolist() == [1, 1] + [0] * 14


def test_truncation_keeps_sep_last(trained):
    token_ids, padding_mask = trained.encode(" ".join(["red circle blue square"] * 20))
    sep_id = trained.vocabulary.index("[SEP]")
    assert len(token_ids) == 16
    assert token_ids[0] == trained.vocabulary.index("[CLS]")
    assert token_ids[-1] == sep_id and (token_ids == sep_id).sum() == 1
    assert padding_mask.tolist() == [1] * 16


def test_special_token_names_in_a_text_are_plain_text(trained):
    token_ids, _ = trained.encode("[SEP] [CLS]")
    special = {trained.vocabulary.index(token) for token in ("[SEP]", "[CLS]")}
    assert [token_id in special for token_id in token_ids[1:5]] == [False] * 4


def test_a_word_longer_than_100_characters_is_one_unknown_token(trained):
    token_ids, padding_mask = trained.encode("a" * 101)
    assert token_ids[:3].tolist() == [trained.vocabulary.index(token) for token in ("[CLS]", "[UNK]", "[SEP]")]
    assert padding_mask.sum() == 3


def test_encode_batch_equals_encode_row_by_row(trained):
    token_ids, padding_mask = trained.encode_batch(UNICODE_TEXTS)
    assert token_ids.shape == padding_mask.shape == (len(UNICODE_TEXTS), 16)
    for row, text in enumerate(UNICODE_TEXTS):
        np.testing.assert_array_equal(token_ids[row], trained.encode(text)[0])
        np.testing.assert_array_equal(padding_mask[row], trained.encode(text)[1])
    empty_ids, empty_mask = trained.encode_batch([])
    assert empty_ids.shape == empty_mask.shape == (0, 16) and empty_ids.dtype == np.int32


@pytest.mark.parametrize("text", UNICODE_TEXTS)
def test_save_load_round_trip_gives_identical_ids(round_trips, text):
    for original, loaded in round_trips:
        for before, after in zip(original.encode(text), loaded.encode(text)):
            np.testing.assert_array_equal(before, after)
        assert (loaded.lowercase, loaded.strip_accents) == (original.lowercase, original.strip_accents)
        assert loaded.vocabulary == original.vocabulary
        assert loaded.sequence_length == original.sequence_length


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=80))
def test_round_trip_on_random_unicode(round_trips, text):
    for original, loaded in round_trips:
        original_ids, original_mask = original.encode(text)
        loaded_ids, loaded_mask = loaded.encode(text)
        np.testing.assert_array_equal(original_ids, loaded_ids)
        np.testing.assert_array_equal(original_mask, loaded_mask)
        assert original_mask[:2].tolist() == [1, 1] and original_mask.sum() == (original_ids != 0).sum()


TEXT_LIKE_TRAINING = st.lists(
    st.sampled_from(" ".join(filter(None, TRAINING_TEXTS)).split())
    | st.text(alphabet=st.characters(exclude_characters="[]", exclude_categories=("Cs",)), max_size=8),
    max_size=12,
).map(" ".join)


@settings(max_examples=150, deadline=None)
@given(TEXT_LIKE_TRAINING)
def test_matches_the_reference_bert_wordpiece_tokenizer(trained, text):
    """Same ids as `tokenizers`' own BertWordPieceTokenizer on the same vocabulary and settings."""
    token_ids = {token: index for index, token in enumerate(trained.vocabulary)}
    reference = BertWordPieceTokenizer(token_ids, lowercase=True)
    reference.enable_truncation(max_length=trained.sequence_length)
    reference.enable_padding(length=trained.sequence_length)
    encoding = reference.encode(text)
    assert trained.encode(text)[0].tolist() == encoding.ids
    assert trained.encode(text)[1].tolist() == encoding.attention_mask


def test_trained_vocabulary_starts_with_the_special_tokens_and_covers_every_character(trained):
    assert trained.vocabulary[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert (trained.lowercase, trained.strip_accents) == (True, True)
    unknown_id = trained.vocabulary.index("[UNK]")
    for text in filter(None, TRAINING_TEXTS):
        assert unknown_id not in trained.encode(text)[0]
    assert "red" in trained.vocabulary and "circle" in trained.vocabulary  # frequent words stay whole
    assert len(trained.encode("circle")[0].nonzero()[0]) == 3


def test_trained_vocabulary_respects_the_size_limit():
    small = TextTokenizer.train_from_texts(TRAINING_TEXTS, vocabulary_size=20, sequence_length=8)
    assert small.vocabulary_size == 20
    assert small.encode("zzz qqq")[0][1] == small.vocabulary.index("[UNK]")  # unseen characters
    with pytest.raises(ValueError, match="vocabulary_size"):
        TextTokenizer.train_from_texts(TRAINING_TEXTS, vocabulary_size=6, sequence_length=8)


def test_training_is_deterministic_across_processes(tmp_path):
    """Hugging Face's WordPieceTrainer is not (hash-map order); ours must be."""
    texts = [f"w{index % 37} v{index % 11} shared{index % 5} ties{index}" for index in range(300)]
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    script = (
        "import json, sys; from mmkeras.preprocessing.text import TextTokenizer; "
        "texts = json.load(open(sys.argv[1])); "
        "print(json.dumps(TextTokenizer.train_from_texts(texts, vocabulary_size=90, sequence_length=8).vocabulary))"
    )
    vocabularies = []
    for hash_seed in ("1", "2"):
        environment = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "texts.json")],
            env=environment, capture_output=True, text=True, check=True,
        )
        vocabularies.append(json.loads(result.stdout))
    assert vocabularies[0] == vocabularies[1]
    assert len(vocabularies[0]) == 90


def test_duplicate_token_is_a_clear_error():
    with pytest.raises(UserError, match="'red' twice"):
        TextTokenizer.from_vocabulary([*VOCABULARY, "red"], lowercase=True, strip_accents=None, sequence_length=8)


def test_missing_special_tokens_are_named():
    with pytest.raises(UserError, match=r"\[CLS\], \[SEP\]"):
        TextTokenizer.from_vocabulary(["[PAD]", "[UNK]", "a"], lowercase=True, strip_accents=None, sequence_length=8)


def test_sequence_length_must_fit_cls_and_sep():
    with pytest.raises(UserError, match="sequence_length"):
        TextTokenizer.from_vocabulary(VOCABULARY, lowercase=True, strip_accents=None, sequence_length=1)


def test_loading_a_missing_or_foreign_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot read tokenizer"):
        TextTokenizer.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text('{"hello": 1}')
    with pytest.raises(UserError, match="bad.json: not a tokenizer file"):
        TextTokenizer.load(tmp_path / "bad.json")
    unpadded = BertWordPieceTokenizer({token: index for index, token in enumerate(VOCABULARY)})
    unpadded.save(str(tmp_path / "unpadded.json"))
    with pytest.raises(UserError, match="truncation and padding"):
        TextTokenizer.load(tmp_path / "unpadded.json")


def test_a_pad_token_setting_that_is_not_text_is_passed_over(tmp_path):
    """tokenizer_config.json's pad_token as something other than a token (here a number): the next candidate."""
    write_text_folder("bert", tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"pad_token": 1}))
    tokenizer = TextTokenizer.from_hugging_face_folder(tmp_path, sequence_length=8)
    assert tokenizer.pad_id == WORDPIECE_VOCABULARY.index("[PAD]")
