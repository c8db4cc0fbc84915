"""Tokenisation of attacked texts: lossless re-joining, word slots, deletion and windows."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from robustprune.eval.attacks.text import AttackedText, split_words, textattack_words


@given(st.text(max_size=80))
def test_split_rejoins_exactly(text):
    words, seps = split_words(text)
    assert len(seps) == len(words) + 1
    assert AttackedText(words, seps).text == text


def test_sst2_sentences_rejoin_and_words(sst2_sentences):
    for sentence in sst2_sentences[:2000]:
        assert AttackedText.from_text(sentence).text == sentence
    t = AttackedText.from_text("it 's not a well-made film , is n't it ?")
    assert t.words == ("it", "'s", "not", "a", "well-made", "film", "is", "n't", "it")


def test_replace_keeps_punctuation_and_tracks_modifications():
    t = AttackedText.from_text("Hello, world -- it's (really) fine!")
    assert t.words == ("Hello", "world", "it's", "really", "fine")
    u = t.replace_word(3, "truly").replace_word(1, "go od")
    assert u.text == "Hello, go od -- it's (truly) fine!"
    assert u.modified == {1, 3} and u.newly_modified == {1}
    assert u.words_diff(t) == [1, 3]
    assert t.text == "Hello, world -- it's (really) fine!"  # immutable


def test_delete_word_merges_spacing():
    t = AttackedText.from_text("a good movie .")
    assert [t.delete_word(i).text for i in range(3)] == ["good movie .", "a movie .", "a good ."]
    assert AttackedText.from_text("a good movie").delete_word(2).text == "a good"


def test_window_matches_textattack_semantics():
    t = AttackedText.from_text("w0 w1 w2 w3 w4 w5 w6")
    assert t.window(3, 3) == "w2 w3 w4"
    assert t.window(0, 3) == "w0 w1 w2"  # shifted inward at the start
    assert t.window(6, 3) == "w4 w5 w6"  # and at the end
    assert t.window(3, 4) == "w1 w2 w3 w4"
    assert t.window(2, 15) == t.text


def test_pair_inputs_and_errors():
    second = AttackedText.from_text("the hypothesis", context="the premise")
    assert second.model_input() == ("the premise", "the hypothesis")
    first = AttackedText.from_text("the premise", context="the hypothesis", attacked_first=True)
    assert first.model_input() == ("the premise", "the hypothesis")
    with pytest.raises(IndexError, match="word index 5"):
        second.replace_word(5, "x")
    with pytest.raises(TypeError, match="text must be a str"):
        AttackedText.from_text(None)
    with pytest.raises(ValueError, match="separators"):
        AttackedText(("a",), ("",))


@given(st.text(max_size=80))
def test_textattack_split_rejoins_exactly(text):
    words, seps = split_words(text, "textattack")
    assert AttackedText(words, seps, mode="textattack").text == text
    assert list(words) == textattack_words(text)


def test_textattack_words_are_textattacks():
    """TextAttack 0.3.11's words_from_text: the clitic loses its apostrophe, backquotes are words,
    hyphens and inner apostrophes join, edge apostrophes / hyphens go."""
    t = AttackedText.from_text("it 's `` not '' a well-made film , is n't it -- 'cause ?", mode="textattack")
    assert t.words == ("it", "s", "``", "not", "a", "well-made", "film", "is", "n't", "it", "cause")
    assert t.text == "it 's `` not '' a well-made film , is n't it -- 'cause ?"
    assert t.replace_word(1, "was").text == "it 'was `` not '' a well-made film , is n't it -- 'cause ?"
    assert textattack_words("x\u00d7y a@b *star* _u_") == ["x\u00d7y", "a@b", "star", "u"]


def test_textattack_delete_takes_one_space():
    t = AttackedText.from_text("a good movie .", mode="textattack")
    assert [t.delete_word(i).text for i in range(3)] == ["good movie .", "a movie .", "a good ."]
    assert AttackedText.from_text("a good movie", mode="textattack").delete_word(2).text == "a good "
    assert AttackedText.from_text("a  good", mode="textattack").delete_word(0).text == " good"
    with pytest.raises(ValueError, match="mode must be one of"):
        AttackedText.from_text("a", mode="textatack")
