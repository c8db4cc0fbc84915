"""The five recipes end to end on two victims: the bag-of-words SST-2 classifier of the TextAttack fixtures
(fast tier) and all-MiniLM-L6-v2 fine-tuned on SST-2 (shared session fixture; slow tier, it trains first).

Each recipe attacks the first dev sentences of at most 12 words (12 of them for the bag-of-words model, 8 for MiniLM) (kept short so the file stays fast on two
cores). Checked: the attack lowers accuracy; every successful adversarial example really flips the
model's prediction (re-queried) and satisfies the recipe's constraints, re-verified independently of the
engine; every failure leaves a correct prediction; skipped examples cost exactly one query.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from nltk.metrics.distance import edit_distance

from robustprune.eval.attacks import attack
from robustprune.eval.attacks.constraints import similarity
from robustprune.eval.attacks.transformations import HOMOGLYPHS
from robustprune.eval.stopwords import nltk_english_stopwords
from robustprune.eval.words import recover_case

NLTK_STOPWORDS = frozenset(nltk_english_stopwords())
EXAMPLES = {"bow": 12, "minilm": 8}  # the bag-of-words model gets 4 of the first 8 right, 8 of 12
MAX_WORDS = 12
RECIPE_NAMES = ("textfooler", "textbugger", "pwws", "bert-attack", "deepwordbug")


@pytest.fixture(scope="module")
def short_dev(sst2_dev):
    keep = [i for i, text in enumerate(sst2_dev.texts) if len(text.split()) <= MAX_WORDS][:max(EXAMPLES.values())]
    return sst2_dev.subset(keep)


VICTIMS = (pytest.param("bow", id="bow"), pytest.param("minilm", id="minilm", marks=pytest.mark.slow))


@pytest.fixture(scope="module")
def victims(request):
    """The victim classifier by name, made on first use (MiniLM fine-tunes on SST-2 first)."""
    def get(kind):
        if kind == "bow":
            from tests.eval.attacks.bow_classifier import BagOfWordsClassifier

            return BagOfWordsClassifier()
        return request.getfixturevalue("sst2_classifier")

    return get


@pytest.fixture(scope="module")
def reports(request, victims, short_dev, glove, sentence_encoder, minilm_tokenizer, random_mlm):
    """One report per (victim, recipe), made on first use."""
    made = {}

    def get(kind, name):
        if (kind, name) not in made:
            if name == "pwws":
                request.getfixturevalue("wordnet_ok")
            options = {
                "textfooler": {"vectors": glove, "encoder": sentence_encoder},
                "textbugger": {"vectors": glove, "encoder": sentence_encoder},
                "bert-attack": {
                    "mlm": random_mlm,
                    "tokenizer": minilm_tokenizer,
                    "encoder": sentence_encoder,
                },
            }.get(name, {})
            made[kind, name] = attack(victims(kind), short_dev.subset(range(EXAMPLES[kind])), name, progress=False,
                                      **options)
        return made[kind, name]

    return get


def full_similarity(encoder, a: str, b: str, metric: str) -> float:
    emb = encoder.encode([a, b])
    return float(similarity(emb[:1], emb[1:], metric)[0])


def is_char_bug(old: str, new: str, inner: bool) -> bool:
    """One insertion (a space for TextBugger), deletion, substitution or neighbour swap."""
    if inner and (old[0] != new[0] or old[-1] != new[-1]):
        return False
    swapped = (
        len(old) == len(new) and sorted(old) == sorted(new) and sum(a != b for a, b in zip(old, new)) == 2
    )
    if inner and len(new) == len(old) + 1:
        return new.replace(" ", "", 1) == old
    return edit_distance(old, new) == 1 or swapped


@pytest.mark.parametrize("name", RECIPE_NAMES)
@pytest.mark.parametrize("kind", VICTIMS)
def test_recipe_lowers_accuracy_and_respects_constraints(kind, name, reports, victims, glove, sentence_encoder,
                                                         short_dev):
    report = reports(kind, name)
    victim = victims(kind)
    assert report.total == EXAMPLES[kind]
    assert report.clean_accuracy > 50.0
    assert report.accuracy_under_attack < report.clean_accuracy
    assert report.count("succeeded") > 0 and report.success_rate > 0
    assert report.deviations and json.loads(json.dumps(report.to_dict()))["recipe"] == name

    for r in report.results:
        p_original = victim.predict_proba([r.original])[0]
        assert int(p_original.argmax()) == r.original_prediction
        if r.status == "skipped":
            assert r.queries == 1 and r.original_prediction != r.label
            continue
        assert r.original_prediction == r.label and r.queries > 1
        p_final = victim.predict_proba([r.perturbed])[0]
        if r.status == "failed":
            assert int(p_final.argmax()) == r.label
            continue
        assert int(p_final.argmax()) != r.label and r.substitutions
        for _, old, new in r.substitutions:
            assert old not in NLTK_STOPWORDS and new != old  # textattack mode: NLTK's list, as written
        if name == "textfooler":
            for _, old, new in r.substitutions:
                neighbours = [recover_case(w, old) for w, _ in glove.nearest(old.lower(), 50, -1.0)]
                assert new in neighbours and glove.cosine(old, new) >= 0.5
                from robustprune.eval.wordnet import word_pos

                a, b = word_pos(old), word_pos(new)
                assert (a & b) or (not a and not b) or ({"noun", "verb"} & a and {"noun", "verb"} & b)
        elif name == "textbugger":
            for _, old, new in r.substitutions:
                homoglyph = len(old) == len(new) and [
                    HOMOGLYPHS.get(a) == b for a, b in zip(old, new) if a != b
                ] == [True]
                neighbour = new in [recover_case(w, old) for w, _ in glove.nearest(old.lower(), 5, -1.0)]
                assert homoglyph or neighbour or is_char_bug(old, new, inner=True)
            assert full_similarity(sentence_encoder, r.original, r.perturbed, "angular") >= 0.8 - 1e-4
        elif name == "pwws":
            from robustprune.eval.wordnet import lemma_names

            for _, old, new in r.substitutions:
                assert new in lemma_names(old)  # textattack mode: a lemma name as WordNet spells it
        elif name == "bert-attack":
            assert r.words_perturbed <= math.ceil(0.4 * r.num_words)
            assert full_similarity(sentence_encoder, r.original, r.perturbed, "cosine") >= 0.2 - 1e-4
        elif name == "deepwordbug":
            assert edit_distance(r.original, r.perturbed) <= 30
            for _, old, new in r.substitutions:
                assert is_char_bug(old, new, inner=False)


def test_deviations_name_the_substitutes(glove, sentence_encoder, wordnet_ok, random_mlm, minilm_tokenizer):
    from robustprune.eval.attacks.recipes import bert_attack, build_recipe

    defaults = " | ".join(build_recipe("textfooler").deviations)  # default resources: the offline substitutes
    assert "GloVe 6B 50-d" in defaults and "counter-fitted" in defaults
    assert "all-MiniLM-L6-v2" in defaults and "Universal Sentence Encoder" in defaults
    assert "WordNet POS" in defaults
    supplied = " | ".join(build_recipe("textfooler", vectors=glove, encoder=sentence_encoder).deviations)
    assert "caller-supplied WordVectors" in supplied and "caller-supplied SentenceEncoder" in supplied
    assert "bert-base-uncased" in " | ".join(bert_attack(random_mlm, minilm_tokenizer).deviations)
    with pytest.raises(ValueError, match="mlm="):
        build_recipe("bert-attack")


@pytest.mark.slow
def test_batched_and_one_query_at_a_time_agree(sst2_classifier, short_dev):
    subset = short_dev.subset(range(4))
    batched = attack(sst2_classifier, subset, "deepwordbug", progress=False)
    single = attack(sst2_classifier, subset, "deepwordbug", progress=False, batch_size=1)
    assert [(r.perturbed, r.status, r.queries) for r in single.results] == [
        (r.perturbed, r.status, r.queries) for r in batched.results
    ]
    assert single.model_calls == single.texts_scored
    assert batched.model_calls < single.model_calls


def test_bert_attack_refuses_a_masked_lm_without_a_trained_head(minilm_path):
    # all-MiniLM-L6-v2 is a sentence encoder: loaded as a masked LM its prediction head would be random
    from robustprune.eval.attacks.recipes import bert_attack, load_masked_lm

    with pytest.raises(ValueError, match="no trained masked-LM head .*pass a masked LM such as 'bert-base-uncased'"):
        load_masked_lm(minilm_path)
    with pytest.raises(ValueError, match="no trained masked-LM head"):
        bert_attack(minilm_path)
    from robustprune.experiments.config import ConfigError
    from robustprune.experiments.points import masked_lm_options

    with pytest.raises(ConfigError, match=r"evaluation.attacks\[0\].masked_lm.*no trained masked-LM head"):
        masked_lm_options(minilm_path, "evaluation.attacks[0]")


def test_bert_attack_loads_a_saved_masked_lm_by_name(random_mlm, minilm_tokenizer, tmp_path):
    # a masked LM whose head is in its checkpoint (here a small random one, saved and read back) is accepted
    import torch

    from robustprune.eval.attacks.recipes import bert_attack, load_masked_lm

    random_mlm.save_pretrained(tmp_path)
    minilm_tokenizer.save_pretrained(tmp_path)
    mlm, tokenizer = load_masked_lm(tmp_path)
    assert not mlm.training and tokenizer.is_fast
    for (name, value), expected in zip(mlm.state_dict().items(), random_mlm.state_dict().values()):
        assert torch.equal(value, expected), name
    recipe = bert_attack(str(tmp_path))
    assert recipe.name == "bert-attack" and recipe.transformation.model.config.hidden_size == 64


def test_substitutes_that_cannot_do_their_job_are_refused(glove, sentence_encoder, minilm_tokenizer):
    """Random word vectors and an untrained sentence encoder would run and report meaningless numbers."""
    import numpy as np
    from transformers import BertConfig, BertModel

    from robustprune.eval.attacks.constraints import SentenceEncoder
    from robustprune.eval.attacks.recipes import textbugger, textfooler
    from robustprune.eval.word_vectors import WordVectors

    random_vectors = WordVectors(glove.words[:5000], np.random.default_rng(0).normal(size=(5000, 50)))
    with pytest.raises(ValueError, match=r"vectors \(WordVectors\) cannot propose substitutes"):
        textfooler(vectors=random_vectors, encoder=sentence_encoder)
    torch.manual_seed(0)
    untrained = BertModel(BertConfig(vocab_size=minilm_tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=128))
    with pytest.raises(ValueError, match=r"encoder \(SentenceEncoder\) cannot judge meaning"):
        textbugger(vectors=glove, encoder=SentenceEncoder(untrained, minilm_tokenizer))
    with pytest.raises(ValueError, match="must have encode"):
        textfooler(vectors=glove, encoder=object())
    assert textfooler(vectors=glove, encoder=sentence_encoder).name == "textfooler"  # the real ones pass


def test_a_papers_attack_settings_reach_the_constraints(glove, sentence_encoder, random_mlm, minilm_tokenizer):
    """N (candidates per word), S (sentence similarity) and M (share of words changed), as a paper sets them
    (Robust Tickets' Table 6); the defaults stay TextAttack's."""
    from robustprune.eval.attacks.constraints import MaxWordsPerturbed, SentenceSimilarity
    from robustprune.eval.attacks.recipes import bert_attack, build_recipe

    def settings(recipe):
        swaps = getattr(recipe.transformation, "parts", [recipe.transformation])
        candidates = [t.max_candidates for t in swaps if hasattr(t, "max_candidates")]
        threshold = [c.threshold for c in recipe.constraints if isinstance(c, SentenceSimilarity)]
        share = [c.max_percent for c in recipe.constraints if isinstance(c, MaxWordsPerturbed)]
        return candidates, threshold, share

    resources = {"vectors": glove, "encoder": sentence_encoder}
    assert settings(build_recipe("textfooler", **resources)) == ([50], [0.840845057], [])
    assert settings(build_recipe("textbugger", **resources)) == ([5], [0.8], [])
    assert settings(bert_attack(random_mlm, minilm_tokenizer, encoder=sentence_encoder)) == ([48], [0.2], [0.4])
    fooler = build_recipe("textfooler", max_candidates=40, similarity_threshold=0.84, **resources)
    assert settings(fooler) == ([40], [0.84], [])
    assert fooler.parameters["max_candidates"] == 40 and fooler.parameters["similarity_threshold"] == 0.84
    bugger = build_recipe("textbugger", max_candidates=7, similarity_threshold=0.75, **resources)
    assert settings(bugger) == ([7], [0.75], []) and bugger.parameters["embedding_candidates"] == 7
    paper = bert_attack(random_mlm, minilm_tokenizer, encoder=sentence_encoder, max_candidates=50,
                        similarity_threshold=0.2, max_words_perturbed=0.9)
    assert settings(paper) == ([50], [0.2], [0.9]) and paper.parameters["max_percent_words"] == 0.9
    for bad, match in (({"max_candidates": 0}, "max_candidates must be an int >= 1"),
                       ({"max_candidates": 2.0}, "max_candidates must be an int"),
                       ({"similarity_threshold": 1.5}, r"similarity_threshold must be a number in \[-1, 1\]")):
        with pytest.raises(ValueError, match=match):
            build_recipe("textfooler", **resources, **bad)
    with pytest.raises(ValueError, match=r"max_words_perturbed must be a share in \(0, 1\]"):
        bert_attack(random_mlm, minilm_tokenizer, encoder=sentence_encoder, max_words_perturbed=0)
