"""What to prune: the sparsity / pattern arguments every pruner shares, checked one way."""

from __future__ import annotations

from robustprune.sparse_ops.patterns import NMPattern, parse_pattern
from robustprune.sparse_ops.validation import check_sparsity


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
