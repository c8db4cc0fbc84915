"""Greedy search by word importance ranking (TextAttack's ``GreedyWordSwapWIR``).

1. Rank the words that may be changed by how much removing them hurts the true class:
   ``"delete"`` (drop the word), ``"unk"`` (replace it by an unknown token), or ``"weighted-saliency"``
   (PWWS: softmax of the ``[UNK]`` saliencies times the best swap at that word). Every ranking
   text is one query, and all of them go to the model in one request.
   ``"textattack"`` mode ranks exactly as TextAttack 0.3.11: PWWS weighs the best swap's score itself,
   the softmax is taken in float32, and the order is numpy's default ``argsort`` of the negated scores
   over the indices in the order the attack lists them. ``"paper"`` mode: PWWS weighs the best swap's
   drop below the clean score (the paper's delta p), in float64, and ties keep the earlier word first.
2. Walk the words in that order; at each, score all constrained candidates in one request and keep the
   best if it raises the score; stop at the first success (preferring, among the successful candidates,
   the one most similar to the reference when a similarity constraint scored them) or when the query
   budget is spent.

The search is a generator: it yields each request (a list of texts to score) and is sent back
``(results, budget_spent)``. Whoever drives it decides how requests reach the model: one at a time, or
pooled with other examples' requests into shared forward batches; the search reads the same either way.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Protocol

import numpy as np
import torch

from robustprune.eval.attacks.goal import GoalResult
from robustprune.eval.attacks.text import AttackedText, check_mode

WIR_METHODS = ("delete", "unk", "weighted-saliency")


# A search yields requests (texts to score) and is sent their answers: (results, budget spent).
Answer = tuple[list[GoalResult], bool]


class SearchContext(Protocol):
    """What a search needs from the attack: allowed indices and filtered candidates."""

    def allowed_indices(self, text: AttackedText) -> list[int]: ...

    def candidates(
        self, current: AttackedText, original: AttackedText, indices: Sequence[int]
    ) -> list[AttackedText]: ...


def _stable_descending(scores: Sequence[float]) -> np.ndarray:
    """Positions by decreasing score; ties keep the earlier word first."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


class GreedyWordSwapWIR:
    """Greedy swap search in word-importance order.

    Args:
        wir_method: ``"delete"``, ``"unk"`` or ``"weighted-saliency"``.
        unk_token: the token the ``unk`` and saliency rankings put in place of a word.
        mode: ``"textattack"`` or ``"paper"`` ranking (see the module docstring).
    """

    def __init__(self, wir_method: str = "unk", unk_token: str = "[UNK]", *, mode: str = "paper") -> None:
        if wir_method not in WIR_METHODS:
            raise ValueError(f"wir_method must be one of {WIR_METHODS}, got {wir_method!r}")
        self.wir_method = wir_method
        self.unk_token = unk_token
        self.mode = check_mode(mode)

    def rank(self, ctx: SearchContext, initial: GoalResult) -> Generator[list[AttackedText], Answer,
                                                                          tuple[list[int], bool]]:
        """Word indices, most important first, and whether the query budget ran out while ranking."""
        text = initial.text
        indices = ctx.allowed_indices(text)
        if not indices:
            return [], False
        if self.wir_method == "delete":
            probes = [text.delete_word(i) for i in indices]
        else:
            probes = [text.replace_word(i, self.unk_token) for i in indices]
        results, over = yield probes
        scores = [r.score for r in results]
        if len(scores) < len(indices):  # budget cut the request short: unscored words rank last
            scores += [-np.inf] * (len(indices) - len(scores))
        if self.wir_method == "weighted-saliency" and not over:
            textattack = self.mode == "textattack"
            if textattack:
                weights = torch.softmax(torch.tensor(scores, dtype=torch.float32), dim=0).numpy()
            else:
                saliency = np.asarray(scores, dtype=np.float64)
                weights = np.exp(saliency - saliency.max())
                weights /= weights.sum()
            best_swaps = np.zeros(len(indices))
            for k, i in enumerate(indices):
                swaps = ctx.candidates(text, text, [i])
                if swaps:
                    swap_results, over = yield swaps
                    if swap_results:
                        # TextAttack weighs the best swap's score; the paper its drop below the clean score
                        best_swaps[k] = max(r.score for r in swap_results) - (0.0 if textattack else initial.score)
                if over:
                    break
            scores = list(weights * best_swaps)
        if self.mode == "textattack":
            order = np.argsort(-np.asarray(scores, dtype=np.float64))  # numpy's default sort, as TextAttack
        else:
            order = _stable_descending(scores)
        return [indices[k] for k in order], over

    def search(self, ctx: SearchContext, initial: GoalResult) -> Generator[list[AttackedText], Answer, GoalResult]:
        """The best result found from ``initial`` (a success, or the highest-scoring text reached)."""
        order, over = yield from self.rank(ctx, initial)
        current = initial
        for index in order:
            if over:
                break
            swaps = ctx.candidates(current.text, initial.text, [index])
            if not swaps:
                continue
            results, over = yield swaps
            if not results:
                break
            ranked = [results[k] for k in _stable_descending([r.score for r in results])]
            if ranked[0].score <= current.score:
                continue
            current = ranked[0]
            if current.succeeded:
                best, best_similarity = current, -np.inf
                for result in ranked:
                    if not result.succeeded or "similarity" not in result.text.attrs:
                        break
                    if result.text.attrs["similarity"] > best_similarity:
                        best, best_similarity = result, result.text.attrs["similarity"]
                return best
        return current


__all__ = ["WIR_METHODS", "Answer", "GreedyWordSwapWIR", "SearchContext"]
