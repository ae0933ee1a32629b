"""`TextTokenizer`: the one tokenizer of training and the device.

It wraps a Hugging Face `tokenizers.Tokenizer` that truncates and pads to a
fixed `sequence_length`. All of it lives in one `tokenizer.json`, so the
training pipeline and the device runtime load the same file and produce the
same ids. It comes from one of three places:

- `from_hugging_face_folder`: a Hugging Face checkpoint's own `tokenizer.json`
  (WordPiece, byte-level BPE, Unigram: whatever the checkpoint was trained
  with), kept as it is (normalizer, pre-tokenizer, model, special tokens,
  post-processor) except for the truncation and padding length; or, for a
  BERT-family folder with only `vocab.txt`, a BERT WordPiece built from it
  and `tokenizer_config.json`, as Hugging Face's BertTokenizerFast does;
- `from_vocabulary`: a BERT WordPiece (the BERT normalizer and pre-tokenizer,
  `[CLS] text [SEP]`) over a keras-hub preset's vocabulary;
- `train_from_texts`: a BERT WordPiece whose vocabulary is learned from the
  training texts, for a randomly initialised backbone.

keras-hub's own tokenizers differ from Hugging Face's (accents, case folding,
Hangul, control characters, long words) and need vocabulary files that many
Hugging Face folders do not ship, so mmkeras never uses them to tokenize.

Special tokens are inserted only by the post-processor: a literal "[SEP]" typed
in a text is ordinary text, not a separator.
"""

import collections
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from mmkeras.errors import UserError

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
REQUIRED_TOKENS = (PAD, UNK, CLS, SEP)
# The order of the special tokens in a vocabulary learned by `train_from_texts`.
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
CONTINUATION_PREFIX = "##"
# Hugging Face's default: longer words become a single [UNK].
MAX_CHARS_PER_WORD = 100
# Files of a Hugging Face folder that say how it tokenizes.
HF_TOKENIZER_FILE = "tokenizer.json"
HF_VOCABULARY_FILE = "vocab.txt"
HF_TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
# Padding tokens of the encoder families, for a tokenizer.json that names none.
KNOWN_PAD_TOKENS = (PAD, "<pad>")


