"""The engine on a hand-checked case: a keyword-weight classifier whose scores are worked out by hand.

Weights: good 1.0, fine 0.2, okay -0.4, movie 0.5, film -0.2, bad -1.0 (others 0); p(positive) =
sigmoid(sum); score = 1 - p(true label). Swaps: good -> [fine, okay], movie -> [film]; "a" is a stopword.

"a good movie" (label 1), greedy search, [UNK] ranking:
  1 query   clean "a good movie"                     logit 1.5   score 0.182
  2 queries "a [UNK] movie" 0.5 (score 0.378), "a good [UNK]" 1.0 (0.269): order good, movie
  2 queries "a fine movie" 0.7 (0.332), "a okay movie" 0.1 (0.475): keep "okay" (not yet a success)
  1 query   "a okay film" -0.6 (0.646): success.                         6 queries, 4 model calls.
Weighted saliency ranks with the same [UNK] texts plus the swaps at each word of the clean text (2 for
good, 1 "a good film" for movie): 6 queries; the walk then re-sends good's 2 swaps (cached: counted, no
model call) and "a okay film": 9 queries, 5 model calls, 7 texts run through the model.
"""

from __future__ import annotations

import json

import pytest

from robustprune.data.datasets import TextDataset
from robustprune.eval.attacks import AttackedText, Recipe, UntargetedClassification, attack
from robustprune.eval.attacks.attack import Attack
from robustprune.eval.attacks.constraints import RepeatModification, StopwordModification
from robustprune.eval.attacks.search import GreedyWordSwapWIR
from robustprune.eval.attacks.transformations import WordSwap


class DictSwap(WordSwap):
    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table

    def replacements(self, word: str) -> list[str]:
        return self.table.get(word, [])


def hand_recipe(wir: str = "unk") -> Recipe:
    return Recipe(
        name="hand",
        transformation=DictSwap({"good": ["fine", "okay"], "movie": ["film"]}),
        pre_constraints=[RepeatModification(), StopwordModification(["a"])],
        constraints=[],
        search=GreedyWordSwapWIR(wir),
        deviations=["hand-made"],
    )


def run_one(model, text: str, label: int, wir: str = "unk", budget: int | None = None):
    goal = UntargetedClassification(model, query_budget=budget)
    status, initial, final = Attack(hand_recipe(wir), goal).run(AttackedText.from_text(text), label)
    return status, initial, final, goal


def test_unk_search_queries_and_result(keyword_model):
    status, initial, final, goal = run_one(keyword_model, "a good movie", 1)
    assert status == "succeeded"
    assert final.text.text == "a okay film"
    assert goal.num_queries == 6
    assert goal.model_calls == 4 and goal.texts_scored == 6
    assert initial.score == pytest.approx(1 - keyword_model.p_positive("a good movie"), abs=1e-6)
    assert final.score == pytest.approx(1 - keyword_model.p_positive("a okay film"), abs=1e-6)
    # the whole ranking request and each position's candidates went to the model in one call
    assert [len(c) for c in keyword_model.calls] == [1, 2, 2, 1]
    assert keyword_model.calls[1] == ["a [UNK] movie", "a good [UNK]"]


def test_weighted_saliency_counts_cached_queries(keyword_model):
    status, _, final, goal = run_one(keyword_model, "a good movie", 1, wir="weighted-saliency")
    assert status == "succeeded" and final.text.text == "a okay film"
    assert goal.num_queries == 9  # cached re-sends are counted, as TextAttack counts them
    assert goal.model_calls == 5 and goal.texts_scored == 7


def test_delete_ranking_texts(keyword_model):
    _, _, _, goal = run_one(keyword_model, "a good movie", 1, wir="delete")
    assert keyword_model.calls[1] == ["a movie", "a good"]
    assert goal.num_queries == 6


def test_query_budget_stops_search(keyword_model):
    status, _, final, goal = run_one(keyword_model, "a good movie", 1, budget=4)
    # 1 clean + 2 ranking + the first of good's two swaps: budget spent, attack failed
    assert goal.num_queries == 4
    assert status == "failed"
    assert final.text.text == "a fine movie"


