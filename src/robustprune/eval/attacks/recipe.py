"""A complete attack recipe: what to change, what must hold, and how to search.

Its own module so that the recipes (:mod:`robustprune.eval.attacks.recipes`) and the engine
(:mod:`robustprune.eval.attacks.attack`, which builds a recipe from its name) both import it, one way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from robustprune.eval.attacks.constraints import Constraint, PreConstraint
from robustprune.eval.attacks.search import GreedyWordSwapWIR
from robustprune.eval.attacks.text import check_mode
from robustprune.eval.attacks.transformations import EditDraws, Transformation


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
        mode: ``"textattack"`` or ``"paper"`` (module docstring); the search must use the same mode.
        draws: the random source of ``"textattack"``-mode character edits, restarted per example.
    """

    name: str
    transformation: Transformation
    pre_constraints: list[PreConstraint]
    constraints: list[Constraint]
    search: GreedyWordSwapWIR
    deviations: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    mode: str = "paper"
    draws: EditDraws | None = None

    def __post_init__(self) -> None:
        check_mode(self.mode)
        if self.search.mode != self.mode:
            raise ValueError(f"recipe {self.name!r} runs in mode {self.mode!r} but its search in {self.search.mode!r}")


__all__ = ["Recipe"]
