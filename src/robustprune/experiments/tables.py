"""Table pieces shared by the sweep report (:mod:`robustprune.experiments.report`) and the papers' tables
(:mod:`robustprune.experiments.paper_tables`): a sweep point's row, metric keys, number formats, markdown.

Their own module so that both import them, one way (the report builds the papers' tables on request).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

# Row.metrics key of an IMP ticket's mask cosine similarity with OMP masks of the pre-trained weights at its
# sparsity (a fraction; the record's details["cosine_vs_omp_pretrained"], averaged over seeds)
MASK_COSINE = "mask_cosine_vs_omp_pretrained"


@dataclass(frozen=True)
class Row:
    """One point of the sweep, over its seeds: mean metrics, and for accuracies the 95 % Wilson interval
    over the examples of every seed pooled (``intervals``) and the standard deviation over seeds
    (``spread``, with two or more seeds)."""

    method: str
    pattern: str
    sparsity: float
    seeds: int
    metrics: dict[str, float]
    balance: dict[int, float]
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    spread: dict[str, float] = field(default_factory=dict)
    set_balances: dict[str, dict[int, float]] = field(default_factory=dict)  # robust set, shifts
    resumed: bool = False  # some seed's training continued from an earlier run: its time is partial


def set_of(metric_key: str) -> str:
    """The evaluated set a metric is measured on (collapse is judged per set)."""
    if metric_key.startswith("shift:") or metric_key == "robust_set":
        return metric_key
    return "clean"


def robust_keys(rows: Sequence[Row]) -> list[str]:
    keys = sorted({k for r in rows for k in r.metrics if k.startswith(("attack:", "shift:", "robust_set"))})
    return [k for k in keys if not k.endswith((":success_rate", ":queries"))]


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{digits}f}"


def fmt_accuracy(row: Row, key: str) -> str:
    """``mean [low, high]`` (95 % Wilson), ``mean ± sd [low, high]`` over several seeds, else the mean."""
    text = fmt(row.metrics.get(key))
    if key in row.spread:
        text += f" ± {row.spread[key]:.1f}"
    if key in row.intervals:
        low, high = row.intervals[key]
        text += f" [{low:.1f}, {high:.1f}]"
    return text


def column_name(key: str) -> str:
    """Table header of a metric key: attacks in TextAttack's terms (Aua%, Suc%, #Query)."""
    if key.startswith("attack:"):
        parts = key.split(":")
        what = {"success_rate": "Suc%", "queries": "#Query"}.get(parts[2], parts[2]) if len(parts) > 2 else "Aua%"
        return f"{parts[1]} {what}"
    if key.startswith("shift:"):
        return f"{key[6:]} acc"
    return "robust set acc" if key == "robust_set" else key


def markdown(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


__all__ = ["MASK_COSINE", "Row", "column_name", "fmt", "fmt_accuracy", "markdown", "robust_keys", "set_of"]
