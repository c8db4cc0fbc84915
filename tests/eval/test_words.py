"""One word rule for the attacks and the shifts (robustprune.eval.words)."""

import pytest

from robustprune.eval.attacks.text import split_words
from robustprune.eval.shifts import Tokens, tokenize
from robustprune.eval.words import TOKEN_PATTERN, is_word, recover_case

TEXTS = [
    "it 's a well-known film , isn't it ? Don't.",
    "does n't work (wow)!! 2002's best_of -- really",
    "  leading space, 'quoted' words and they 're here  ",
    "",
]


@pytest.mark.parametrize("text", TEXTS)
def test_shift_tokens_and_attack_words_agree(text):
    # the words a shift may edit are exactly the words an attack may swap
    assert [t for t in tokenize(text) if is_word(t)] == list(split_words(text)[0])
    # and every non-space character is in some token: nothing is dropped
    assert "".join(tokenize(text)) == "".join(text.split())
    assert Tokens(text).render() == text


def test_token_pattern_keeps_punctuation_apart():
    assert TOKEN_PATTERN.findall("(wow)!!") == ["(", "wow", ")", "!", "!"]
    assert TOKEN_PATTERN.findall("it 's") == ["it", "'s"]
    assert TOKEN_PATTERN.findall("best_of") == ["best", "_", "of"]


def test_is_word():
    assert is_word("don't") and is_word("well-made") and is_word("'s") and is_word("2002")
    assert not is_word("motion picture") and not is_word("motion_picture") and not is_word("") and not is_word("-x")


def test_recover_case_follows_textattack():
    assert recover_case("film", "Movie") == "Film"
    assert recover_case("film", "MOVIE") == "FILM"
    assert recover_case("Film", "movie") == "film"
    assert recover_case("film", "McDonald") == "film"
