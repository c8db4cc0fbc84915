"""Sparsity patterns: "unstructured" or "N:M" (N weights KEPT in every group of M).

Some libraries count the zeros instead ("2:4" meaning two zeros); robustprune always counts the kept
weights, so "2:4" and "4:8" are both 50% sparse and "1:4" is 75% sparse.
"""

from __future__ import annotations

from dataclasses import dataclass

from robustprune.sparse_ops.validation import check_sparsity

SUPPORTED_GROUP_SIZES = (4, 8, 16)


@dataclass(frozen=True)
class NMPattern:
    """Keep ``n`` of every ``m`` consecutive weights along the input dimension."""

    n: int
    m: int

    def __post_init__(self) -> None:
        check_nm(self.n, self.m)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.n / self.m

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"


def check_nm(n: int, m: int) -> None:
    if isinstance(n, bool) or isinstance(m, bool) or not isinstance(n, int) or not isinstance(m, int):
        raise TypeError(f"N:M pattern needs integers, got n={n!r}, m={m!r}")
    if m not in SUPPORTED_GROUP_SIZES:
        raise ValueError(f"N:M group size m must be one of {SUPPORTED_GROUP_SIZES}, got m={m}")
    if not 0 < n < m:
        raise ValueError(f"N:M pattern needs 0 < N < M (N = weights kept per group of M), got {n}:{m}")


def parse_pattern(pattern: str | NMPattern | None) -> NMPattern | None:
    """Parse "unstructured" (returns None) or "N:M" (returns an NMPattern)."""
    if pattern is None or isinstance(pattern, NMPattern):
        return pattern
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be 'unstructured' or an 'N:M' string, got {type(pattern).__name__}")
    text = pattern.strip().lower()
    if text == "unstructured":
        return None
    parts = text.split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"pattern must be 'unstructured' or 'N:M' with N kept of every M (e.g. '2:4'), "
                         f"got {pattern!r}")
    return NMPattern(int(parts[0]), int(parts[1]))


def resolve_sparsity(sparsity: float | None, pattern: str | NMPattern | None) -> tuple[float, NMPattern | None]:
    """Check ``sparsity`` against ``pattern`` and return ``(sparsity, N:M pattern or None)``.

    Unstructured pruning needs a sparsity in [0, 1); an N:M pattern fixes it at ``1 - N/M`` (pass
    None, or exactly that value).
    """
    nm = parse_pattern(pattern)
    if nm is not None:
        if sparsity is not None and abs(sparsity - nm.sparsity) > 1e-9:
            raise ValueError(f"sparsity={sparsity} conflicts with pattern {nm} ({nm.sparsity:.4g} sparse); "
                             "leave sparsity=None for N:M patterns")
        return nm.sparsity, nm
    if sparsity is None:
        raise ValueError("sparsity is required for unstructured pruning (a float in [0, 1))")
    return check_sparsity(sparsity), None
