"""Transformations: character bugs, homoglyphs, embedding neighbours, WordNet synonyms, masked-LM
candidates."""

from __future__ import annotations

import itertools

import pytest
import torch
from nltk.metrics.distance import edit_distance

from robustprune.eval.attacks.text import AttackedText
from robustprune.eval.attacks.transformations import (
    HOMOGLYPHS,
    CharacterDelete,
    CharacterInsert,
    CharacterSubstitute,
    CompositeTransformation,
    EditDraws,
    EmbeddingSwap,
    HomoglyphSwap,
    MaskedLMSwap,
    NeighbourSwap,
    WordNetSwap,
)
from robustprune.eval.words import WORD_PATTERN

WORDS = ["wonderful", "ab", "x", "performance", "Movie", "aaab"]


@pytest.mark.parametrize("cls", [CharacterInsert, CharacterDelete, CharacterSubstitute, NeighbourSwap])
@pytest.mark.parametrize("skip", [False, True])
def test_character_bugs_are_single_edits(cls, skip):
    every = cls(random_one=False, skip_first_char=skip, skip_last_char=skip)
    one = cls(random_one=True, skip_first_char=skip, skip_last_char=skip, seed=3)
    for word in WORDS:
        candidates = every.replacements(word)
        for new in candidates:
            assert new != word
            if cls is NeighbourSwap:
                assert sorted(new) == sorted(word) and sum(a != b for a, b in zip(new, word)) == 2
            else:
                assert edit_distance(new, word) == 1
            if skip:
                assert new[0] == word[0] and new[-1] == word[-1]
        if len(word) <= 1:
            assert candidates == []
        picked = one.replacements(word)
        assert len(picked) == (1 if candidates else 0)
        assert picked == one.replacements(word)  # a word always gets the same bug
        assert set(picked) <= set(every.replacements(word)) or cls in (CharacterInsert, CharacterSubstitute)


def test_character_bug_positions():
    assert CharacterDelete(random_one=False).replacements("abc") == ["bc", "ac", "ab"]
    assert CharacterDelete(random_one=False, skip_first_char=True, skip_last_char=True).replacements(
        "abc"
    ) == ["ac"]
    assert NeighbourSwap(random_one=False).replacements("abcc") == ["bacc", "acbc"]
    inserted = CharacterInsert(random_one=False, letters=" ", skip_first_char=True, skip_last_char=True)
    assert inserted.replacements("abc") == ["a bc", "ab c"]
    assert CharacterInsert(random_one=False, letters="z").replacements("ab") == ["zab", "azb", "abz"]


def test_substitute_never_keeps_the_character():
    bug = CharacterSubstitute(random_one=False, letters="ab")
    assert bug.replacements("ab") == ["bb", "aa"]


def test_homoglyphs_change_one_character_and_stay_one_word():
    new = HomoglyphSwap().replacements("good")
    assert len(new) == 4  # one candidate per character with a look-alike: g, o, o, d
    for cand in new:
        diff = [(a, b) for a, b in zip("good", cand) if a != b]
        assert len(diff) == 1 and HOMOGLYPHS[diff[0][0]] == diff[0][1]
        assert WORD_PATTERN.fullmatch(cand)
    assert all(WORD_PATTERN.fullmatch(v) for v in HOMOGLYPHS.values())


def test_embedding_swap_uses_nearest_neighbours(glove):
    swap = EmbeddingSwap(glove, max_candidates=10)
    expected = [w for w, _ in glove.nearest("terrible", 10, -1.0)]
    assert swap.replacements("terrible") == expected
    assert swap.replacements("Terrible") == [w.capitalize() for w in expected]
    assert swap.replacements("qwzxvbnmlk") == []
    text = AttackedText.from_text("a terrible , boring film")
    out = swap(text, [1, 3])
    assert len(out) == 20 and {tuple(t.newly_modified) for t in out} == {(1,), (3,)}
    assert all(t.text.startswith("a ") and " , " in t.text for t in out)


def test_wordnet_swap(wordnet_ok):
    from robustprune.eval.wordnet import synonyms

    swap = WordNetSwap()
    assert "film" in swap.replacements("movie")
    assert swap.replacements("Movie") == [s.capitalize() for s in synonyms("movie")]
    assert swap.replacements("zzzqqq") == []


def test_composite_drops_duplicates():
    a = CharacterDelete(random_one=False)
    both = CompositeTransformation([a, a])
    text = AttackedText.from_text("abc")
    assert [t.text for t in both(text, [0])] == ["bc", "ac", "ab"]
    with pytest.raises(ValueError, match="at least one"):
        CompositeTransformation([])


def _token_logprobs(mlm, tokenizer, text):
    enc = tokenizer(text, return_tensors="pt", return_offsets_mapping=True)
    offsets = enc.pop("offset_mapping")[0].tolist()
    with torch.no_grad():
        return mlm(**enc).logits[0].log_softmax(-1), offsets


