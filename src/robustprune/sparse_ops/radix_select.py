"""Exact selection of the k-th smallest score across many tensors, without concatenating them.

Selection runs on integer keys that order like the scores. For a magnitude the IEEE-754 bit pattern
of ``|x|`` read as an integer orders like the value (31 key bits); for a signed score the pattern
with its lower 31 bits flipped when negative, offset by 2**31, does (32 key bits, see
:mod:`robustprune.sparse_ops.scores`). fp16/bf16 widen exactly to fp32, so every supported dtype
is selected on its fp32 pattern. Selection goes digit by digit (radix select): histogram the top
digit over all tensors, find the bucket holding the target rank, then histogram the next digit of
only the elements in that bucket, until every key bit is fixed. Several target ranks share each pass.

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
    """Where rank ``rank`` (0-based, ascending) falls: value bits and how many sit below / equal;
    ``equal_per_tensor``, when the selection already knows it, splits ``num_equal`` by tensor."""

    value_bits: int
    num_below: int
    num_equal: int
    equal_per_tensor: tuple[int, ...] | None = None


def radix_select(histogram: HistogramFn, digit_plan: Sequence[tuple[int, int]],
                 ranks: Sequence[int], key_bits: int = MAGNITUDE_BITS) -> list[RankSelection]:
    """Find the key at each 0-based rank, one histogram pass per digit.

    ``digit_plan`` lists ``(digit_shift, digit_bits)`` from the most significant digit down and must
    cover all ``key_bits`` bits (31 for magnitudes, 32 for signed scores). The histogram's first call
    has ``prefix_shift == key_bits`` (every element counts).
    """
    if sum(bits for _, bits in digit_plan) != key_bits or digit_plan[-1][0] != 0:
        raise ValueError(f"digit plan {digit_plan} does not cover the {key_bits} key bits")
    prefixes = [0] * len(ranks)
    below = [0] * len(ranks)
    equal = [0] * len(ranks)
    prefix_shift = key_bits
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


def chunked_histogram(tensors: Sequence[torch.Tensor], keys: Callable[[torch.Tensor], torch.Tensor], key_bits: int,
                      on_first_pass: Callable[[torch.Tensor, int, int], None] | None = None) -> HistogramFn:
    """A :data:`HistogramFn` over ``tensors`` with ``torch.bincount``, one chunk of keys at a time.

    ``keys(chunk)`` gives the non-negative integer keys of a flat chunk; ``on_first_pass(counts,
    digit_shift, tensor_index)`` sees each chunk's first-pass counts (e.g. to reject Inf/NaN).
    """
    from robustprune.sparse_ops.backend import CPU_CHUNK, flat_chunks

    def histogram(prefixes: list[int], prefix_shift: int, digit_shift: int, digit_bits: int) -> torch.Tensor:
        bins = 1 << digit_bits
        counts = torch.zeros(len(prefixes), bins, dtype=torch.int64)
        for index, tensor in enumerate(tensors):
            for _, chunk in flat_chunks(tensor, CPU_CHUNK):
                chunk_keys = keys(chunk)
                if prefix_shift == key_bits:  # first pass: every element counts
                    chunk_counts = torch.bincount(chunk_keys >> digit_shift, minlength=bins).cpu()
                    if on_first_pass is not None:
                        on_first_pass(chunk_counts, digit_shift, index)
                    counts[0] += chunk_counts
                    continue
                high = chunk_keys >> prefix_shift
                for row, prefix in enumerate(prefixes):
                    selected = chunk_keys[high == prefix]
                    if selected.numel():
                        counts[row] += torch.bincount((selected >> digit_shift) & (bins - 1), minlength=bins).cpu()
        return counts

    return histogram


def empty_thresholds(tensors: Sequence[torch.Tensor], sparsities: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Uninitialised ``(thresholds, tie_quota)`` of the threshold ops' shapes: their fake implementation."""
    device = tensors[0].device
    return (torch.empty(len(sparsities), dtype=torch.float32, device=device),
            torch.empty(len(sparsities), len(tensors), dtype=torch.int64, device=device))


def raise_if_nonfinite(tensor_counts: torch.Tensor, digit_shift: int, tensor_index: int) -> None:
    """Raise if a first-pass histogram (of all elements of one tensor or chunk) counts Inf/NaN values."""
    if int(tensor_counts[..., NONFINITE_BITS >> digit_shift:].sum()):
        raise nonfinite_error(tensor_index)


class NonFiniteError(ValueError):
    """A ranked tensor holds NaN/Inf; ``tensor_index`` says which, so callers can name it."""

    def __init__(self, tensor_index: int) -> None:
        super().__init__(f"tensors[{tensor_index}] contains NaN/Inf value(s); selection needs finite scores "
                         "(magnitude pruning needs finite weights)")
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
    """Per sparsity: prune ``key < threshold``, then the first ``tie_quota[t]`` ties in tensor ``t``."""

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
    ``count_equal(tensor_index, value_bits)`` counts one tensor's elements with that key (called only
    when a selection's ``equal_per_tensor`` is None). Keys are
    those of :func:`radix_select` (magnitude bits or signed-score keys); "one ulp up" is key + 1.
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
            if not ties_to_prune:
                here = 0
            elif sel.equal_per_tensor is not None:
                here = min(ties_to_prune, sel.equal_per_tensor[index])
            else:
                here = min(ties_to_prune, count_equal(index, sel.value_bits))
            quota.append(here)
            ties_to_prune -= here
        tie_quota.append(quota)
    return Thresholds(threshold_bits, tie_quota)
