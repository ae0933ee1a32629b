"""`clean_text`: the one check and normalisation of a text before it is tokenized.

The manifest reader (training, evaluation) and the device runtime
(`MultimodalPreprocessor`, so `Predictor.predict` and `mmkeras predict`) call
this one function, so a text is accepted, refused or changed the same way
everywhere. The rules, in order (what a mobile developer re-implements):

1. bytes are decoded as UTF-8; bytes that are not UTF-8 are refused;
2. a string holding a lone surrogate (U+D800..U+DFFF: what Python makes of
   command-line bytes that are not UTF-8, or a JSON `"\\ud800"`) is refused;
3. a text of more than `MAX_TEXT_CHARACTERS` characters is refused: the
   model reads at most a few hundred tokens, and the tokenizer would spend
   seconds per megabyte before truncating (measured: 60 s for 10 MB);
4. every control character (Unicode category Cc) except tab, line feed and
   carriage return, NUL included, becomes a space.

Refusals raise `InvalidTextError`, a `UserError` (exit code 2 in the CLI).
"""

import re

from mmkeras.errors import UserError

# C0 and C1 control characters, except \t, \n and \r (whitespace the tokenizer splits on).
_CONTROL_CHARACTERS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
# The longest text accepted: far beyond any sequence length, and about 0.6 s of tokenizing at worst.
MAX_TEXT_CHARACTERS = 100_000


class InvalidTextError(UserError):
    """A text that cannot be tokenized: not UTF-8, a lone surrogate, or not a string.

    Args:
        problem: what the text is, e.g. `not valid UTF-8 (byte 0xff at position 3)`.

    Example:
    >>> str(InvalidTextError("not valid UTF-8"))
    'the text is not valid UTF-8'
    """

    def __init__(self, problem: str):
        self.problem = problem
        super().__init__(f"the text is {problem}")


def clean_text(text: str | bytes) -> str:
    """`text` checked and normalised as the module docstring says.

    Args:
        text: a string, or UTF-8 bytes.

    Returns:
        The text with control characters replaced by spaces.

    Raises:
        InvalidTextError: the bytes are not UTF-8, the string holds a lone
            surrogate or is longer than `MAX_TEXT_CHARACTERS`, or `text` is
            neither a string nor bytes.

    Example:
    >>> clean_text("tab\\tand NUL\\x00 kept apart")
    'tab\\tand NUL  kept apart'
    >>> clean_text(b"caf\\xc3\\xa9")
    'café'
    """
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as error:
            raise InvalidTextError(
                f"not valid UTF-8 (byte 0x{text[error.start]:02x} at position {error.start})"
            ) from None
    if not isinstance(text, str):
        raise InvalidTextError(f"of type {type(text).__name__}, not a string")
    if len(text) > MAX_TEXT_CHARACTERS:
        raise InvalidTextError(f"{len(text)} characters long, more than the {MAX_TEXT_CHARACTERS} accepted")
    surrogate = _SURROGATE.search(text)
    if surrogate:
        raise InvalidTextError(
            f"not valid UTF-8 (a lone surrogate U+{ord(surrogate.group()):04X} at character "
            f"{surrogate.start()}: bytes that are not UTF-8, or an escaped surrogate)"
        )
    return _CONTROL_CHARACTERS.sub(" ", text)
