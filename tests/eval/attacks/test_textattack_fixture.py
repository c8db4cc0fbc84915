"""robustprune's ``"textattack"`` mode against TextAttack 0.3.11 itself, example by example.

``fixtures/textattack_sst2_bow.json`` holds what TextAttack's own PWWS and DeepWordBug recipes did on the
first 100 SST-2 dev sentences against a bag-of-words classifier (``bow_classifier.py``, bit-identical in both
engines): each example's status, final text and query count, and its word ranking. It was recorded once
with ``fixtures/record_textattack.py`` in TextAttack's own venv (``fixtures/TEXTATTACK_NOTES.md``), so this
check runs without TextAttack installed.

``fixtures/textattack_sst2_bow_shared.json`` holds what TextAttack's own TextFooler and TextBugger recipes did on
the first 30 sentences when given robustprune's resources (GloVe 6B 50-d with a cosine neighbour table of
one-word tokens, all-MiniLM-L6-v2 one text per pass as the sentence encoder, WordNet POS sets for TextFooler's
part-of-speech check), recorded with ``fixtures/record_textattack_shared.py``; robustprune's recipes get the
same resources here, with the default encoder (64 texts per pass). Batching moves a MiniLM similarity by about
1e-7 (measured: at most 1.2e-7 angular over 199 SST-2 pairs), while the closest similarity to its threshold in
these attacks is 5.2e-5 away (TextFooler; 1.0e-4 for TextBugger), so no example can flip on float rounding there
and every example is compared; similarities are computed as TextAttack computes them (float32).

TextAttack orders word-importance ties with numpy's default (unstable) ``argsort``, whose tie order can
depend on the CPU's vector instructions. The few examples where the tie order decided the outcome are
compared only where this machine's ``argsort`` orders the recorded scores as the recording did.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from robustprune.data.datasets import TextDataset
from robustprune.eval.attacks import attack
from robustprune.eval.attacks.recipes import deepwordbug, pwws, textbugger, textfooler
from tests.eval.attacks.bow_classifier import BagOfWordsClassifier

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "textattack_sst2_bow.json"


@pytest.fixture(scope="module")
def recorded() -> dict:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def bow() -> BagOfWordsClassifier:
    return BagOfWordsClassifier()


def examples_of(recorded: dict, recipe: str) -> list[dict]:
    return recorded["recipes"][recipe]["examples"]


def dataset_of(examples: list[dict]) -> TextDataset:
    return TextDataset(texts=[e["text"] for e in examples], labels=[int(e["label"]) for e in examples],
                       name="sst2-dev-100")


def tie_order_reproduced(example: dict) -> bool:
    """Whether numpy's argsort here orders the recorded importance scores as the recording machine did."""
    ranking = example.get("ranking")
    if not ranking or not ranking.get("tie_order_matters"):
        return True
    indices = np.array(ranking["indices_to_order"])
    return indices[np.argsort(-np.asarray(ranking["index_scores"]))].tolist() == list(ranking["index_order"])


def assert_same_as_textattack(report, examples: list[dict]) -> None:
    compared = 0
    for ours, theirs in zip(report.results, examples, strict=True):
        if not tie_order_reproduced(theirs):
            continue
        compared += 1
        where = f"example {theirs['index']}: {theirs['text']!r}"
        assert ours.status == theirs["status"], where
        assert ours.perturbed == theirs["perturbed_text"], where
        assert ours.queries == int(theirs["num_queries"]), where
    assert compared >= len(examples) - 15


def test_model_matches_the_recording(recorded, bow):
    assert bow.sha256 == recorded["model"]["sha256"]


def test_pwws_equals_textattack(recorded, bow, wordnet_ok):
    examples = examples_of(recorded, "pwws")
    report = attack(bow, dataset_of(examples), pwws(), progress=False)
    assert report.parameters["mode"] == "textattack"
    assert_same_as_textattack(report, examples)
    metrics = recorded["recipes"]["pwws"]["metrics"]
    assert report.count("succeeded") == metrics["successful_attacks"]
    assert report.accuracy_under_attack == pytest.approx(metrics["accuracy_under_attack_perc"])
    assert report.avg_queries == pytest.approx(metrics["avg_num_queries"], abs=0.005)


