"""Straightforward reference implementations the fast ops are checked against (sort-based)."""

from __future__ import annotations

import torch


def reference_global_masks(tensors: list[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
    """Prune the round(sparsity * n) smallest |w|; ties go to the earliest tensor, then row-major index."""
    magnitudes = torch.cat([t.detach().float().abs().reshape(-1) for t in tensors])
    k = round(sparsity * magnitudes.numel())
    order = torch.sort(magnitudes, stable=True).indices
    keep = torch.ones(magnitudes.numel(), dtype=torch.bool)
    keep[order[:k]] = False
    masks, offset = [], 0
    for t in tensors:
        masks.append(keep[offset:offset + t.numel()].reshape(t.shape))
        offset += t.numel()
    return masks


def reference_nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the n largest |score| per group of m along the last dim; the lower index wins ties."""
    groups = scores.detach().float().abs().reshape(-1, m)
    order = torch.sort(groups, dim=1, descending=True, stable=True).indices
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, order[:, :n], True)
    return keep.reshape(scores.shape)