def test_report_metrics_and_cache_across_examples(keyword_model):
    data = TextDataset(
        texts=["a good movie", "a good movie", "a bad movie", "a bad okay"], labels=[1, 1, 1, 0], name="hand"
    )
    report = attack(keyword_model, data, hand_recipe(), progress=False, pool=1)
    assert [r.status for r in report.results] == ["succeeded", "succeeded", "skipped", "failed"]
    assert [r.queries for r in report.results] == [6, 6, 1, 3]
    # the repeated sentence is answered from the cache: same queries, no extra model calls
    assert report.model_calls == 4 + 0 + 1 + 2  # failed one: clean + [UNK] ranking, no swaps
    # pooled: the four examples' requests share model calls, one per round; results are the same
    pooled = attack(keyword_model, data, hand_recipe(), progress=False, pool=4)
    assert pooled.results == report.results and pooled.model_calls == 4
    assert pooled.texts_scored == report.texts_scored == 10
    assert report.clean_accuracy == pytest.approx(75.0)
    assert report.accuracy_under_attack == pytest.approx(25.0)
    assert report.success_rate == pytest.approx(200 / 3)
    assert report.avg_queries == pytest.approx(5.0)
    assert report.perturbed_word_percent == pytest.approx(200 / 3)
    first = report.results[0]
    assert first.perturbed_indices == (1, 2) and first.num_words == 3
    assert first.original_prediction == 1 and first.perturbed_prediction == 0
    blob = json.loads(json.dumps(report.to_dict()))
    assert blob["metrics"]["success_rate"] == pytest.approx(200 / 3)
    assert blob["deviations"] == ["hand-made"]
    adversarial = report.adversarial_dataset()
    assert adversarial.texts == ["a okay film", "a okay film"] and adversarial.labels == [1, 1]
    assert adversarial.meta["index"] == [0, 1]


def test_one_query_at_a_time_gives_same_results(keyword_model):
    data = TextDataset(texts=["a good movie", "a bad okay", "good movie"], labels=[1, 0, 1])
    batched = attack(keyword_model, data, hand_recipe("weighted-saliency"), progress=False)
    keyword_model.calls.clear()
    single = attack(keyword_model, data, hand_recipe("weighted-saliency"), progress=False, batch_size=1)
    assert [(r.perturbed, r.status, r.queries) for r in single.results] == [
        (r.perturbed, r.status, r.queries) for r in batched.results
    ]
    assert all(len(call) == 1 for call in keyword_model.calls)
    assert single.model_calls == single.texts_scored > batched.model_calls


def test_pair_task_attacks_second_text(keyword_model):
    data = TextDataset(texts=["premise stays"], text_pairs=["a good movie"], labels=[1])
    report = attack(keyword_model, data, hand_recipe(), progress=False)
    r = report.results[0]
    assert r.context == "premise stays" and r.original == "a good movie" and r.perturbed == "a okay film"
    assert all(isinstance(x, tuple) and x[0] == "premise stays" for call in keyword_model.calls for x in call)
    first = attack(keyword_model, data, hand_recipe(), progress=False, perturb="first")
    assert first.results[0].original == "premise stays" and first.results[0].status == "failed"


def test_bad_arguments(keyword_model):
    data = TextDataset(texts=["a good movie"], labels=[1])
    with pytest.raises(ValueError, match="max_examples"):
        attack(keyword_model, data, hand_recipe(), max_examples=0, progress=False)
    with pytest.raises(ValueError, match="perturb"):
        attack(keyword_model, data, hand_recipe(), perturb="both", progress=False)
    with pytest.raises(ValueError, match="unknown recipe"):
        attack(keyword_model, data, "textfoolr", progress=False)
    with pytest.raises(ValueError, match="only used with a recipe name"):
        attack(keyword_model, data, hand_recipe(), progress=False, vectors=None)
    with pytest.raises(ValueError, match="query_budget"):
        UntargetedClassification(keyword_model, query_budget=0)
    with pytest.raises(TypeError, match="predict_proba"):
        UntargetedClassification(object())
    with pytest.raises(ValueError, match="3 labels"):
        attack(
            keyword_model, TextDataset(texts=["x"], labels=[0], num_labels=3), hand_recipe(), progress=False
        )
    with pytest.raises(ValueError, match="wir_method"):
        GreedyWordSwapWIR("gradient")


def test_shards_of_a_dataset_merge_into_the_whole_attack(keyword_model):
    from robustprune.eval.attacks.attack import merge_reports

    data = TextDataset(texts=["a good movie", "a bad okay", "good movie", "a good okay", "movie"],
                       labels=[1, 0, 1, 1, 1], name="hand")
    whole = attack(keyword_model, data, hand_recipe(), progress=False)
    shards = [attack(keyword_model, data, hand_recipe(), examples=part, progress=False) for part in ([3, 0], [1], [2, 4])]
    assert [r.index for r in shards[0].results] == [3, 0]  # a shard keeps the dataset's indices
    merged = merge_reports(shards)
    assert merged.results == whole.results and merged.summary() == whole.summary()
    assert merged.model_calls == sum(s.model_calls for s in shards)
    with pytest.raises(ValueError, match="twice"):
        merge_reports([shards[0], shards[0]])
    with pytest.raises(ValueError, match="cannot merge"):
        merge_reports([shards[1], attack(keyword_model, data, hand_recipe(), examples=[0], query_budget=3,
                                         progress=False)])
    for bad in ([], [5], [1, 1], [True]):
        with pytest.raises(ValueError, match="examples must be distinct indices"):
            attack(keyword_model, data, hand_recipe(), examples=bad, progress=False)
    with pytest.raises(ValueError, match="not both"):
        attack(keyword_model, data, hand_recipe(), examples=[0], max_examples=1, progress=False)
