"""Exact selection of the k-th smallest magnitude across many tensors, without concatenating them.

For a non-negative float the IEEE-754 bit pattern read as an integer orders like the value, and
fp16/bf16 widen exactly to fp32, so every supported dtype is selected on the 31 magnitude bits of
its fp32 pattern. Selection goes digit by digit (radix select): histogram the top digit over all
tensors, find the bucket holding the target rank, then histogram the next digit of only the
elements in that bucket, until all 31 bits are fixed. Several target ranks share each pass.

A backend supplies the histograms (CPU: chunked ``torch.bincount``; CUDA: a Triton kernel), so
memory stays at a chunk plus the histograms, whatever the number of weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

MAGNITUDE_BITS = 31
NONFINITE_BITS = 0x7F800000  # |x| bit patterns at or above this are Inf or NaN

# (prefixes, prefix_shift, digit_shift, digit_bits) -> counts of shape (len(prefixes), 2**digit_bits),
# summed over all tensors, of elements whose bits >> prefix_shift equal each prefix.
HistogramFn = Callable[[list[int], int, int, int], torch.Tensor]


@dataclass(frozen=True)
class RankSelection:
    """Where rank ``rank`` (0-based, ascending) falls: value bits and how many sit below / equal."""

    value_bits: int
    num_below: int
    num_equal: int


def radix_select(histogram: HistogramFn, digit_plan: Sequence[tuple[int, int]],
                 ranks: Sequence[int]) -> list[RankSelection]:
    """Find the magnitude bit pattern at each 0-based rank, one histogram pass per digit.

    ``digit_plan`` lists ``(digit_shift, digit_bits)`` from the most significant digit down and must
    cover all 31 magnitude bits.
    """
    if sum(bits for _, bits in digit_plan) != MAGNITUDE_BITS or digit_plan[-1][0] != 0:
        raise ValueError(f"digit plan {digit_plan} does not cover the {MAGNITUDE_BITS} magnitude bits")
    prefixes = [0] * len(ranks)
    below = [0] * len(ranks)
    equal = [0] * len(ranks)
    prefix_shift = MAGNITUDE_BITS
    for digit_shift, digit_bits in digit_plan:
        distinct = sorted(set(prefixes))
        counts = histogram(distinct, prefix_shift, digit_shift, digit_bits)
        cumulative = counts.cumsum(dim=1)
        row_of = {prefix: row for row, prefix in enumerate(distinct)}
        for i, rank in enumerate(ranks):
            row = row_of[prefixes[i]]
            target = torch.tensor([rank - below[i]], dtype=cumulative.dtype, device=cumulative.device)
            digit = int(torch.searchsorted(cumulative[row], target, right=True))
            if digit > 0:
                below[i] += int(cumulative[row, digit - 1])
            equal[i] = int(counts[row, digit])
            prefixes[i] = (prefixes[i] << digit_bits) | digit
        prefix_shift = digit_shift
    return [RankSelection(p, b, e) for p, b, e in zip(prefixes, below, equal)]


def raise_if_nonfinite(tensor_counts: torch.Tensor, digit_shift: int, tensor_index: int) -> None:
    """Raise if a first-pass histogram (of all elements of one tensor or chunk) counts Inf/NaN values."""
    if int(tensor_counts[..., NONFINITE_BITS >> digit_shift:].sum()):
        raise nonfinite_error(tensor_index)


class NonFiniteError(ValueError):
    """A ranked tensor holds NaN/Inf; ``tensor_index`` says which, so callers can name it."""

    def __init__(self, tensor_index: int) -> None:
        super().__init__(f"tensors[{tensor_index}] contains NaN/Inf value(s); magnitude pruning needs finite weights")
        self.tensor_index = tensor_index


def nonfinite_error(tensor_index: int) -> NonFiniteError:
    return NonFiniteError(tensor_index)


def ceil_float_bits(value: float) -> int:
    """Bit pattern of the smallest fp32 >= ``value`` (>= 0): ``|x| >= value`` iff ``bits(|x|) >= it``."""
    rounded = torch.tensor([value], dtype=torch.float32)
    bits = int(rounded.view(torch.int32)[0])
    return bits + 1 if float(rounded[0]) < value else bits


@dataclass(frozen=True)
class Thresholds:
    """Per sparsity: prune ``|w| < threshold``, then the first ``tie_quota[t]`` ties in tensor ``t``."""

    threshold_bits: list[int]
    tie_quota: list[list[int]]


def select_thresholds(
    numels: Sequence[int],
    sparsities: Sequence[float],
    select_ranks: Callable[[list[int]], list[RankSelection]],
    count_equal: Callable[[int, int], int],
) -> Thresholds:
    """Exact thresholds that prune ``round(sparsity * total)`` weights for each sparsity.

    Tie rule: weights equal to the k-th smallest magnitude are pruned in traversal order (tensor
    order, then row-major index) until exactly k are pruned. When every tie is pruned, the threshold
    is moved one ulp up instead and no quota is needed, which is the common case for real weights.
    ``select_ranks`` locates 0-based ranks (e.g. :func:`radix_select` with a histogram backend);
    ``count_equal(tensor_index, value_bits)`` counts one tensor's elements with that magnitude.
    """
    total = sum(numels)
    targets = [round(s * total) for s in sparsities]
    ranks = [k - 1 for k in targets if k > 0]
    selections = iter(select_ranks(ranks) if ranks else [])
    threshold_bits: list[int] = []
    tie_quota: list[list[int]] = []
    for k in targets:
        if k == 0:
            threshold_bits.append(0)
            tie_quota.append([0] * len(numels))
            continue
        sel = next(selections)
        ties_to_prune = k - sel.num_below
        if ties_to_prune == sel.num_equal:
            threshold_bits.append(sel.value_bits + 1)
            tie_quota.append([0] * len(numels))
            continue
        threshold_bits.append(sel.value_bits)
        quota = []
        for index in range(len(numels)):
            here = min(ties_to_prune, count_equal(index, sel.value_bits)) if ties_to_prune else 0
            quota.append(here)
            ties_to_prune -= here
        tie_quota.append(quota)
    return Thresholds(threshold_bits, tie_quota)
