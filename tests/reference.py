"""Straightforward reference implementations the fast ops are checked against (sort-based)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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


UNIT_ROUNDOFF = {torch.float32: 2.0**-24, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}


def within_rounding(actual, x, w, b, dtype):
    """``actual`` equals ``x @ w.T + b`` up to what the arithmetic allows: fp32 accumulation over the
    reduction length k (at most gamma_k * sum |x_i w_i| + |b| away, for ours and for the fp32 reference
    alike: gamma_k = k u / (1 - k u), u = 2^-24; products of fp16 / bf16 values are exact in fp32), the
    product x @ w.T rounded to the output format, then the bias added and rounded again, as F.linear does
    in half precision (each rounding at most the format's unit roundoff times the value rounded)."""
    x, w = x.float(), w.float()
    expected = F.linear(x, w, None if b is None else b.float())
    product = F.linear(x, w)
    magnitude = F.linear(x.abs(), w.abs(), None if b is None else b.float().abs())
    k = w.shape[1] + 1
    gamma = k * 2.0**-24 / (1 - k * 2.0**-24)
    u = UNIT_ROUNDOFF[dtype]
    rounding = u * expected.abs() + (0 if b is None else u * (1 + u) * product.abs())
    bound = rounding + 2 * gamma * (1 + u) ** 2 * magnitude
    return actual.dtype == dtype and bool(((actual.float() - expected).abs() <= bound).all())
