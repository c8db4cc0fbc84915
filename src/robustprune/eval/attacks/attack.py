"""The attack engine: a recipe (transformation, constraints, search) run against a classifier, per example
and in aggregate.

Metrics follow TextAttack's definitions (``textattack.metrics``): an example the model already
gets wrong is *skipped*; Clean% = correct / total; Aua% (accuracy under attack) = failed / total; Suc%
= succeeded / (succeeded + failed); #Query = mean queries per non-skipped example, the clean prediction
counted; perturbed-word % = mean over successful attacks of changed words / words. Means over an
empty set (e.g. Suc% when every example is skipped) are reported as 0, as TextAttack does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from tqdm.auto import tqdm

from robustprune.data.datasets import TextDataset
from robustprune.eval.attacks.constraints import Constraint, PreConstraint
from robustprune.eval.attacks.goal import GoalResult, ProbabilityModel, UntargetedClassification
from robustprune.eval.attacks.search import GreedyWordSwapWIR
from robustprune.eval.attacks.text import AttackedText
from robustprune.eval.attacks.transformations import Transformation

STATUSES = ("succeeded", "failed", "skipped")


@dataclass
class Recipe:
    """A complete attack: what to change, what must hold, and how to search.

    Attributes:
        name: e.g. ``"textfooler"``.
        transformation: makes candidates for given word indices.
        pre_constraints: limit the indices that may change.
        constraints: filter candidates, in order (cheap ones first).
        search: the search method.
        deviations: every way this recipe differs from the published attack, for the report.
        parameters: the recipe's settings, for the report.
    """

    name: str
    transformation: Transformation
    pre_constraints: list[PreConstraint]
    constraints: list[Constraint]
    search: GreedyWordSwapWIR
    deviations: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)


class Attack:
    """One recipe bound to one goal function; :meth:`run` attacks a single example."""

    def __init__(self, recipe: Recipe, goal: UntargetedClassification) -> None:
        self.recipe = recipe
        self.goal = goal

    def allowed_indices(self, text: AttackedText) -> list[int]:
        allowed = set(range(text.num_words))
        for constraint in self.recipe.pre_constraints:
            allowed &= constraint.allowed(text)
        return sorted(allowed)

    def candidates(
        self, current: AttackedText, original: AttackedText, indices: Sequence[int]
    ) -> list[AttackedText]:
        """Constrained candidates changing one of ``indices`` of ``current``."""
        allowed = set(self.allowed_indices(current))
        texts = self.recipe.transformation(current, [i for i in indices if i in allowed])
        unique: dict[tuple[str, ...], AttackedText] = {}
        for t in texts:
            if t.words != current.words:
                unique.setdefault(t.words, t)
        kept = list(unique.values())
        for constraint in self.recipe.constraints:
            if not kept:
                break
            reference = original if constraint.compare_against_original else current
            kept = [t for t, ok in zip(kept, constraint.check(kept, reference)) if ok]
        return kept

    def score(self, texts: Sequence[AttackedText]) -> tuple[list[GoalResult], bool]:
        return self.goal.results(texts)

    def run(self, text: AttackedText, label: int) -> tuple[str, GoalResult, GoalResult]:
        """``(status, clean result, final result)`` for one example."""
        initial = self.goal.start(text, label)
        if initial.succeeded:
            return "skipped", initial, initial
        final = self.recipe.search.search(self, initial)
        return ("succeeded" if final.succeeded else "failed"), initial, final


@dataclass(frozen=True)
class ExampleResult:
    """One attacked example.

    Attributes:
        index: position in the attacked dataset.
        original: the attacked text as given.
        perturbed: the final text (equal to ``original`` when skipped or nothing helped).
        context: the unattacked side of a sentence pair, else None.
        label: ground truth.
        original_prediction, perturbed_prediction: the model's predictions.
        status: ``"succeeded"``, ``"failed"`` or ``"skipped"``.
        queries: model queries spent on the example, clean prediction included.
        num_words: words in ``original``.
        substitutions: ``(word index, original word, new word)`` for every changed word, in index order.
    """

    index: int
    original: str
    perturbed: str
    context: str | None
    label: int
    original_prediction: int
    perturbed_prediction: int
    status: str
    queries: int
    num_words: int
    substitutions: tuple[tuple[int, str, str], ...]

    @property
    def perturbed_indices(self) -> tuple[int, ...]:
        return tuple(i for i, _, _ in self.substitutions)

    @property
    def words_perturbed(self) -> int:
        return len(self.substitutions)


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


@dataclass
class AttackReport:
    """Per-example results and TextAttack's aggregate metrics for one recipe on one dataset.

    Attributes:
        recipe: the recipe's name.
        dataset: the dataset's name.
        results: one :class:`ExampleResult` per attacked example, in dataset order.
        deviations: how the recipe differs from the published attack.
        parameters: the recipe's and the run's settings.
        seconds: wall time of the whole attack.
        model_calls: ``predict_proba`` calls made (cache misses, batched).
        texts_scored: texts the model actually ran on (queries minus cache hits).
    """

    recipe: str
    dataset: str
    results: list[ExampleResult]
    deviations: list[str]
    parameters: dict[str, Any]
    seconds: float
    model_calls: int
    texts_scored: int

    def count(self, status: str) -> int:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        return sum(r.status == status for r in self.results)

    @property
    def total(self) -> int:
        return len(self.results)

    @property
    def clean_accuracy(self) -> float:
        """Clean%: percent of examples the model gets right before the attack."""
        return 100.0 * (self.total - self.count("skipped")) / self.total if self.total else 0.0

    @property
    def accuracy_under_attack(self) -> float:
        """Aua%: percent of examples still right after the attack (failed attacks)."""
        return 100.0 * self.count("failed") / self.total if self.total else 0.0

    @property
    def success_rate(self) -> float:
        """Suc%: percent of attempted attacks that succeeded."""
        attempted = self.count("succeeded") + self.count("failed")
        return 100.0 * self.count("succeeded") / attempted if attempted else 0.0

    @property
    def avg_queries(self) -> float:
        """#Query: mean queries per non-skipped example, the clean prediction counted."""
        return _mean([r.queries for r in self.results if r.status != "skipped"])

    @property
    def perturbed_word_percent(self) -> float:
        """Mean percent of words changed, over successful attacks."""
        return _mean(
            [
                100.0 * r.words_perturbed / r.num_words
                for r in self.results
                if r.status == "succeeded" and r.num_words
            ]
        )

    @property
    def avg_words(self) -> float:
        return _mean([r.num_words for r in self.results])

    @property
    def total_queries(self) -> int:
        return sum(r.queries for r in self.results)

    @property
    def examples_per_second(self) -> float:
        return self.total / self.seconds if self.seconds > 0 else 0.0

    @property
    def queries_per_second(self) -> float:
        return self.total_queries / self.seconds if self.seconds > 0 else 0.0

    def metrics(self) -> dict[str, float | int]:
        """The aggregate numbers, keyed as in the report table."""
        return {
            "examples": self.total,
            "succeeded": self.count("succeeded"),
            "failed": self.count("failed"),
            "skipped": self.count("skipped"),
            "clean_accuracy": self.clean_accuracy,
            "accuracy_under_attack": self.accuracy_under_attack,
            "success_rate": self.success_rate,
            "avg_queries": self.avg_queries,
            "perturbed_word_percent": self.perturbed_word_percent,
            "avg_words": self.avg_words,
            "seconds": self.seconds,
            "examples_per_second": self.examples_per_second,
            "queries_per_second": self.queries_per_second,
            "model_calls": self.model_calls,
            "texts_scored": self.texts_scored,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: recipe, dataset, metrics, deviations, parameters and every example."""
        return {
            "recipe": self.recipe,
            "dataset": self.dataset,
            "metrics": self.metrics(),
            "deviations": list(self.deviations),
            "parameters": dict(self.parameters),
            "results": [asdict(r) for r in self.results],
        }

    def summary(self) -> str:
        """A short human-readable table of the aggregate metrics."""
        return (
            f"{self.recipe} on {self.dataset or 'dataset'}: {self.total} examples, "
            f"Clean% {self.clean_accuracy:.1f}, Aua% {self.accuracy_under_attack:.1f}, "
            f"Suc% {self.success_rate:.1f}, #Query {self.avg_queries:.1f}, "
            f"perturbed words {self.perturbed_word_percent:.1f}%"
        )

    def adversarial_dataset(self) -> TextDataset:
        """The successful adversarial examples as a :class:`TextDataset` (true labels; meta: method,
        index)."""
        hits = [r for r in self.results if r.status == "succeeded"]
        pairs = any(r.context is not None for r in self.results)
        attacked_first = bool(self.parameters.get("perturb") == "first")
        texts = [r.perturbed if (not pairs or attacked_first) else r.context for r in hits]
        second = None if not pairs else [r.context if attacked_first else r.perturbed for r in hits]
        return TextDataset(
            texts=texts,
            labels=[r.label for r in hits],
            text_pairs=second,
            num_labels=int(self.parameters.get("num_labels", 2)),
            name=f"{self.dataset}:{self.recipe}",
            meta={"method": [self.recipe] * len(hits), "index": [r.index for r in hits]},
        )


def attack(
    classifier: ProbabilityModel,
    dataset: TextDataset,
    recipe: str | Recipe,
    *,
    max_examples: int | None = None,
    examples: Sequence[int] | None = None,
    query_budget: int | None = None,
    batch_size: int | None = None,
    cache_size: int = 2**16,
    perturb: str = "second",
    progress: bool = True,
    **recipe_options: Any,
) -> AttackReport:
    """Attack every example of ``dataset`` (or the first ``max_examples``) with ``recipe``.

    Args:
        classifier: anything with ``predict_proba(inputs) -> [n, num_labels]`` probabilities.
        dataset: the examples and their true labels.
        recipe: a recipe name (``"textfooler"``, ``"textbugger"``, ``"pwws"``, ``"bert-attack"``,
            ``"deepwordbug"``) or a :class:`Recipe`.
        max_examples: attack only the first this many examples.
        examples: instead, attack exactly these dataset indices (results keep them), e.g. one shard of a
            dataset split across processes (:func:`merge_reports` joins the shards' reports).
        query_budget: the most model queries per example (clean prediction included); None: unlimited.
        batch_size: uncached texts per model call; None sends every request (e.g. all candidates of a
            word) in one call, 1 queries one text at a time (the unbatched baseline).
        cache_size: predictions kept for repeated texts (0 disables the cache; queries are counted the same).
        perturb: for sentence pairs, which side to attack: ``"second"`` (the hypothesis) or ``"first"``.
        progress: show a progress bar.
        **recipe_options: passed to the recipe builder when ``recipe`` is a name (e.g. the masked LM
            and tokenizer of ``"bert-attack"``, shared word vectors or sentence encoder).

    Raises:
        ValueError: an empty dataset, a bad ``max_examples``/``perturb``, a label count that does not
            match the classifier, or options given with a :class:`Recipe` object.
    """
    if not isinstance(dataset, TextDataset):
        raise TypeError(f"dataset must be a TextDataset, got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise ValueError(f"dataset {dataset.name!r} is empty")
    if max_examples is not None and (not isinstance(max_examples, int) or max_examples < 1):
        raise ValueError(f"max_examples must be a positive int or None, got {max_examples!r}")
    if perturb not in ("first", "second"):
        raise ValueError(f"perturb must be 'first' or 'second', got {perturb!r}")
    if examples is not None:
        if max_examples is not None:
            raise ValueError("give max_examples or examples, not both")
        examples = list(examples)
        bad = [i for i in examples if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(dataset)]
        if bad or len(set(examples)) != len(examples) or not examples:
            raise ValueError(f"examples must be distinct indices of the {len(dataset)} examples of {dataset.name!r}, "
                             f"got {examples[:8]}{' ...' if len(examples) > 8 else ''}")
    num_labels = getattr(classifier, "num_labels", None)
    if isinstance(num_labels, int) and num_labels != dataset.num_labels:
        raise ValueError(
            f"dataset {dataset.name!r} has {dataset.num_labels} labels but the classifier predicts "
            f"{num_labels}"
        )
    if isinstance(recipe, str):
        from robustprune.eval.attacks.recipes import build_recipe

        recipe = build_recipe(recipe, **recipe_options)
    elif recipe_options:
        raise ValueError(
            f"recipe options {sorted(recipe_options)} are only used with a recipe name, not a Recipe"
        )
    goal = UntargetedClassification(
        classifier, query_budget=query_budget, batch_size=batch_size, cache_size=cache_size
    )
    engine = Attack(recipe, goal)
    if examples is None:
        examples = range(len(dataset) if max_examples is None else min(max_examples, len(dataset)))
    attacked_first = perturb == "first"
    results: list[ExampleResult] = []
    start = time.perf_counter()
    bar = tqdm(examples, desc=f"attack {recipe.name}", disable=not progress, unit="ex")
    for i in bar:
        if dataset.text_pairs is None:
            text = AttackedText.from_text(dataset.texts[i])
        elif attacked_first:
            text = AttackedText.from_text(
                dataset.texts[i], context=dataset.text_pairs[i], attacked_first=True
            )
        else:
            text = AttackedText.from_text(dataset.text_pairs[i], context=dataset.texts[i])
        status, initial, final = engine.run(text, dataset.labels[i])
        final_text = final.text
        changed = tuple(
            (k, text.words[k], final_text.words[k])
            for k in range(text.num_words)
            if final_text.words[k] != text.words[k]
        )
        results.append(
            ExampleResult(
                index=i,
                original=text.text,
                perturbed=final_text.text,
                context=text.context,
                label=dataset.labels[i],
                original_prediction=initial.prediction,
                perturbed_prediction=final.prediction,
                status=status,
                queries=goal.num_queries,
                num_words=text.num_words,
                substitutions=changed,
            )
        )
        bar.set_postfix(succeeded=sum(r.status == "succeeded" for r in results), refresh=False)
    seconds = time.perf_counter() - start
    parameters = dict(recipe.parameters) | {
        "query_budget": query_budget,
        "batch_size": batch_size,
        "cache_size": cache_size,
        "perturb": perturb,
        "num_labels": dataset.num_labels,
    }
    return AttackReport(
        recipe=recipe.name,
        dataset=dataset.name,
        results=results,
        deviations=list(recipe.deviations),
        parameters=parameters,
        seconds=seconds,
        model_calls=goal.model_calls,
        texts_scored=goal.texts_scored,
    )


def merge_reports(reports: Sequence[AttackReport]) -> AttackReport:
    """One report from the reports of shards of one attack (same recipe, dataset and settings; disjoint
    examples): results in dataset order, model calls and texts scored summed, ``seconds`` the sum of the
    shards' times (the work done; a parallel run's wall time is the caller's to record)."""
    if not reports:
        raise ValueError("merge_reports needs at least one report")
    first = reports[0]
    for report in reports[1:]:
        if (report.recipe, report.dataset, report.parameters) != (first.recipe, first.dataset, first.parameters):
            raise ValueError(f"cannot merge a {report.recipe!r} attack on {report.dataset!r} with parameters "
                             f"{report.parameters} into a {first.recipe!r} attack on {first.dataset!r} with "
                             f"{first.parameters}")
    results = sorted((r for report in reports for r in report.results), key=lambda r: r.index)
    indices = [r.index for r in results]
    if len(set(indices)) != len(indices):
        raise ValueError("the reports attack some example twice; shards must be disjoint")
    return replace(first, results=results, seconds=sum(r.seconds for r in reports),
                   model_calls=sum(r.model_calls for r in reports), texts_scored=sum(r.texts_scored for r in reports))


__all__ = ["STATUSES", "Attack", "AttackReport", "ExampleResult", "Recipe", "attack", "merge_reports"]
