"""Untargeted classification goal with TextAttack's query accounting, batched model calls and a cache.

Per-example accounting (:class:`ExampleQueries`: the true label, queries so far) is kept apart from the
model calls, which are shared: :meth:`UntargetedClassification.admit` counts an example's request,
:meth:`~UntargetedClassification.predict` answers the requests of several examples in one pooled call, and
:meth:`~UntargetedClassification.judge` turns an example's answers into :class:`GoalResult` objects.
:meth:`~UntargetedClassification.start` / :meth:`~UntargetedClassification.results` do all three for one
example at a time.

Counting follows TextAttack: the clean prediction of an example is one query, and every candidate text
sent for scoring is one query, even when its prediction comes from the cache (a text seen before) or
appears twice in the same request. Only the model calls are saved: all texts of one request that are not
cached go to ``predict_proba`` together (or one at a time with ``batch_size=1``, the unbatched baseline);
results are identical either way up to the model's batch-size-dependent floating-point noise.
With a query budget a request is truncated to the queries left, and the search stops once it is spent.
In ``"textattack"`` mode the score ``1 - p(true class)`` is computed in the model's own floating type (as
TextAttack's tensor arithmetic does), so a float32 model's ties and orderings are TextAttack's.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from robustprune.data.datasets import ClassifierInput
from robustprune.eval.attacks.text import AttackedText, check_mode


@runtime_checkable
class ProbabilityModel(Protocol):
    """Anything that maps classifier inputs to ``[n, num_labels]`` class probabilities (e.g.
    :class:`robustprune.eval.classifier.TextClassifier`)."""

    def predict_proba(self, inputs: Sequence[ClassifierInput]) -> torch.Tensor: ...


@dataclass(frozen=True)
class GoalResult:
    """The model's verdict on one text.

    Attributes:
        text: the text that was scored.
        probs: class probabilities (float64 numpy vector).
        score: ``1 - p(ground truth)``, what the search maximises.
        succeeded: the prediction differs from the ground truth.
    """

    text: AttackedText
    probs: np.ndarray
    score: float
    succeeded: bool

    @property
    def prediction(self) -> int:
        return int(np.argmax(self.probs))


@dataclass
class ExampleQueries:
    """One example's side of the goal: its true label and the queries spent on it."""

    label: int
    num_queries: int = 0


class UntargetedClassification:
    """Goal: any label other than the ground truth. Counts queries per example, caches predictions.

    Args:
        model: anything with ``predict_proba``.
        query_budget: the most queries per example (clean prediction included), None for unlimited.
        batch_size: uncached texts per ``predict_proba`` call; None sends a whole request at once.
        cache_size: predictions kept (least recently used are dropped), shared across examples.
        mode: ``"textattack"`` (scores in the model's floating type) or ``"paper"`` (in float64).
    """

    def __init__(
        self,
        model: ProbabilityModel,
        *,
        query_budget: int | None = None,
        batch_size: int | None = None,
        cache_size: int = 2**16,
        mode: str = "paper",
    ) -> None:
        self.mode = check_mode(mode)
        if not callable(getattr(model, "predict_proba", None)):
            raise TypeError(f"model must have a predict_proba(inputs) method, got {type(model).__name__}")
        if query_budget is not None and (not isinstance(query_budget, int) or query_budget < 1):
            raise ValueError(f"query_budget must be a positive int or None, got {query_budget!r}")
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self.model = model
        self.query_budget = query_budget
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._cache: OrderedDict[ClassifierInput, np.ndarray] = OrderedDict()
        self.current = ExampleQueries(0)  # the example of start() / results() (and Attack.run)
        self.model_calls = 0  # predict_proba calls, over the object's lifetime
        self.texts_scored = 0  # texts actually run through the model, over the object's lifetime

    # ----------------------------------------------------------------------------- one example at a time

    def start(self, text: AttackedText, label: int) -> GoalResult:
        """Begin an example: reset its query count and score the clean text (one query)."""
        self.current = self.begin(label)
        results, _ = self.results([text])
        return results[0]

    @property
    def label(self) -> int:
        return self.current.label

    @property
    def num_queries(self) -> int:
        """Queries spent on the example begun by :meth:`start`."""
        return self.current.num_queries

    @property
    def budget_spent(self) -> bool:
        return self.spent(self.current)

    def results(self, texts: Sequence[AttackedText]) -> tuple[list[GoalResult], bool]:
        """Score ``texts`` (in order, truncated to the queries left); returns them and whether the budget
        is now spent (the search must stop)."""
        texts = self.admit(self.current, texts)
        return self.judge(self.current, texts, self.predict([t.model_input() for t in texts]))

    # ------------------------------------------------------------------ the parts, for pooled examples

    def begin(self, label: int) -> ExampleQueries:
        """A new example's accounting (no query spent yet)."""
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or label < 0:
            raise ValueError(f"label must be a non-negative int, got {label!r}")
        return ExampleQueries(int(label))

    def spent(self, example: ExampleQueries) -> bool:
        return self.query_budget is not None and example.num_queries >= self.query_budget

    def admit(self, example: ExampleQueries, texts: Sequence[AttackedText]) -> list[AttackedText]:
        """The part of ``example``'s request the budget allows, counted as queries."""
        texts = list(texts)
        if self.query_budget is not None:
            texts = texts[: max(0, self.query_budget - example.num_queries)]
        example.num_queries += len(texts)
        return texts

    def judge(self, example: ExampleQueries, texts: Sequence[AttackedText],
              rows: Sequence[np.ndarray]) -> tuple[list[GoalResult], bool]:
        """``texts``' results from their predicted ``rows``, and whether ``example``'s budget is spent."""
        out = []
        for text, p in zip(texts, rows):
            if self.mode == "textattack":
                score = float(p.dtype.type(1.0) - p[example.label])
            else:
                score = 1.0 - float(p[example.label])
            out.append(GoalResult(text, p.astype(np.float64), score, int(np.argmax(p)) != example.label))
        return out, self.spent(example)

    def predict(self, inputs: Sequence[ClassifierInput]) -> list[np.ndarray]:
        """Probability rows for ``inputs`` (repeats and cached inputs cost no model call); the uncached
        ones go to ``predict_proba`` together, or in chunks of ``batch_size``."""
        missing = list(dict.fromkeys(x for x in inputs if x not in self._cache))
        step = self.batch_size or max(1, len(missing))
        fresh: dict[ClassifierInput, np.ndarray] = {}
        for start in range(0, len(missing), step):
            chunk = missing[start : start + step]
            probs = self.model.predict_proba(chunk)
            if tuple(probs.shape[:1]) != (len(chunk),) or probs.ndim != 2:
                raise ValueError(
                    f"predict_proba returned shape {tuple(probs.shape)} for {len(chunk)} inputs, "
                    "expected [n, num_labels]"
                )
            self.model_calls += 1
            self.texts_scored += len(chunk)
            rows = probs.detach().cpu()
            rows = (rows if rows.dtype in (torch.float32, torch.float64) else rows.to(torch.float64)).numpy()
            fresh.update(zip(chunk, rows))
        out = []
        for x in inputs:
            if x in fresh:
                row = fresh[x]
            else:
                row = self._cache[x]
                self._cache.move_to_end(x)
            out.append(row)
        if self.cache_size:
            self._cache.update(fresh)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return out

    def clear_cache(self) -> None:
        self._cache.clear()


__all__ = ["ExampleQueries", "GoalResult", "ProbabilityModel", "UntargetedClassification"]
