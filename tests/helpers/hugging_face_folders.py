"""Tiny random Hugging Face text checkpoint folders, written in each family's on-disk layout.

(Vision folders: `vision_folders.py`.) `write_text_folder(family, folder)` writes what `save_pretrained` writes for
that family: `config.json` with the family's keys, `model.safetensors` with
the weight names keras-hub's `convert_<family>.py` reads (Hugging Face
`Linear` weights as `[out, in]`), `tokenizer.json` built with the `tokenizers`
library as the family's fast tokenizer is (WordPiece for BERT/DistilBERT,
byte-level BPE for RoBERTa, Unigram with Metaspace for XLM-RoBERTa and
ALBERT) and `tokenizer_config.json`; BERT-family folders can also (or only)
get a `vocab.txt`.
"""

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

HIDDEN, HEADS, INTERMEDIATE, EMBEDDING = 8, 2, 16, 4
MAX_POSITIONS = 32
# Hugging Face RoBERTa and XLM-R keep two position rows before the first real one.
ROBERTA_POSITION_OFFSET = 2
ROBERTA_SPECIAL_IDS = {"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}
TEXTS = ["A red circle", "the blue squares", "naïve Café", "red red red blue circle square a"]
WORDPIECE_VOCABULARY = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "a", "the", "red", "blue", "circle", "square", "cafe", "naive", "##s",
]
UNIGRAM_WORDS = ["▁a", "▁the", "▁red", "▁blue", "▁circle", "▁square", "▁cafe", "▁naive", "s", "▁"]
LETTERS = [chr(code) for code in range(ord("a"), ord("z") + 1)]

# Per family: (special tokens in id order, [start, end] tokens a text is wrapped in, the padding token).
SPECIAL_TOKENS = {
    "bert": (("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"), ("[CLS]", "[SEP]"), "[PAD]"),
    "distilbert": (("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"), ("[CLS]", "[SEP]"), "[PAD]"),
    "roberta": (("<s>", "<pad>", "</s>", "<unk>", "<mask>"), ("<s>", "</s>"), "<pad>"),
    "xlm-roberta": (("<s>", "<pad>", "</s>", "<unk>"), ("<s>", "</s>"), "<pad>"),
    "albert": (("<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"), ("[CLS]", "[SEP]"), "<pad>"),
}
FAMILIES = tuple(SPECIAL_TOKENS)


def write_text_folder(family, folder, *, files=("tokenizer.json",), max_positions=MAX_POSITIONS, seed=0):
    """Write a tiny random `family` checkpoint into `folder` and return its safetensors tensors.

    Args:
        family: a Hugging Face `model_type`: bert, distilbert, roberta, xlm-roberta, albert.
        folder: where to write.
        files: the tokenizer files to write: `tokenizer.json` and/or (BERT
            families) `vocab.txt`.
        max_positions: the model's position limit in tokens (Hugging Face's
            `max_position_embeddings` less RoBERTa's reserved rows).
        seed: seeds the random weights.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = TOKENIZERS[family]()
    rng = np.random.default_rng(seed)
    config, tensors = WEIGHTS[family](rng, tokenizer.get_vocab_size(), max_positions)
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    specials, _, pad = SPECIAL_TOKENS[family]
    tokenizer_config = {"pad_token": pad, "model_max_length": max_positions}
    if family in ("bert", "distilbert"):
        tokenizer_config["do_lower_case"] = True
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    if "tokenizer.json" in files:
        tokenizer.save(str(folder / "tokenizer.json"))
    if "vocab.txt" in files:
        (folder / "vocab.txt").write_text("\n".join(WORDPIECE_VOCABULARY) + "\n", encoding="utf-8")
    return tensors


def family_token_ids(family, folder, text, sequence_length):
    """The ids the family's own tokenizer file gives `text`, truncated and padded as Hugging Face does."""
    tokenizer = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
    _, _, pad = SPECIAL_TOKENS[family]
    tokenizer.enable_truncation(max_length=sequence_length)
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id(pad), pad_token=pad, length=sequence_length)
    return tokenizer.encode(text).ids


# -- tokenizers ---------------------------------------------------------------------------------


def _wordpiece_tokenizer():
    vocabulary = {token: index for index, token in enumerate(WORDPIECE_VOCABULARY)}
    tokenizer = Tokenizer(models.WordPiece(vocabulary, unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocabulary["[CLS]"]), ("[SEP]", vocabulary["[SEP]"])],
    )
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS["bert"][0]))
    return tokenizer


