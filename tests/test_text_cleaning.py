"""`clean_text`: the one text check of the manifest reader and the device runtime."""

import pytest

from mmkeras.errors import UserError
from mmkeras.preprocessing.text_cleaning import MAX_TEXT_CHARACTERS, InvalidTextError, clean_text


def test_control_characters_become_spaces_and_whitespace_stays():
    assert clean_text("a\x00b\x07c\x7fd\x85e\tf\ng\rh") == "a b c d e\tf\ng\rh"


def test_utf8_bytes_are_decoded_and_other_bytes_refused():
    assert clean_text("zoë 🐱".encode()) == "zoë 🐱"
    with pytest.raises(InvalidTextError) as caught:
        clean_text(b"ok \xff\xfe")
    assert str(caught.value) == "the text is not valid UTF-8 (byte 0xff at position 3)"
    assert isinstance(caught.value, UserError)


@pytest.mark.parametrize("text", ["\udcff bytes from argv", "lone \ud800 high", "end \udfff"])
def test_lone_surrogates_are_refused(text):
    with pytest.raises(InvalidTextError, match="not valid UTF-8 \\(a lone surrogate U\\+D"):
        clean_text(text)


def test_something_else_than_text_is_refused():
    with pytest.raises(InvalidTextError, match="the text is of type int, not a string"):
        clean_text(5)


def test_a_text_longer_than_the_limit_is_refused():
    assert clean_text("a" * MAX_TEXT_CHARACTERS) == "a" * MAX_TEXT_CHARACTERS
    with pytest.raises(InvalidTextError, match="the text is 100001 characters long, more than the 100000 accepted"):
        clean_text("a" * (MAX_TEXT_CHARACTERS + 1))
