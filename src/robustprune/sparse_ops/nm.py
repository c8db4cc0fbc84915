"""N:M masks: ``robustprune::nm_mask(scores, n, m) -> bool mask``.

In every group of ``m`` consecutive elements along the last (input) dimension keep the ``n`` with the
largest magnitude ``|score|``; on equal magnitudes the lower index within the group is kept. Any score
works: ``|W|`` for magnitude pruning, Wanda's ``|W| * ||X||`` or SparseGPT's saliency later.

CPU path: a compiled kernel (:mod:`robustprune.sparse_ops.nm_mask_cpu`, LLVM IR compiled once per
machine) when llvmlite is importable, loaded on the first call; otherwise (llvmlite missing, the kernel
failing to build: one warning names why; :mod:`robustprune.sparse_ops.compiled`), or with
``ROBUSTPRUNE_NM_MASK_CPU=eager`` in the environment, the eager torch path: a sorting network over the ``m`` lanes of each chunk (elementwise
min/max on integer bit patterns, vectorised) finds each group's N-th largest magnitude; ``>=`` that
value is the mask, and the rare groups where the N-th largest is tied are re-ranked exactly. Both give
bit-identical masks.
"""

from __future__ import annotations

import functools

import torch

from robustprune.sparse_ops.backend import (
    CPU_CHUNK,
    check_triton_device,
    count_launch,
    skip_dynamo_until_loaded,
    triton_route,
)
from robustprune.sparse_ops.compiled import CompiledRoute
from robustprune.sparse_ops.patterns import check_nm
from robustprune.sparse_ops.validation import check_float_tensor

# Integer view and magnitude mask per dtype: clearing the sign bit gives an order-preserving |x|.
_MAGNITUDE_VIEW = {
    torch.float32: (torch.int32, 0x7FFFFFFF),
    torch.float16: (torch.int16, 0x7FFF),
    torch.bfloat16: (torch.int16, 0x7FFF),
}


def check_nm_scores(scores: torch.Tensor, n: int, m: int, name: str = "scores") -> None:
    check_nm(n, m)
    check_float_tensor(scores, name)
    if scores.dim() == 0 or scores.shape[-1] % m != 0:
        raise ValueError(f"{name} has shape {tuple(scores.shape)}: its last (input) dimension must be "
                         f"divisible by M={m} to form {n}:{m} groups")


@functools.cache
def sorting_network(m: int) -> tuple[tuple[int, int], ...]:
    """Batcher's odd-even merge sort comparators (low index gets the min) for a power-of-two ``m``."""
    pairs = []
    p = 1
    while p < m:
        k = p
        while k >= 1:
            for j in range(k % p, m - k, 2 * k):
                for i in range(min(k, m - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return tuple(pairs)


@functools.cache
def selection_network(m: int, outputs: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """The comparators of :func:`sorting_network` that can influence the given sorted lanes."""
    needed = set(outputs)
    kept = []
    for lo, hi in reversed(sorting_network(m)):
        if lo in needed or hi in needed:
            kept.append((lo, hi))
            needed.update((lo, hi))
    return tuple(reversed(kept))


def _rerank_tied_groups(bits: torch.Tensor, keep: torch.Tensor, n: int) -> None:
    """Fix groups that kept more than ``n`` because of ties: rank exactly, lower lane wins ties."""
    rows = torch.nonzero(keep.sum(dim=1) > n).view(-1)
    group = bits[rows]
    lane = torch.arange(group.shape[1])
    other, this = group.unsqueeze(1), group.unsqueeze(2)  # [g, i, j]: does lane j beat lane i?
    beats = (other > this) | ((other == this) & (lane.view(1, 1, -1) < lane.view(1, -1, 1)))
    keep[rows] = beats.sum(dim=2) < n


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Bool keep-mask with ``n`` of every ``m`` consecutive last-dim entries set (largest ``|score|``).

    ``n`` counts the KEPT weights: ``nm_mask(w, 2, 4)`` is the 50%-sparse 2:4 pattern. Ties keep the
    lower index in the group. Raises if the last dimension is not divisible by ``m``, if not
    ``0 < n < m``, if ``m`` is not 4, 8 or 16, or on an unsupported dtype.
    """
    check_nm_scores(scores, n, m)
    return _nm_mask_op(scores, int(n), int(m))


CPU_ROUTE = CompiledRoute("nm_mask_cpu", "ROBUSTPRUNE_NM_MASK_CPU", "nm_mask")


def compiled_cpu_available() -> bool:
    """Whether the CPU op runs the compiled kernel (llvmlite importable, no kernel failed to build, not
    switched off by ``ROBUSTPRUNE_NM_MASK_CPU=eager``; ``compiled`` or unset: the default)."""
    return CPU_ROUTE.available()


@torch.library.custom_op("robustprune::nm_mask", mutates_args=(), device_types="cpu")
def _nm_mask_op(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    if triton_route():  # route("triton"): the CUDA implementation on these CPU tensors
        return _nm_mask_triton(scores, n, m)
    count_launch("robustprune::nm_mask", "cpu", (scores,))
    check_nm_scores(scores, n, m)
    mask = CPU_ROUTE.run(lambda kernels: kernels.nm_mask_into(scores.contiguous(),
                                                              torch.empty(scores.shape, dtype=torch.bool), n, m))
    return nm_mask_eager(scores, n, m) if mask is None else mask


def nm_mask_eager(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """The eager torch CPU path of ``robustprune::nm_mask`` (where the compiled kernel is unavailable)."""
    check_nm_scores(scores, n, m)
    int_dtype, magnitude_mask = _MAGNITUDE_VIEW[scores.dtype]
    groups = scores.contiguous().view(-1, m)
    mask = torch.empty(scores.shape, dtype=torch.bool)
    mask_groups = mask.view(-1, m)
    # Ascending sorted lanes: m - n holds each group's n-th largest, m - n - 1 the (n+1)-th.
    comparators = selection_network(m, (m - n - 1, m - n))
    rows_per_chunk = max(1, CPU_CHUNK // m)
    for start in range(0, groups.shape[0], rows_per_chunk):
        bits = groups[start:start + rows_per_chunk].view(int_dtype) & magnitude_mask
        lanes = list(bits.unbind(dim=1))
        for lo, hi in comparators:
            lanes[lo], lanes[hi] = torch.minimum(lanes[lo], lanes[hi]), torch.maximum(lanes[lo], lanes[hi])
        keep = torch.ge(bits, lanes[m - n].unsqueeze(1), out=mask_groups[start:start + rows_per_chunk])
        # ">= n-th largest" keeps more than n only where the n-th and (n+1)-th largest are tied.
        if bool(torch.eq(lanes[m - n], lanes[m - n - 1]).any()):
            _rerank_tied_groups(bits, keep, n)
    return mask


@_nm_mask_op.register_kernel("cuda")
def _nm_mask_triton(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    count_launch("robustprune::nm_mask", "triton", (scores,))
    check_nm_scores(scores, n, m)
    check_triton_device(scores, "scores")
    from robustprune.kernels.nm_mask import nm_mask as launch_nm_mask

    mask = torch.empty(scores.shape, dtype=torch.bool, device=scores.device)
    launch_nm_mask(scores.contiguous(), mask.view(torch.uint8), n, m)
    return mask


@_nm_mask_op.register_fake
def _nm_mask_fake(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    check_nm_scores(scores, n, m)
    return torch.empty(scores.shape, dtype=torch.bool, device=scores.device)


skip_dynamo_until_loaded(_nm_mask_op)