def test_masked_lm_single_token_candidates(random_mlm, minilm_tokenizer):
    k = 12
    swap = MaskedLMSwap(random_mlm, minilm_tokenizer, max_candidates=k)
    text = AttackedText.from_text("the film was great fun")
    logp, offsets = _token_logprobs(random_mlm, minilm_tokenizer, text.text)
    pos = [i for i, (a, b) in enumerate(offsets) if (a, b) == (13, 18)]  # "great"
    assert len(pos) == 1
    top = minilm_tokenizer.convert_ids_to_tokens(logp[pos[0]].topk(k).indices.tolist())
    expected = [
        t
        for t in top
        if not t.startswith("##")
        and WORD_PATTERN.fullmatch(t)
        and t not in minilm_tokenizer.all_special_tokens
        and t != "great"
    ]
    got = [t.words[3] for t in swap(text, [3])]
    assert got == expected and len(got) > 0


def test_masked_lm_multi_token_candidates_are_the_lowest_perplexity(random_mlm, minilm_tokenizer):
    k = 6
    word = "unflinchingly"
    pieces = minilm_tokenizer.tokenize(word)
    assert len(pieces) >= 2
    swap = MaskedLMSwap(random_mlm, minilm_tokenizer, max_candidates=k)
    text = AttackedText.from_text(f"an {word} bleak film")
    logp, offsets = _token_logprobs(random_mlm, minilm_tokenizer, text.text)
    positions = [i for i, (a, b) in enumerate(offsets) if b > a >= 3 and b <= 3 + len(word)]
    assert len(positions) == len(pieces)
    special = set(minilm_tokenizer.all_special_ids)
    per_pos = [[i for i in logp[p].topk(k).indices.tolist() if i not in special] for p in positions]
    combos = sorted(
        itertools.product(*per_pos), key=lambda ids: -sum(float(logp[p, i]) for p, i in zip(positions, ids))
    )[:k]
    expected = []
    for ids in combos:
        tokens = minilm_tokenizer.convert_ids_to_tokens(list(ids))
        joined = "".join(t.removeprefix("##") for t in tokens)
        if not tokens[0].startswith("##") and WORD_PATTERN.fullmatch(joined) and joined not in expected:
            expected.append(joined)
    got = [t.words[1] for t in swap(text, [1])]
    assert got == [w for w in expected if w != word]


def test_masked_lm_argument_errors(random_mlm, minilm_tokenizer):
    with pytest.raises(ValueError, match="fast"):
        MaskedLMSwap(random_mlm, object())
    with pytest.raises(ValueError, match="max_candidates"):
        MaskedLMSwap(random_mlm, minilm_tokenizer, max_candidates=0)


@pytest.mark.parametrize("cls", [CharacterInsert, CharacterDelete, CharacterSubstitute, NeighbourSwap])
def test_textattack_edits_use_textattacks_positions_and_restart_per_example(cls):
    draws = EditDraws(seed=7)
    bug = cls(mode="textattack", draws=draws, letters="z")
    seen = set()
    for _ in range(300):
        seen.update(bug.replacements("abcd"))
    positions = set()
    for new in seen:
        if cls is CharacterInsert:
            positions.add(new.index("z"))
        elif cls is CharacterDelete:
            positions.add(next((i for i, (a, b) in enumerate(zip(new, "abcd")) if a != b), 3))
        else:
            assert sorted(new) == sorted("abcd") if cls is NeighbourSwap else edit_distance(new, "abcd") == 1
            positions.add(next(i for i, (a, b) in enumerate(zip(new, "abcd")) if a != b))
    # TextAttack: every character (swaps: but the last); an insertion never goes after the last letter
    assert positions == ({0, 1, 2} if cls is NeighbourSwap else {0, 1, 2, 3})
    draws.restart(3)
    first = [bug.replacements("wonderful") for _ in range(5)]
    draws.restart(3)
    assert [bug.replacements("wonderful") for _ in range(5)] == first
    assert bug.replacements("x") == [] and NeighbourSwap(mode="textattack", draws=draws).replacements("ab") == ["ba"]
    with pytest.raises(ValueError, match="draws="):
        cls(mode="textattack")


def test_textattack_no_op_edits_give_no_candidate():
    """TextAttack may draw a swap of two equal letters or a substitution by the same letter: no candidate."""
    draws = EditDraws(seed=0)
    swap = NeighbourSwap(mode="textattack", draws=draws)
    assert swap.replacements("aa") == ["aa"]  # the transformation drops it (WordSwap skips r == word)
    assert WordSwapHelper(swap)("aa") == []


def WordSwapHelper(swap):  # noqa: N802 - reads like the call it stands for
    return lambda word: [t.words[0] for t in swap(AttackedText.from_text(word, mode="textattack"), [0])]


def test_wordnet_swap_textattack_candidates(wordnet_ok):
    from robustprune.eval.wordnet import lemma_names

    swap = WordNetSwap(mode="textattack")
    new = swap.replacements("good")
    assert "Good" not in lemma_names("good") or "Good" in new  # capitals kept
    assert "good" not in new and all("_" not in w for w in new) and len(new) == len(set(new))
    assert set(new) == {n for n in lemma_names("good") if n != "good" and "_" not in n}
    assert "good" in swap.replacements("Good")  # the word itself is excluded as written
    with pytest.raises(ValueError, match="synonyms="):
        WordNetSwap(lambda w: [], mode="textattack")