class TextTokenizer:
    """Tokenizer that turns texts into fixed-length token ids.

    Build one with `TextTokenizer.from_hugging_face_folder` (a checkpoint's
    own tokenizer), `TextTokenizer.from_vocabulary` (a WordPiece vocabulary)
    or `TextTokenizer.train_from_texts` (a vocabulary learned from training
    texts, for a randomly initialised backbone), or `TextTokenizer.load` a
    saved `tokenizer.json`.

    Args:
        tokenizer: a `tokenizers.Tokenizer` with truncation and padding
            enabled to one length.

    Example:
    >>> tokenizer = TextTokenizer.from_vocabulary(
    ...     ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "red", "circle"],
    ...     lowercase=True, strip_accents=None, sequence_length=6)
    >>> token_ids, padding_mask = tokenizer.encode("A red circle")
    >>> token_ids.tolist(), padding_mask.tolist()
    ([2, 1, 4, 5, 3, 0], [1, 1, 1, 1, 1, 0])
    """

    def __init__(self, tokenizer: Tokenizer):
        if tokenizer.truncation is None or tokenizer.padding is None:
            raise UserError("expected a tokenizer with truncation and padding to a fixed length")
        if tokenizer.truncation["max_length"] != tokenizer.padding["length"]:
            raise UserError("the tokenizer's truncation and padding lengths differ")
        self._tokenizer = tokenizer

    @classmethod
    def from_vocabulary(
        cls,
        vocabulary: list[str],
        *,
        lowercase: bool,
        strip_accents: bool | None,
        sequence_length: int,
    ) -> "TextTokenizer":
        """A tokenizer for an existing WordPiece vocabulary.

        Args:
            vocabulary: the tokens in id order; must contain `[PAD]`, `[UNK]`,
                `[CLS]` and `[SEP]`, each token once.
            lowercase: lowercase texts before splitting them (uncased models).
            strip_accents: remove accents; `None` follows `lowercase`, as in BERT.
            sequence_length: ids per text, `[CLS]` and `[SEP]` included; longer
                texts are truncated, shorter ones padded with `[PAD]`.
        """
        if sequence_length < 2:
            raise UserError(f"sequence_length must be at least 2 ([CLS] and [SEP]), got {sequence_length}")
        token_ids = _index_vocabulary(vocabulary)
        tokenizer = Tokenizer(
            models.WordPiece(
                token_ids,
                unk_token=UNK,
                continuing_subword_prefix=CONTINUATION_PREFIX,
                max_input_chars_per_word=MAX_CHARS_PER_WORD,
            )
        )
        tokenizer.normalizer = _bert_normalizer(lowercase, strip_accents)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{CLS} $A {SEP}",
            special_tokens=[(CLS, token_ids[CLS]), (SEP, token_ids[SEP])],
        )
        tokenizer.enable_truncation(max_length=sequence_length)
        tokenizer.enable_padding(pad_id=token_ids[PAD], pad_token=PAD, length=sequence_length)
        return cls(tokenizer)

    @classmethod
    def from_hugging_face_folder(cls, folder: str | Path, *, sequence_length: int) -> "TextTokenizer":
        """The tokenizer a Hugging Face checkpoint folder was trained with.

        `tokenizer.json` is used when the folder has one (whatever its model:
        WordPiece, BPE, Unigram), unchanged but for truncation and padding to
        `sequence_length` with the folder's padding token. A folder with only
        `vocab.txt` gets Hugging Face's BERT tokenizer for it, cased or not
        (and stripping accents or not) as `tokenizer_config.json` says.

        Args:
            folder: the checkpoint folder.
            sequence_length: ids per text, special tokens included.

        Raises:
            UserError: the folder has neither file, or no padding token.

        Example:
        >>> folder = "all-MiniLM-L6-v2"                                                # doctest: +SKIP
        >>> tokenizer = TextTokenizer.from_hugging_face_folder(folder, sequence_length=64)  # doctest: +SKIP
        >>> tokenizer.encode("a red circle")[0][:5].tolist()                           # doctest: +SKIP
        [101, 1037, 2417, 4418, 102]
        """
        folder = Path(folder)
        config_path = folder / HF_TOKENIZER_CONFIG_FILE
        settings = _read_json(config_path) if config_path.is_file() else {}
        if (folder / HF_TOKENIZER_FILE).is_file():
            try:
                tokenizer = Tokenizer.from_file(str(folder / HF_TOKENIZER_FILE))
            except Exception as error:  # tokenizers raises plain Exception for a bad file
                raise UserError(f"not a tokenizer file: {error}", path=folder / HF_TOKENIZER_FILE) from None
            return cls.with_length(tokenizer, sequence_length, _pad_token(tokenizer, settings))
        if (folder / HF_VOCABULARY_FILE).is_file():
            vocabulary = (folder / HF_VOCABULARY_FILE).read_text(encoding="utf-8").splitlines()
            # Hugging Face's BertTokenizer defaults: uncased, accents follow the casing.
            return cls.from_vocabulary(
                vocabulary,
                lowercase=settings.get("do_lower_case", True),
                strip_accents=settings.get("strip_accents"),
                sequence_length=sequence_length,
            )
        raise UserError(
            f"the folder has no {HF_TOKENIZER_FILE} or {HF_VOCABULARY_FILE}: mmkeras tokenizes with the "
            "checkpoint's own tokenizer",
            path=folder,
        )

    @classmethod
    def with_length(cls, tokenizer: Tokenizer, sequence_length: int, pad_token: str) -> "TextTokenizer":
        """`tokenizer` set to truncate and pad every text to `sequence_length` ids with `pad_token`.

        Truncation keeps the special tokens the post-processor adds (e.g. the
        closing `[SEP]` or `</s>`) and cuts the text before them.

        Args:
            tokenizer: a `tokenizers.Tokenizer` (changed in place).
            sequence_length: ids per text, special tokens included.
            pad_token: a token of the vocabulary to pad with.
        """
        special_tokens = tokenizer.post_processor.num_special_tokens_to_add(False) if tokenizer.post_processor else 0
        if sequence_length <= special_tokens:
            raise UserError(
                f"sequence_length must be more than the {special_tokens} special tokens of a text, "
                f"got {sequence_length}"
            )
        tokenizer.enable_truncation(max_length=sequence_length)
        tokenizer.enable_padding(pad_id=tokenizer.token_to_id(pad_token), pad_token=pad_token, length=sequence_length)
        return cls(tokenizer)

    @classmethod
    def train_from_texts(
        cls, texts: Iterable[str | None], *, vocabulary_size: int, sequence_length: int
    ) -> "TextTokenizer":
        """A lowercasing tokenizer whose vocabulary is learned from `texts`.

        The vocabulary holds `[PAD]` (id 0), `[UNK]`, `[CLS]`, `[SEP]`,
        `[MASK]`, every character seen (as a word start and as a `##`
        continuation, most frequent first while room is left), then the most
        frequent whole words. Hugging Face's WordPieceTrainer is not used
        because it breaks frequency ties differently in every process; this
        vocabulary depends on the texts only (ties go alphabetically), so the
        same data always gives the same ids.

        Args:
            texts: training texts; `None` entries (missing texts) are skipped.
            vocabulary_size: the most tokens to keep (at least 7).
            sequence_length: ids per text, `[CLS]` and `[SEP]` included.
        """
        if vocabulary_size < len(SPECIAL_TOKENS) + 2:
            raise ValueError(f"vocabulary_size must be at least {len(SPECIAL_TOKENS) + 2}, got {vocabulary_size}")
        lowercase, strip_accents = True, None
        word_counts = _count_words(texts, _bert_normalizer(lowercase, strip_accents))
        vocabulary = [*SPECIAL_TOKENS, *_learn_tokens(word_counts, vocabulary_size - len(SPECIAL_TOKENS))]
        return cls.from_vocabulary(
            vocabulary, lowercase=lowercase, strip_accents=strip_accents, sequence_length=sequence_length
        )

    @classmethod
    def load(cls, path: str | Path) -> "TextTokenizer":
        """Load a `tokenizer.json` written by `save`."""
        path = Path(path)
        try:
            serialized = path.read_text(encoding="utf-8")
        except OSError as error:
            raise UserError(f"cannot read tokenizer: {error.strerror}", path=path) from None
        try:
            tokenizer = Tokenizer.from_str(serialized)
        except Exception as error:  # tokenizers raises plain Exception for a bad file
            raise UserError(f"not a tokenizer file: {error}", path=path) from None
        try:
            return cls(tokenizer)
        except UserError as error:
            raise UserError(error.reason, path=path) from None

    def save(self, path: str | Path):
        """Write the whole tokenizer (vocabulary, settings, lengths) as one JSON file."""
        self._tokenizer.save(str(path))

    def encode(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and padding mask of one text, both int32 `[sequence_length]`."""
        encoding = self._tokenizer.encode(text)
        return np.asarray(encoding.ids, np.int32), np.asarray(encoding.attention_mask, np.int32)

    def encode_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and padding masks of many texts, both int32 `[N, sequence_length]`."""
        encodings = self._tokenizer.encode_batch(list(texts))
        shape = (len(encodings), self.sequence_length)
        token_ids = np.asarray([encoding.ids for encoding in encodings], np.int32).reshape(shape)
        padding_mask = np.asarray([encoding.attention_mask for encoding in encodings], np.int32).reshape(shape)
        return token_ids, padding_mask

    @property
    def sequence_length(self) -> int:
        return self._padding["length"]

    @property
    def _padding(self) -> dict:
        padding = self._tokenizer.padding
        assert padding is not None, "every constructor pads to the sequence length (enable_padding)"
        return padding

    @property
    def vocabulary_size(self) -> int:
        return self._tokenizer.get_vocab_size()

    @property
    def vocabulary(self) -> list[str]:
        """The tokens in id order."""
        token_ids = self._tokenizer.get_vocab()
        return sorted(token_ids, key=token_ids.__getitem__)

    @property
    def model_type(self) -> str:
        """The subword model: `wordpiece`, `bpe`, `unigram` or `wordlevel`."""
        return type(self._tokenizer.model).__name__.lower()

    @property
    def pad_id(self) -> int:
        return self._padding["pad_id"]

    @property
    def lowercase(self) -> bool | None:
        """Whether the BERT normalizer lowercases; `None` for other normalizers."""
        normalizer = self._tokenizer.normalizer
        return normalizer.lowercase if isinstance(normalizer, normalizers.BertNormalizer) else None

    @property
    def strip_accents(self) -> bool | None:
        """Whether the BERT normalizer removes accents (`None` given at construction resolved, as BERT
        does); `None` for other normalizers."""
        if self.lowercase is None:
            return None
        strip_accents = self._tokenizer.normalizer.strip_accents
        return self.lowercase if strip_accents is None else strip_accents

    def count_truncated(self, texts: Iterable[str | None]) -> int:
        """How many of `texts` are longer than `sequence_length` ids and lose their end (`None` skipped)."""
        encodings = self._tokenizer.encode_batch([text for text in texts if text is not None])
        return sum(1 for encoding in encodings if encoding.overflowing)

    def __repr__(self):
        return (
            f"TextTokenizer({self.model_type}, vocabulary_size={self.vocabulary_size}, "
            f"sequence_length={self.sequence_length}, lowercase={self.lowercase}, strip_accents={self.strip_accents})"
        )


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"cannot read: {error}", path=path) from None


