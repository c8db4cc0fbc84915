"""N:M mask: in every group of M consecutive elements keep the N with the largest magnitude."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def nm_mask_kernel(
    scores_ptr,
    mask_ptr,
    num_groups,
    N: tl.constexpr,
    M: tl.constexpr,
    GROUPS_PER_PROGRAM: tl.constexpr,
):
    pid = tl.program_id(0)
    groups = pid * GROUPS_PER_PROGRAM + tl.arange(0, GROUPS_PER_PROGRAM)
    lanes = tl.arange(0, M)
    offsets = groups[:, None] * M + lanes[None, :]
    in_bounds = (groups < num_groups)[:, None] & (lanes[None, :] < M)
    x = tl.load(scores_ptr + offsets, mask=in_bounds, other=0.0).to(tl.float32)
    bits = x.to(tl.int32, bitcast=True) & 0x7FFFFFFF
    # rank = how many lanes in the group beat this one; a tie goes to the lower lane index.
    rank = tl.zeros((GROUPS_PER_PROGRAM, M), dtype=tl.int32)
    for j in tl.static_range(M):
        lane_j = tl.sum(tl.where(lanes[None, :] == j, bits, 0), axis=1)[:, None]
        beats = (lane_j > bits) | ((lane_j == bits) & (j < lanes[None, :]))
        rank += beats.to(tl.int32)
    tl.store(mask_ptr + offsets, (rank < N).to(tl.uint8), mask=in_bounds)


def nm_mask(scores: torch.Tensor, mask: torch.Tensor, n: int, m: int, groups_per_program: int = 64) -> None:
    """Write into ``mask`` (uint8, same number of elements) the N:M keep-mask of contiguous ``scores``.

    Per launch: reads ``numel * element_size`` bytes, writes ``numel`` bytes; M^2 integer compares per group.
    """
    num_groups = scores.numel() // m
    # Fixed launch: it runs once per weight per pruning, so timing configs would cost more than they save.
    grid = (triton.cdiv(num_groups, groups_per_program),)
    nm_mask_kernel[grid](scores, mask, num_groups, N=n, M=m, GROUPS_PER_PROGRAM=groups_per_program)
