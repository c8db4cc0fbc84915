"""Untargeted classification goal with TextAttack's query accounting, batched model calls and a cache.

Counting follows TextAttack: the clean prediction of an example is one query, and every candidate text
sent for scoring is one query, even when its prediction comes from the cache (a text seen before) or
appears twice in the same request. Only the model calls are saved: all texts of one request that are not
cached go to ``predict_proba`` together (or one at a time with ``batch_size=1``, the unbatched baseline);
results are identical either way up to the model's batch-size-dependent floating-point noise.
With a query budget a request is truncated to the queries left, and the search stops once it is spent.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from robustprune.data.datasets import ClassifierInput
from robustprune.eval.attacks.text import AttackedText


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


class UntargetedClassification:
    """Goal: any label other than the ground truth. Counts queries per example, caches predictions.

    Args:
        model: anything with ``predict_proba``.
        query_budget: the most queries per example (clean prediction included), None for unlimited.
        batch_size: uncached texts per ``predict_proba`` call; None sends a whole request at once.
        cache_size: predictions kept (least recently used are dropped), shared across examples.
    """

    def __init__(
        self,
        model: ProbabilityModel,
        *,
        query_budget: int | None = None,
        batch_size: int | None = None,
        cache_size: int = 2**16,
    ) -> None:
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
        self.label = 0
        self.num_queries = 0
        self.model_calls = 0  # predict_proba calls, over the object's lifetime
        self.texts_scored = 0  # texts actually run through the model, over the object's lifetime

    def start(self, text: AttackedText, label: int) -> GoalResult:
        """Begin an example: reset its query count and score the clean text (one query)."""
        if not isinstance(label, (int, np.integer)) or label < 0:
            raise ValueError(f"label must be a non-negative int, got {label!r}")
        self.label = int(label)
        self.num_queries = 0
        results, _ = self.results([text])
        return results[0]

    @property
    def budget_spent(self) -> bool:
        return self.query_budget is not None and self.num_queries >= self.query_budget

    def results(self, texts: Sequence[AttackedText]) -> tuple[list[GoalResult], bool]:
        """Score ``texts`` (in order, truncated to the queries left); returns them and whether the budget
        is now spent (the search must stop)."""
        if self.query_budget is not None:
            texts = texts[: max(0, self.query_budget - self.num_queries)]
        self.num_queries += len(texts)
        probs = self._predict([t.model_input() for t in texts])
        out = []
        for text, p in zip(texts, probs):
            out.append(GoalResult(text, p, float(1.0 - p[self.label]), int(np.argmax(p)) != self.label))
        return out, self.budget_spent

    def _predict(self, inputs: list[ClassifierInput]) -> list[np.ndarray]:
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
            rows = probs.detach().to(torch.float64).cpu().numpy()
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


__all__ = ["GoalResult", "ProbabilityModel", "UntargetedClassification"]