def _pad_token(tokenizer: Tokenizer, settings: dict) -> str:
    """The padding token `tokenizer_config.json` names, else the one `tokenizer.json` pads with, else a known one."""
    named = settings.get("pad_token")
    if isinstance(named, dict):  # AddedToken as saved by transformers
        named = named.get("content")
    padding = tokenizer.padding
    for candidate in (named, padding and padding["pad_token"], *KNOWN_PAD_TOKENS):
        if isinstance(candidate, str) and candidate and tokenizer.token_to_id(candidate) is not None:
            return candidate
    raise UserError(f"the tokenizer has no padding token (none of {', '.join(KNOWN_PAD_TOKENS)})")


def _bert_normalizer(lowercase: bool, strip_accents: bool | None) -> normalizers.BertNormalizer:
    return normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=strip_accents, lowercase=lowercase
    )


def _index_vocabulary(vocabulary: list[str]) -> dict[str, int]:
    """Token -> id, refusing duplicates and vocabularies without the BERT special tokens."""
    token_ids = {}
    for index, token in enumerate(vocabulary):
        if token in token_ids:
            raise UserError(
                f"the vocabulary lists token {token!r} twice (ids {token_ids[token]} and {index}); "
                "tokens in a vocabulary must be unique"
            )
        token_ids[token] = index
    missing = [token for token in REQUIRED_TOKENS if token not in token_ids]
    if missing:
        raise UserError(f"the vocabulary lacks the special token(s) {', '.join(missing)}")
    return token_ids


def _count_words(texts: Iterable[str | None], normalizer: normalizers.BertNormalizer) -> collections.Counter:
    """How often each word occurs, words split exactly as the tokenizer will split them."""
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    word_counts = collections.Counter()
    for text in texts:
        if text is None:
            continue
        words = pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
        word_counts.update(word for word, _ in words)
    return word_counts


def _learn_tokens(word_counts: collections.Counter, budget: int) -> list[str]:
    """Characters (start and `##` continuation), then whole words, most frequent first."""
    char_counts = collections.Counter()
    for word, count in word_counts.items():
        for char in word:
            char_counts[char] += count
    chars = _most_frequent(char_counts)[: budget // 2]
    tokens = [*chars, *(CONTINUATION_PREFIX + char for char in chars)]
    known = set(tokens)
    words = [
        word
        for word in _most_frequent(word_counts)
        if word not in known and len(word) <= MAX_CHARS_PER_WORD
    ]
    return tokens + words[: budget - len(tokens)]


def _most_frequent(counts: collections.Counter) -> list[str]:
    return sorted(counts, key=lambda item: (-counts[item], item))
