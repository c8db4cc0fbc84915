"""Constraints: index filters, word-level checks with real GloVe / WordNet, edit distance, and the
sentence-similarity constraint with the real all-MiniLM-L6-v2 encoder."""

from __future__ import annotations

import math
import random

import pytest
import torch
from nltk.metrics.distance import edit_distance

from robustprune.eval.attacks.constraints import (
    LevenshteinEditDistance,
    MaxWordsPerturbed,
    PartOfSpeech,
    RepeatModification,
    SentenceEncoder,
    SentenceSimilarity,
    StopwordModification,
    WordEmbeddingDistance,
    similarity,
)
from robustprune.eval.attacks.text import AttackedText


def swap(text: str, index: int, word: str) -> AttackedText:
    return AttackedText.from_text(text).replace_word(index, word)


def test_index_filters():
    t = AttackedText.from_text("The film is not good")
    assert StopwordModification(["the", "is", "not"]).allowed(t) == {1, 4}
    assert RepeatModification().allowed(t.replace_word(1, "movie")) == {0, 2, 3, 4}
    from robustprune.eval.stopwords import STOPWORDS

    assert StopwordModification().allowed(t) == {
        i for i, w in enumerate(t.words) if w.lower() not in STOPWORDS
    }


def test_max_words_perturbed_rounds_up():
    original = AttackedText.from_text("one two three four five")  # ceil(0.4 * 5) = 2
    two = original.replace_word(0, "x").replace_word(1, "y")
    three = two.replace_word(2, "z")
    c = MaxWordsPerturbed(max_percent=0.4)
    assert c.check([two, three], original) == [True, False]
    assert MaxWordsPerturbed(max_percent=0.4, max_num_words=1).check([two], original) == [False]
    with pytest.raises(ValueError, match="max_percent"):
        MaxWordsPerturbed(max_percent=1.5)


def test_word_embedding_distance(glove):
    c = WordEmbeddingDistance(glove, min_cos_sim=0.5)
    ref = AttackedText.from_text("a terrible movie")
    good, bad, unknown = (
        swap(ref.text, 1, "horrible"),
        swap(ref.text, 1, "banana"),
        swap(ref.text, 1, "qwzxvbnm"),
    )
    assert glove.cosine("terrible", "horrible") >= 0.5 > glove.cosine("terrible", "banana")
    assert c.check([good, bad, unknown], ref) == [True, False, True]
    strict = WordEmbeddingDistance(glove, 0.5, include_unknown_words=False)
    assert strict.check([unknown], ref) == [False]


def test_part_of_speech(wordnet_ok):
    pos = PartOfSpeech()
    ref = AttackedText.from_text("a slow movie")
    assert pos.check([swap(ref.text, 2, "film"), swap(ref.text, 2, "quickly")], ref) == [True, False]
    assert pos.matches("slow", "sluggish")
    assert pos.matches("the", "of")  # neither is in WordNet
    assert not pos.matches("film", "of")
    assert pos.matches("quickly", "rapidly")


def test_levenshtein_bound_agrees_with_exact_distance():
    rng = random.Random(0)
    c = LevenshteinEditDistance(6)
    base = AttackedText.from_text("the quick brown fox jumps over the lazy dog again and again")
    for _ in range(200):
        cand = base
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(base.num_words)
            cand = cand.replace_word(i, "".join(rng.choice("abcxyz ") for _ in range(rng.randint(1, 7))))
        assert c.distance_within(base, cand) == (edit_distance(base.text, cand.text) <= 6)


def test_similarity_metrics():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert similarity(a, b, "cosine").tolist() == pytest.approx([1.0, 0.0])
    assert similarity(a, b, "angular").tolist() == pytest.approx([1.0, 0.5])
    with pytest.raises(ValueError, match="metric"):
        similarity(a, b, "euclid")


def test_sentence_encoder_is_mean_pooled_minilm(sentence_encoder, minilm_path):
    from transformers import AutoModel, AutoTokenizer

    texts = ["a gripping , funny film .", "dull", "the acting is wooden and the plot goes nowhere"]
    got = sentence_encoder.encode(texts)
    model, tok = AutoModel.from_pretrained(minilm_path).eval(), AutoTokenizer.from_pretrained(minilm_path)
    for text, row in zip(texts, got):  # one at a time, no padding: the plain definition
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            expected = model(**enc).last_hidden_state[0].mean(0)
        assert torch.allclose(row, expected, atol=1e-5)
    single = SentenceEncoder(model, tok, batch_size=1)
    assert torch.allclose(single.encode(texts), got, atol=1e-5)
    assert sentence_encoder.encode([]).shape[0] == 0


def test_sentence_similarity_constraint(sentence_encoder):
    ref = AttackedText.from_text("the acting is wooden and the plot goes nowhere , a dull and tiresome film")
    close, far = ref.replace_word(3, "stiff"), ref.replace_word(3, "superb")
    full = SentenceSimilarity(sentence_encoder, threshold=0.0, metric="cosine")
    scores = full.scores([close, far], ref)
    emb = sentence_encoder.encode([ref.text, close.text, far.text])
    assert scores == pytest.approx(similarity(emb[:1].expand(2, -1), emb[1:], "cosine").tolist(), abs=1e-6)
    cut = (scores[0] + scores[1]) / 2
    strict = SentenceSimilarity(sentence_encoder, threshold=cut, metric="cosine")
    assert strict.check([close, far], ref) == [scores[0] >= cut, scores[1] >= cut]
    assert close.attrs["similarity"] == pytest.approx(scores[0], abs=1e-6)
    windowed = SentenceSimilarity(sentence_encoder, 0.0, metric="angular", window_size=5)
    w = windowed.scores([close], ref)[0]
    emb = sentence_encoder.encode([ref.window(3, 5), close.window(3, 5)])
    assert w == pytest.approx(float(similarity(emb[:1], emb[1:], "angular")[0]), abs=1e-6)
    assert ref.window(3, 5) == "acting is wooden and the"
    skipping = SentenceSimilarity(sentence_encoder, 0.99, window_size=50, skip_text_shorter_than_window=True)
    assert skipping.check([far], ref) == [True] and far.attrs["similarity"] == 1.0
    assert math.isclose(full.scores([ref], ref)[0], 1.0, abs_tol=1e-6)