def _byte_level_bpe_tokenizer():
    specials = list(SPECIAL_TOKENS["roberta"][0])
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(TEXTS * 4, trainer=trainer)
    tokenizer.post_processor = processors.RobertaProcessing(
        ("</s>", tokenizer.token_to_id("</s>")), ("<s>", tokenizer.token_to_id("<s>")),
        trim_offsets=True, add_prefix_space=False,
    )
    return tokenizer


def _unigram_tokenizer(family, normalizer):
    specials, (start, end), _ = SPECIAL_TOKENS[family]
    pieces = [*specials, *UNIGRAM_WORDS, *LETTERS]
    scores = [(piece, 0.0 if piece in specials else -float(len(pieces) - index) / 10) for index, piece in
              enumerate(pieces)]
    tokenizer = Tokenizer(models.Unigram(scores, unk_id=pieces.index("<unk>"), byte_fallback=False))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{start}:0 $A:0 {end}:0",
        pair=f"{start}:0 $A:0 {end}:0 $B:1 {end}:1",
        special_tokens=[(start, pieces.index(start)), (end, pieces.index(end))],
    )
    tokenizer.add_special_tokens(list(specials))
    return tokenizer


def _xlm_roberta_tokenizer():
    tokenizer = _unigram_tokenizer(
        "xlm-roberta", normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    )
    tokenizer.add_special_tokens(["<mask>"])
    return tokenizer


def _albert_tokenizer():
    return _unigram_tokenizer(
        "albert",
        normalizers.Sequence([
            normalizers.Replace("``", '"'), normalizers.Replace("''", '"'), normalizers.NFKD(),
            normalizers.StripAccents(), normalizers.Lowercase(), normalizers.Replace(Regex(" {2,}"), " "),
        ]),
    )


TOKENIZERS = {
    "bert": _wordpiece_tokenizer,
    "distilbert": _wordpiece_tokenizer,
    "roberta": _byte_level_bpe_tokenizer,
    "xlm-roberta": _xlm_roberta_tokenizer,
    "albert": _albert_tokenizer,
}


# -- weights and configs ------------------------------------------------------------------------


class RandomTensors(dict):
    """Random float32 tensors by Hugging Face name."""

    def __init__(self, rng):
        super().__init__()
        self._rng = rng

    def add(self, name, *shape):
        self[name] = self._rng.normal(0.0, 0.2, shape).astype(np.float32)

    def linear(self, name, inputs, outputs):
        self.add(f"{name}.weight", outputs, inputs)  # torch.nn.Linear: [out, in]
        self.add(f"{name}.bias", outputs)

    def layer_norm(self, name, width):
        self.add(f"{name}.weight", width)
        self.add(f"{name}.bias", width)


def _encoder_layer(tensors, attention, attention_norm, feedforward, output_norm):
    """One transformer layer under a family's names: query, key, value and output projections, the norm
    after attention, the two feed-forward projections and the norm after them."""
    for name in attention:
        tensors.linear(name, HIDDEN, HIDDEN)
    tensors.layer_norm(attention_norm, HIDDEN)
    tensors.linear(feedforward[0], HIDDEN, INTERMEDIATE)
    tensors.linear(feedforward[1], INTERMEDIATE, HIDDEN)
    tensors.layer_norm(output_norm, HIDDEN)


def _bert_encoder(tensors, prefix):
    layer = f"{prefix}encoder.layer.0"
    _encoder_layer(
        tensors,
        [*(f"{layer}.attention.self.{part}" for part in ("query", "key", "value")), f"{layer}.attention.output.dense"],
        f"{layer}.attention.output.LayerNorm",
        (f"{layer}.intermediate.dense", f"{layer}.output.dense"),
        f"{layer}.output.LayerNorm",
    )


def _bert_config(model_type, vocabulary_size, positions, **extra):
    return {
        "model_type": model_type,
        "vocab_size": vocabulary_size,
        "hidden_size": HIDDEN,
        "num_hidden_layers": 1,
        "num_attention_heads": HEADS,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": positions,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "layer_norm_eps": 1e-12,
        **extra,
    }


def _bert_layout(rng, prefix, vocabulary_size, positions, token_types, pooler=False):
    """Embeddings and one encoder layer under BERT's names (RoBERTa and XLM-R share them)."""
    tensors = RandomTensors(rng)
    tensors.add(f"{prefix}embeddings.word_embeddings.weight", vocabulary_size, HIDDEN)
    tensors.add(f"{prefix}embeddings.position_embeddings.weight", positions, HIDDEN)
    tensors.add(f"{prefix}embeddings.token_type_embeddings.weight", token_types, HIDDEN)
    tensors.layer_norm(f"{prefix}embeddings.LayerNorm", HIDDEN)
    _bert_encoder(tensors, prefix)
    if pooler:
        tensors.linear(f"{prefix}pooler.dense", HIDDEN, HIDDEN)
    return dict(tensors)


