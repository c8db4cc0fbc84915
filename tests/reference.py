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
FP32 = UNIT_ROUNDOFF[torch.float32]
FP64 = 2.0**-53
# TF32 keeps 10 of fp32's 23 fraction bits; the tensor cores read an fp32 operand with the low 13 bits dropped
# (truncated): each input is off by less than 2^-10 of itself.
TF32_INPUT = 2.0**-10


def _gamma(k: int, unit: float) -> float:
    """Higham's gamma_k = k u / (1 - k u): a sum of k products (or k additions) in a format of unit roundoff u
    is off by at most gamma_k times the sum of the magnitudes, in any order (FMA or not)."""
    return k * unit / (1 - k * unit)


def linear_error_bound(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, dtype: torch.dtype, *,
                       conversion: int = 1, accumulation: float = FP32, inputs: float = 0.0,
                       bias_rounded_separately: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(expected, bound)``: ``x @ w.T + b`` in float64 on the CPU (products of fp32 values are exact there)
    and how far a computed output in ``dtype`` may be from it, element by element, given the arithmetic:

    - each input is rounded once to the multiply's format first, off by at most ``inputs`` of itself (0 for
      fp32 / fp16 / bf16 inputs, whose products are exact in fp32; :data:`TF32_INPUT` for TF32 tensor cores);
    - the k = in_features products and the bias are summed in a format of unit roundoff ``accumulation``
      (:data:`FP32` for IEEE fp32 round-to-nearest; twice that where the adder truncates), in any order;
    - the sum is converted once to ``dtype``, off by at most ``conversion`` units roundoff of ``dtype`` (1:
      round to nearest; 2: truncation, which can lose up to one whole ulp);
    - ``bias_rounded_separately`` (the CPU path in half precision, as ``F.linear``): the product is converted
      to ``dtype`` first, then the bias added in fp32 and the sum converted again.

    With M = sum |x_i w_i| + |b| and E = ((1 + inputs)^2 - 1) + gamma_k(accumulation) (1 + inputs)^2:
    bound = c u |expected| [+ c u (1 + u) |x @ w.T| + u_32 M] + (1 + c u)^2 (E + gamma_k(2^-53)) M.
    """
    x, w = x.double().cpu(), w.double().cpu()
    bias = None if b is None else b.double().cpu()
    expected = F.linear(x, w, bias)
    magnitude = F.linear(x.abs(), w.abs(), None if bias is None else bias.abs())
    k = w.shape[1] + 1
    u = conversion * UNIT_ROUNDOFF[dtype]
    products = (1 + inputs) ** 2
    path = (products - 1) + _gamma(k, accumulation) * products
    bound = u * expected.abs() + (1 + u) ** 2 * (path + _gamma(k, FP64)) * magnitude
    if bias_rounded_separately and bias is not None:
        bound = bound + u * (1 + u) * F.linear(x, w).abs() + FP32 * magnitude
    return expected, bound


def within_bound(actual: torch.Tensor, expected_and_bound: tuple[torch.Tensor, torch.Tensor]) -> bool:
    """Every element of ``actual`` within its bound of the expected value (see :func:`linear_error_bound`)."""
    expected, bound = expected_and_bound
    return bool(((actual.detach().double().cpu() - expected).abs() <= bound).all())


def within_rounding(actual, x, w, b, dtype, **arithmetic):
    """``actual`` is ``x @ w.T + b`` in ``dtype`` up to what the arithmetic allows (:func:`linear_error_bound`;
    by default the CPU path: fp32 accumulation over the reduction length, then the product rounded to the
    output format, the bias added and rounded again, as ``F.linear`` does in half precision)."""
    arithmetic.setdefault("bias_rounded_separately", True)
    return actual.dtype == dtype and within_bound(actual, linear_error_bound(x, w, b, dtype, **arithmetic))


def nm_linear_backward_bounds(grad_y: torch.Tensor, x: torch.Tensor, w: torch.Tensor, lanes: torch.Tensor,
                              dtype: torch.dtype, **arithmetic) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """``(expected, bound)`` of each gradient of y = x W^T + b for W N:M sparse (``lanes``: the kept lanes of
    each group, rows x groups x N): dL/dx = grad_y W (a reduction over OUT), dL/dvalues = grad_y^T x (over the
    batch) at the stored entries, dL/db = the batch sum of grad_y; each accumulated, then rounded once to
    ``dtype``, as :func:`linear_error_bound` describes with ``arithmetic``."""
    rows = w.shape[0]
    gy, x2 = grad_y.reshape(-1, rows), x.reshape(-1, x.shape[-1])
    grad_x = linear_error_bound(gy, w.t(), None, dtype, **arithmetic)
    grad_w = linear_error_bound(gy.t(), x2.t(), None, dtype, **arithmetic)
    grad_values = tuple(torch.gather(t.view(rows, lanes.shape[1], -1), 2, lanes.cpu()).flatten(1) for t in grad_w)
    grad_b = linear_error_bound(torch.ones(1, gy.shape[0]), gy.t(), None, dtype, **arithmetic)
    return tuple(t.view(x.shape) for t in grad_x), grad_values, tuple(t.view(-1) for t in grad_b)


def ulp(t: torch.Tensor) -> torch.Tensor:
    """The spacing of ``t``'s format at each element's magnitude (float64): what one unit in the last place of
    that element is worth (normal range)."""
    info = torch.finfo(t.dtype)
    magnitude = t.detach().double().abs().clamp_min(info.tiny)
    return torch.pow(2.0, torch.floor(torch.log2(magnitude))) * info.eps
