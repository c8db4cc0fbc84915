"""The attack engine: a recipe (transformation, constraints, search) run against a classifier, per example
and in aggregate.

Metrics follow TextAttack's definitions (``textattack.metrics``): an example the model already
gets wrong is *skipped*; Clean% = correct / total; Aua% (accuracy under attack) = failed / total; Suc%
= succeeded / (succeeded + failed); #Query = mean queries per non-skipped example, the clean prediction
counted; perturbed-word % = mean over successful attacks of changed words / words. Means over an
empty set (e.g. Suc% when every example is skipped) are reported as 0, as TextAttack does.

A recipe runs in one of two modes (:data:`~robustprune.eval.attacks.text.MODES`), recorded in the report's
parameters. ``"textattack"`` (the default) reproduces TextAttack 0.3.11: its word splitting, the indices
in the order TextAttack's set operations list them, candidates sorted by their text and not de-duplicated
(every one is a query), scores in the model's floating type, and its rankings and random edits.
``"paper"`` is robustprune's own reading of the published attacks (see each recipe's deviations).
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from tqdm.auto import tqdm

from robustprune.data.datasets import TextDataset
from robustprune.eval.attacks.goal import (
    ExampleQueries,
    GoalResult,
    ProbabilityModel,
    UntargetedClassification,
)
from robustprune.eval.attacks.recipe import Recipe
from robustprune.eval.attacks.search import Answer
from robustprune.eval.attacks.text import AttackedText

STATUSES = ("succeeded", "failed", "skipped")


class Attack:
    """One recipe bound to one goal function; :meth:`run` attacks a single example."""

    def __init__(self, recipe: Recipe, goal: UntargetedClassification) -> None:
        self.recipe = recipe
        self.goal = goal

    def allowed_indices(self, text: AttackedText) -> list[int]:
        """The indices the pre-constraints allow: ascending (``"paper"``), or in the order CPython iterates
        the set TextAttack builds with the same operations (``"textattack"``; it ranks and breaks ties in
        that order)."""
        allowed = set(range(text.num_words))
        for constraint in self.recipe.pre_constraints:
            allowed = allowed & constraint.allowed(text)
        return list(allowed) if self.recipe.mode == "textattack" else sorted(allowed)

    def candidates(
        self, current: AttackedText, original: AttackedText, indices: Sequence[int]
    ) -> list[AttackedText]:
        """Constrained candidates changing one of ``indices`` of ``current``: in the transformation's
        order without repeats (``"paper"``), or sorted by text with repeats kept (``"textattack"``)."""
        allowed = set(self.allowed_indices(current))
        texts = self.recipe.transformation(current, [i for i in indices if i in allowed])
        if self.recipe.mode == "textattack":
            kept = [t for t in texts if t.text != current.text]
        else:
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
        if self.recipe.mode == "textattack":
            kept.sort(key=lambda t: t.text)
        return kept

    def steps(self, text: AttackedText) -> Generator[list[AttackedText], Answer, tuple[str, GoalResult, GoalResult]]:
        """One example as a generator: yields each request (the clean text first), is sent its answer, and
        returns ``(status, clean result, final result)``."""
        (initial,), _ = yield [text]
        if initial.succeeded:
            return "skipped", initial, initial
        final = yield from self.recipe.search.search(self, initial)
        return ("succeeded" if final.succeeded else "failed"), initial, final

    def run(self, text: AttackedText, label: int) -> tuple[str, GoalResult, GoalResult]:
        """``(status, clean result, final result)`` for one example (its random edits restarted as
        example 0); ``goal.num_queries`` then reports its queries."""
        ((job, outcome),) = _run_pooled(self, [(0, text, label)], pool=1)
        self.goal.current = job.queries
        return outcome


@dataclass
class _Running:
    """An example being attacked in a pool: its generator, accounting, random state and pending request."""

    index: int
    text: AttackedText
    steps: Generator
    queries: ExampleQueries
    draws_state: tuple | None
    request: list[AttackedText] = field(default_factory=list)


def _run_pooled(engine: Attack, items: Sequence[tuple[int, AttackedText, int]], pool: int
                ) -> Generator[tuple[_Running, tuple[str, GoalResult, GoalResult]], None, None]:
    """Attack ``(index, text, label)`` items with up to ``pool`` of them in flight: every round, the pending
    requests of all running examples go to the model as one pooled prediction (the classifier length-sorts
    and batches them), then each example's search advances with its own answer. Yields each example as it
    finishes. Per-example accounting and random edits (restarted per example) are kept apart, so results
    equal one example at a time, up to the model's batch-dependent floating-point noise."""
    goal, draws = engine.goal, engine.recipe.draws
    waiting = iter(items)
    running: list[_Running] = []

    def advance(job: _Running, answer: Answer | None) -> tuple[str, GoalResult, GoalResult] | None:
        if draws is not None:
            draws.use(job.draws_state)
        try:
            request = next(job.steps) if answer is None else job.steps.send(answer)
        except StopIteration as done:
            return done.value
        job.request = goal.admit(job.queries, request)
        return None

    while True:
        while len(running) < pool:
            item = next(waiting, None)
            if item is None:
                break
            index, text, label = item
            if draws is not None:
                draws.restart(index)
            job = _Running(index, text, engine.steps(text), goal.begin(label),
                           draws.state() if draws is not None else None)
            advance(job, None)  # the first request (the clean text) never finishes an example
            running.append(job)
        if not running:
            return
        rows = goal.predict([t.model_input() for job in running for t in job.request])
        still = []
        start = 0
        for job in running:
            answer = goal.judge(job.queries, job.request, rows[start : start + len(job.request)])
            start += len(job.request)
            finished = advance(job, answer)
            if finished is None:
                still.append(job)
            else:
                yield job, finished
        running = still


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
        seconds: wall time of the whole attack (resources already loaded).
        model_calls: ``predict_proba`` calls made (cache misses, batched).
        texts_scored: texts the model actually ran on (queries minus cache hits).
        setup_seconds: one-off loading of the recipe's lazily loaded resources (e.g. WordNet) before
            the timed attack.
    """

    recipe: str
    dataset: str
    results: list[ExampleResult]
    deviations: list[str]
    parameters: dict[str, Any]
    seconds: float
    model_calls: int
    texts_scored: int
    setup_seconds: float = 0.0

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
            "setup_seconds": self.setup_seconds,
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
    pool: int = 32,
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
        pool: examples attacked together: each round, the requests of all of them go to the classifier
            as one call (which length-sorts and batches them), so forward batches stay full although each
            search is sequential. 1 attacks one example at a time. Results do not depend on it (up to the
            model's batch-dependent floating-point noise).
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
    if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1:
        raise ValueError(f"pool must be a positive int, got {pool!r}")
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
        device = getattr(classifier, "device", None)
        if device is not None:  # the recipe's own models (sentence encoder, masked LM) join the victim
            place_recipe(recipe, device)
    elif recipe_options:
        raise ValueError(
            f"recipe options {sorted(recipe_options)} are only used with a recipe name, not a Recipe"
        )
    goal = UntargetedClassification(
        classifier, query_budget=query_budget, batch_size=batch_size, cache_size=cache_size, mode=recipe.mode
    )
    engine = Attack(recipe, goal)
    if examples is None:
        examples = range(len(dataset) if max_examples is None else min(max_examples, len(dataset)))
    attacked_first = perturb == "first"

    def attacked_text(i: int) -> AttackedText:
        if dataset.text_pairs is None:
            return AttackedText.from_text(dataset.texts[i], mode=recipe.mode)
        if attacked_first:
            return AttackedText.from_text(dataset.texts[i], context=dataset.text_pairs[i], attacked_first=True,
                                          mode=recipe.mode)
        return AttackedText.from_text(dataset.text_pairs[i], context=dataset.texts[i], mode=recipe.mode)

    setup_start = time.perf_counter()
    prepare_recipe(recipe)
    setup_seconds = time.perf_counter() - setup_start
    found: dict[int, ExampleResult] = {}
    start = time.perf_counter()
    items = [(i, attacked_text(i), dataset.labels[i]) for i in examples]
    bar = tqdm(total=len(items), desc=f"attack {recipe.name}", disable=not progress, unit="ex")
    for job, (status, initial, final) in _run_pooled(engine, items, pool):
        text, final_text = job.text, final.text
        changed = tuple(  # over the shorter text, as TextAttack's all_words_diff (a split word shifts the rest)
            (k, text.words[k], final_text.words[k])
            for k in range(min(text.num_words, final_text.num_words))
            if final_text.words[k] != text.words[k]
        )
        found[job.index] = ExampleResult(
            index=job.index,
            original=text.text,
            perturbed=final_text.text,
            context=text.context,
            label=job.queries.label,
            original_prediction=initial.prediction,
            perturbed_prediction=final.prediction,
            status=status,
            queries=job.queries.num_queries,
            num_words=text.num_words,
            substitutions=changed,
        )
        bar.update()
        bar.set_postfix(succeeded=sum(r.status == "succeeded" for r in found.values()), refresh=False)
    bar.close()
    results = [found[i] for i, _, _ in items]
    seconds = time.perf_counter() - start
    parameters = dict(recipe.parameters) | {
        "mode": recipe.mode,
        "query_budget": query_budget,
        "batch_size": batch_size,
        "cache_size": cache_size,
        "perturb": perturb,
        "pool": pool,
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
        setup_seconds=setup_seconds,
    )


def _recipe_parts(recipe: Recipe) -> list[Any]:
    return [recipe.transformation, *getattr(recipe.transformation, "parts", []), *recipe.pre_constraints,
            *recipe.constraints]


def place_recipe(recipe: Recipe, device: Any) -> None:
    """Move the models a recipe's parts hold (the sentence encoder of its constraints, a masked LM that
    proposes substitutes) to ``device``, so their batches run beside the victim's. :func:`attack` does this
    for a recipe it builds from a name, onto the classifier's ``device``."""
    import torch
    from torch import nn

    device = torch.device(device)
    for part in _recipe_parts(recipe):
        for value in vars(part).values():
            holder = getattr(value, "model", None) if not isinstance(value, nn.Module) else None
            module = value if isinstance(value, nn.Module) else holder
            if isinstance(module, nn.Module):
                first = next(module.parameters(), None)
                if first is not None and first.device != device:
                    module.to(device)


def prepare_recipe(recipe: Recipe) -> None:
    """Load what the recipe's parts load lazily (their ``prepare()``; e.g. WordNet), so that one-off costs
    fall outside an attack's timed loop."""
    for part in _recipe_parts(recipe):
        prepare = getattr(part, "prepare", None)
        if callable(prepare):
            prepare()


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
                   setup_seconds=sum(r.setup_seconds for r in reports),
                   model_calls=sum(r.model_calls for r in reports), texts_scored=sum(r.texts_scored for r in reports))


__all__ = ["STATUSES", "Attack", "AttackReport", "ExampleResult", "Recipe", "attack", "merge_reports", "place_recipe",
           "prepare_recipe"]
