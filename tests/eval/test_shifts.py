"""Distribution shifts: tokenisation, every augmenter's defining property, apply_shift, model-based paths."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
import torch

from robustprune.data.datasets import TextDataset, load_glue_tsv
from robustprune.eval.shifts import (
    EDA,
    BackTranslation,
    CharSwap,
    ClareShift,
    EmbeddingShift,
    RandomDelete,
    RandomInsert,
    RandomSwap,
    SynonymReplace,
    Tokens,
    WordNetShift,
    apply_shift,
    tokenize,
)
from robustprune.eval.stopwords import is_stopword
from robustprune.eval.word_vectors import WordVectors
from robustprune.eval.wordnet import synonyms, wordnet
from robustprune.eval.words import recover_case
from tests.conftest import SST2_DEV

TEXT = "The acting , costumes and music are all astounding given the production 's austere locales ."


@pytest.fixture(scope="module")
def sst2_sample() -> TextDataset:
    return load_glue_tsv(SST2_DEV).subset(range(40))


@pytest.fixture(scope="module")
def loaded_wordnet():
    return wordnet()


# ---------------------------------------------------------------------------------------------------
# tokens


def test_tokenize_rule():
    assert tokenize("it 's a well-known film , isn't it ? Don't.") == [
        "it", "'s", "a", "well-known", "film", ",", "isn't", "it", "?", "Don't", "."]
    assert tokenize("does n't work") == ["does", "n't", "work"]
    assert tokenize("(wow)!!") == ["(", "wow", ")", "!", "!"]


@pytest.mark.parametrize("text", ["  Hello,\tworld!  ", TEXT, "", "x", "a  b\n c"])
def test_tokens_render_round_trip(text):
    assert Tokens(text).render() == text


def test_token_edits_keep_spacing():
    tokens = Tokens("  Hello, big world!")
    tokens.insert(0, "Oh")
    assert tokens.render() == "  Oh Hello, big world!"
    tokens.insert(len(tokens), "yes")
    assert tokens.render() == "  Oh Hello, big world! yes"
    tokens.delete(0)
    assert tokens.render() == "  Hello, big world! yes"
    tokens.merge(2, "globe")
    assert tokens.render() == "  Hello, globe! yes"
    tokens.insert(3, "now")  # before "!": spaced on both sides
    assert tokens.render() == "  Hello, globe now ! yes"
    # the attacks' case rule: lower, Title, UPPER follow the replaced word; other patterns leave the new one
    assert recover_case("film", "Movie") == "Film" and recover_case("us", "USA") == "US"
    assert recover_case("B", "a") == "b" and recover_case("Film", "McDonald") == "Film"


# ---------------------------------------------------------------------------------------------------
# rule-based augmenters


def _changed(before: str, after: str) -> list[tuple[str, str]]:
    a, b = tokenize(before), tokenize(after)
    assert len(a) == len(b)
    return [(x, y) for x, y in zip(a, b) if x != y]


def test_char_swap_swaps_adjacent_interior_letters():
    for seed in range(20):
        out = CharSwap(rate=0.3)(TEXT, random.Random(seed))
        changes = _changed(TEXT, out)
        assert changes, "at least one word is perturbed"
        for old, new in changes:
            assert len(old) >= 4 and old[0] == new[0] and old[-1] == new[-1] and sorted(old) == sorted(new)
            diff = [i for i in range(len(old)) if old[i] != new[i]]
            assert len(diff) == 2 and diff[1] == diff[0] + 1
    assert CharSwap()(TEXT, random.Random(3)) == CharSwap()(TEXT, random.Random(3))
    assert CharSwap()("a an the", random.Random(0)) == "a an the"  # nothing long enough
    with pytest.raises(ValueError, match="rate"):
        CharSwap(rate=1.5)


def test_synonym_replace_uses_wordnet_synonyms(loaded_wordnet):
    for seed in range(5):
        out = SynonymReplace(alpha=0.2)(TEXT, random.Random(seed))
        changes = _changed(TEXT, out)
        assert 1 <= len(changes) <= int(0.2 * 13)
        for old, new in changes:
            assert not is_stopword(old) and new.lower() in synonyms(old)


def test_random_insert_adds_synonyms(loaded_wordnet):
    out = RandomInsert(alpha=0.2)(TEXT, random.Random(1))
    before, after = tokenize(TEXT), tokenize(out)
    added = Counter(after) - Counter(before)
    n = int(0.2 * sum(t[0].isalpha() for t in before))  # EDA's count: alpha * words (13 here)
    assert n == 2 and len(after) == len(before) + n and sum(added.values()) == n
    pool = {s for word in before for s in synonyms(word)}
    assert all(word in pool for word in added)
    assert not Counter(before) - Counter(after)  # nothing lost


def test_random_swap_and_delete():
    for seed in range(10):
        swapped = RandomSwap(alpha=0.2)(TEXT, random.Random(seed))
        assert Counter(tokenize(swapped)) == Counter(tokenize(TEXT)) and swapped != TEXT
        kept = tokenize(RandomDelete(p=0.3)(TEXT, random.Random(seed)))
        it = iter(tokenize(TEXT))
        assert all(token in it for token in kept)  # a subsequence
    survivors = [t for t in tokenize(RandomDelete(p=1.0)(TEXT, random.Random(0))) if t[0].isalpha()]
    assert len(survivors) == 1


def test_eda_applies_one_operation(loaded_wordnet):
    only_swap = EDA(alpha_sr=0, alpha_ri=0, alpha_rs=0.2, p_rd=0)
    assert only_swap(TEXT, random.Random(4)) == RandomSwap(0.2)(TEXT, _after_choice(4))
    outputs = {EDA()(TEXT, random.Random(seed)) for seed in range(12)}
    assert len(outputs) > 6
    with pytest.raises(ValueError, match="at least one"):
        EDA(0, 0, 0, 0)


def _after_choice(seed: int) -> random.Random:
    rng = random.Random(seed)
    rng.choice([None])  # EDA draws its operation first
    return rng


def test_wordnet_swap(loaded_wordnet):
    out = WordNetShift(rate=0.5)(TEXT, random.Random(2))
    changes = _changed(TEXT, out)
    assert len(changes) >= 2
    assert all(new.lower() in synonyms(old) and not is_stopword(old) for old, new in changes)


def test_embedding_swap_on_a_small_table():
    words = ["great", "superb", "fine", "movie", "film", "the"]
    table = [[1, 0, 0], [0.95, 0.1, 0], [0.8, 0.5, 0], [0, 1, 0], [0, 0.95, 0.1], [0, 0, 1]]
    vectors = WordVectors(words, np.array(table, dtype=np.float32))
    shift = EmbeddingShift(vectors, rate=1.0, k=1, min_cosine=0.9)
    assert shift("The Great movie .", random.Random(0)) == "The Superb film ."
    wide = EmbeddingShift(vectors, rate=1.0, k=5, min_cosine=0.0)
    outs = {wide("great", random.Random(s)) for s in range(20)}
    assert outs <= {"superb", "fine", "movie", "film"} and "superb" in outs  # "the" is a stopword


# ---------------------------------------------------------------------------------------------------
# apply_shift


def test_apply_shift_is_deterministic_and_per_example(sst2_sample):
    shift = CharSwap(rate=0.2)
    a = apply_shift(sst2_sample, shift, seed=7, progress=False)
    b = apply_shift(sst2_sample, shift, seed=7, batch_size=3, progress=False)
    c = apply_shift(sst2_sample, shift, seed=8, progress=False)
    assert a.texts == b.texts and a.texts != c.texts
    assert a.labels == sst2_sample.labels and a.meta["original_text"] == sst2_sample.texts
    assert sum(x != y for x, y in zip(a.texts, sst2_sample.texts)) >= 35
    assert a.name.endswith("[char_swap(rate=0.2)]")
    part = apply_shift(sst2_sample.subset(range(10, 20)), shift, seed=7, progress=False)
    assert part.texts != a.texts[10:20]  # seeds follow the position in the shifted dataset ...
    twice = apply_shift(a, shift, seed=1, progress=False)
    assert twice.meta["original_text"] == sst2_sample.texts  # ... and the first original is kept


def test_apply_shift_pairs():
    pairs = TextDataset(texts=["A man is sleeping soundly .", "Cats purr loudly ."],
                        labels=[0, 1], text_pairs=["Someone rests quietly here .", "Animals make noises ."])
    default = apply_shift(pairs, CharSwap(), progress=False)
    assert default.texts == pairs.texts and default.text_pairs != pairs.text_pairs
    assert default.meta["original_text_pair"] == pairs.text_pairs and "original_text" not in default.meta
    both = apply_shift(pairs, CharSwap(), target="both", progress=False)
    assert both.texts != pairs.texts and both.text_pairs != pairs.text_pairs
    single = TextDataset(texts=["fine"], labels=[1])
    with pytest.raises(ValueError, match="sentence-pair"):
        apply_shift(single, CharSwap(), target="second")
    with pytest.raises(ValueError, match="target must be"):
        apply_shift(single, CharSwap(), target="hypothesis")
    plain = apply_shift(single, lambda text, rng: text.upper(), progress=False)  # any callable works
    assert plain.texts == ["FINE"]


# ---------------------------------------------------------------------------------------------------
# model-based shifts: real code on tiny random models, and the offline error


def test_model_shifts_fail_clearly_when_the_model_cannot_load():
    with pytest.raises(RuntimeError, match=r"back-translation needs the Hugging Face model "
                                           r"'Helsinki-NLP/opus-mt-en-de'"):
        BackTranslation()(TEXT, random.Random(0))
    with pytest.raises(RuntimeError,
                       match=r"CLARE shift needs the Hugging Face model 'robustprune/no-such-mlm'"):
        ClareShift("robustprune/no-such-mlm")(TEXT, random.Random(0))


@pytest.fixture(scope="module")
def tiny_mlm(minilm_tokenizer):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    config = BertConfig(vocab_size=minilm_tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    return BertForMaskedLM(config).eval(), minilm_tokenizer


def test_clare_operations_on_a_random_masked_lm(tiny_mlm):
    model, tokenizer = tiny_mlm
    before = tokenize(TEXT)
    replaced = ClareShift((model, tokenizer), ["replace"], edits=1)(TEXT, random.Random(0))
    (old, new), = _changed(TEXT, replaced)
    assert not is_stopword(old) and new.isalpha() and new.lower() in tokenizer.vocab
    inserted = tokenize(ClareShift((model, tokenizer), ["insert"], edits=2)(TEXT, random.Random(0)))
    assert len(inserted) == len(before) + 2
    it = iter(inserted)
    assert all(token in it for token in before)
    merged = tokenize(ClareShift((model, tokenizer), ["merge"], edits=1)(TEXT, random.Random(0)))
    assert len(merged) == len(before) - 1
    shift = ClareShift((model, tokenizer), edits=2)
    assert shift(TEXT, random.Random(5)) == shift(TEXT, random.Random(5))
    with pytest.raises(ValueError, match="operations"):
        ClareShift((model, tokenizer), ["swap"])


def test_back_translation_code_path_on_random_marian(minilm_tokenizer):
    from transformers import MarianConfig, MarianMTModel

    tok = minilm_tokenizer
    torch.manual_seed(0)
    config = MarianConfig(vocab_size=tok.vocab_size, d_model=16, encoder_layers=1, decoder_layers=1,
                          encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                          decoder_ffn_dim=32, max_position_embeddings=64, pad_token_id=tok.pad_token_id,
                          eos_token_id=tok.sep_token_id, decoder_start_token_id=tok.pad_token_id)
    model = MarianMTModel(config).eval()
    shift = BackTranslation((model, tok), (model, tok), num_beams=2, max_new_tokens=4, batch_size=2)
    texts = ["a gorgeous , witty film .", "dull", "it 's not bad at all ."]
    out = shift.augment_many(texts, [random.Random(i) for i in range(3)])  # two batches
    assert len(out) == 3 and all(isinstance(t, str) for t in out)
    assert shift("dull", random.Random(0)) == out[1]  # beam search: batching does not change it
    sampled = BackTranslation((model, tok), (model, tok), sample=True, max_new_tokens=4)
    assert sampled("a witty film", random.Random(1)) == sampled("a witty film", random.Random(1))


def test_shifts_by_name_take_their_augmenters_defaults():
    """A config's shift names map onto the augmenters, and the settings a config may give are exactly each
    augmenter's constructor defaults (not a second copy that could drift)."""
    import inspect

    from robustprune.eval.shifts import SHIFT_AUGMENTERS, make_shift, shift_defaults

    for name, cls in SHIFT_AUGMENTERS.items():
        signature = inspect.signature(cls.__init__).parameters
        expected = {k: list(p.default) if isinstance(p.default, tuple) else p.default for k, p in signature.items()
                    if p.default is not inspect.Parameter.empty and k not in ("device", "vectors")}
        assert shift_defaults(name) == expected, name
    assert shift_defaults("deletion") == {"p": 0.1} and SHIFT_AUGMENTERS["deletion"] is RandomDelete
    swap = make_shift("char_swap", rate=0.5, min_length=6)
    assert isinstance(swap, CharSwap) and (swap.rate, swap.min_length) == (0.5, 6)
    clare = make_shift("clare", operations=["insert"], edits=2)  # a list from a config becomes the tuple
    assert clare.operations == ("insert",) and clare.edits == 2
    with pytest.raises(ValueError, match="char_swap has no setting 'p'"):
        make_shift("char_swap", p=0.1)
    with pytest.raises(ValueError, match="unknown shift 'noise'"):
        make_shift("noise")


def test_back_translation_puts_the_target_language_token_before_each_text():
    """A multi-target MarianMT model (opus-mt-en-ROMANCE) reads the target language from a token before the
    text: the forward pass gets ``>>es<< text``, the backward pass the pivot as it came back."""
    seen = []

    class Recording(BackTranslation):
        def _translate(self, pair, texts, seed):
            seen.append((pair, list(texts)))
            return [f"pivot:{t}" for t in texts]

    shift = Recording("forward", "backward", target_prefix=">>es<<")
    shift._models = ["F", "B"]  # the models' own code path is covered on a random Marian above
    assert shift.augment_many(["a film", "dull"], [random.Random(0), random.Random(1)]) == [
        "pivot:pivot:>>es<< a film", "pivot:pivot:>>es<< dull"]
    assert seen == [("F", [">>es<< a film", ">>es<< dull"]), ("B", ["pivot:>>es<< a film", "pivot:>>es<< dull"])]
    with pytest.raises(TypeError, match="target_prefix must be a string"):
        BackTranslation(target_prefix=3)