def _bert_weights(rng, vocabulary_size, max_positions):
    # A sentence-transformers BertModel: no `bert.` prefix, LayerNorm weight/bias.
    config = _bert_config(
        "bert", vocabulary_size, max_positions, architectures=["BertModel"], type_vocab_size=2, pad_token_id=0
    )
    return config, _bert_layout(rng, "", vocabulary_size, max_positions, token_types=2, pooler=True)


def _roberta_weights(rng, vocabulary_size, max_positions):
    # RobertaForMaskedLM's names (keras-hub reads the `roberta.` prefix).
    positions = max_positions + ROBERTA_POSITION_OFFSET
    config = _bert_config(
        "roberta", vocabulary_size, positions, architectures=["RobertaForMaskedLM"], type_vocab_size=1,
        **ROBERTA_SPECIAL_IDS,
    )
    return config, _bert_layout(rng, "roberta.", vocabulary_size, positions, token_types=1)


def _xlm_roberta_weights(rng, vocabulary_size, max_positions):
    positions = max_positions + ROBERTA_POSITION_OFFSET
    config = _bert_config(
        "xlm-roberta", vocabulary_size, positions, architectures=["XLMRobertaModel"], type_vocab_size=1,
        **ROBERTA_SPECIAL_IDS,
    )
    return config, _bert_layout(rng, "", vocabulary_size, positions, token_types=1)


def _distilbert_weights(rng, vocabulary_size, max_positions):
    tensors = RandomTensors(rng)
    tensors.add("distilbert.embeddings.word_embeddings.weight", vocabulary_size, HIDDEN)
    tensors.add("distilbert.embeddings.position_embeddings.weight", max_positions, HIDDEN)
    tensors.layer_norm("distilbert.embeddings.LayerNorm", HIDDEN)
    layer = "distilbert.transformer.layer.0"
    _encoder_layer(
        tensors,
        [f"{layer}.attention.{part}" for part in ("q_lin", "k_lin", "v_lin", "out_lin")],
        f"{layer}.sa_layer_norm",
        (f"{layer}.ffn.lin1", f"{layer}.ffn.lin2"),
        f"{layer}.output_layer_norm",
    )
    config = {
        "model_type": "distilbert",
        "architectures": ["DistilBertForMaskedLM"],
        "vocab_size": vocabulary_size,
        "dim": HIDDEN,
        "n_layers": 1,
        "n_heads": HEADS,
        "hidden_dim": INTERMEDIATE,
        "dropout": 0.1,
        "attention_dropout": 0.1,
        "max_position_embeddings": max_positions,
        "pad_token_id": 0,
    }
    return config, dict(tensors)


def _albert_weights(rng, vocabulary_size, max_positions):
    tensors = RandomTensors(rng)
    tensors.add("albert.embeddings.word_embeddings.weight", vocabulary_size, EMBEDDING)
    tensors.add("albert.embeddings.position_embeddings.weight", max_positions, EMBEDDING)
    tensors.add("albert.embeddings.token_type_embeddings.weight", 2, EMBEDDING)
    tensors.layer_norm("albert.embeddings.LayerNorm", EMBEDDING)
    tensors.linear("albert.encoder.embedding_hidden_mapping_in", EMBEDDING, HIDDEN)
    layer = "albert.encoder.albert_layer_groups.0.albert_layers.0"
    _encoder_layer(
        tensors,
        [f"{layer}.attention.{part}" for part in ("query", "key", "value", "dense")],
        f"{layer}.attention.LayerNorm",
        (f"{layer}.ffn", f"{layer}.ffn_output"),
        f"{layer}.full_layer_layer_norm",
    )
    tensors.linear("albert.pooler", HIDDEN, HIDDEN)
    config = _bert_config(
        "albert", vocabulary_size, max_positions, architectures=["AlbertForMaskedLM"], embedding_size=EMBEDDING,
        num_hidden_groups=1, inner_group_num=1, type_vocab_size=2, pad_token_id=0,
    )
    return config, dict(tensors)


WEIGHTS = {
    "bert": _bert_weights,
    "distilbert": _distilbert_weights,
    "roberta": _roberta_weights,
    "xlm-roberta": _xlm_roberta_weights,
    "albert": _albert_weights,
}

# The safetensors name of each family's token embedding table.
TOKEN_EMBEDDING = {
    "bert": "embeddings.word_embeddings.weight",
    "distilbert": "distilbert.embeddings.word_embeddings.weight",
    "roberta": "roberta.embeddings.word_embeddings.weight",
    "xlm-roberta": "embeddings.word_embeddings.weight",
    "albert": "albert.embeddings.word_embeddings.weight",
}