def textattack_states(examples: list[dict], seed: int) -> dict[int, tuple]:
    """Per example, numpy's and Python's generators as TextAttack's run left them when it began the example
    (seeded once, then advanced by the 32-bit outputs drawn before it)."""
    states = {}
    for position, example in enumerate(examples):
        drawn = example.get("rng_at_start", {"numpy_u32_drawn": 0, "python_u32_drawn": 0})  # skipped: no draws
        positions = np.random.RandomState(seed)
        positions._bit_generator.random_raw(drawn["numpy_u32_drawn"])
        letters = random.Random(seed)
        for _ in range(drawn["python_u32_drawn"]):
            letters.getrandbits(32)
        states[position] = (positions, letters)
    return states


def test_deepwordbug_equals_textattack_from_the_same_random_state(recorded, bow):
    examples = examples_of(recorded, "deepwordbug")
    recipe = deepwordbug(seed=int(recorded["recipes"]["deepwordbug"]["random_seed"]))
    states = textattack_states(examples, recipe.draws.seed)
    recipe.draws.restart = lambda example: recipe.draws.use(states[example])  # TextAttack's stream, not ours
    report = attack(bow, dataset_of(examples), recipe, progress=False)
    assert_same_as_textattack(report, examples)
    metrics = recorded["recipes"]["deepwordbug"]["metrics"]
    assert report.count("succeeded") == metrics["successful_attacks"]
    assert report.avg_queries == pytest.approx(metrics["avg_num_queries"], abs=0.005)


# ------------------------------------------------------------------- TextFooler and TextBugger, same resources

SHARED_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "textattack_sst2_bow_shared.json"


@pytest.fixture(scope="module")
def recorded_shared() -> dict:
    return json.loads(SHARED_FIXTURE.read_text(encoding="utf-8"))


def assert_metrics(report, metrics: dict) -> None:
    assert report.count("succeeded") == metrics["successful_attacks"]
    assert report.count("failed") == metrics["failed_attacks"]
    assert report.count("skipped") == metrics["skipped_attacks"]
    assert report.accuracy_under_attack == pytest.approx(metrics["accuracy_under_attack_perc"], abs=0.005)
    assert report.success_rate == pytest.approx(metrics["attack_success_rate_perc"], abs=0.005)
    assert report.avg_queries == pytest.approx(metrics["avg_num_queries"], abs=0.005)
    assert report.perturbed_word_percent == pytest.approx(metrics["avg_word_perturbed_perc"], abs=0.005)


def test_textfooler_equals_textattack_given_the_same_resources(recorded_shared, bow, glove, sentence_encoder,
                                                               wordnet_ok):
    examples = examples_of(recorded_shared, "textfooler")
    report = attack(bow, dataset_of(examples), textfooler(vectors=glove, encoder=sentence_encoder), progress=False)
    assert report.parameters["mode"] == "textattack"
    assert_same_as_textattack(report, examples)
    assert_metrics(report, recorded_shared["recipes"]["textfooler"]["metrics"])


def test_textbugger_equals_textattack_given_the_same_resources_and_random_state(recorded_shared, bow, glove,
                                                                                sentence_encoder):
    examples = examples_of(recorded_shared, "textbugger")
    recipe = textbugger(vectors=glove, encoder=sentence_encoder,
                        seed=int(recorded_shared["recipes"]["textbugger"]["random_seed"]))
    states = textattack_states(examples, recipe.draws.seed)
    recipe.draws.restart = lambda example: recipe.draws.use(states[example])  # TextAttack's stream, not ours
    report = attack(bow, dataset_of(examples), recipe, progress=False)
    assert_same_as_textattack(report, examples)
    assert_metrics(report, recorded_shared["recipes"]["textbugger"]["metrics"])
