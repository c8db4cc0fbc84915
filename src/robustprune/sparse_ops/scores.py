"""Exact global thresholds of signed scores over many tensors, and the keep-masks they define.

For scores that are not magnitudes: hard-concrete ``log_alpha`` (Robust Tickets), IMP's magnitudes
with already-pruned entries ranked first, EarlyRobust's coefficients. The same radix selection as
magnitude pruning (:mod:`robustprune.sparse_ops.radix_select`) runs on 32-bit keys that order like
the signed fp32 values, so the scores are never concatenated: memory stays at a chunk of keys.

Op:
- ``robustprune::score_thresholds(tensors, sparsities) -> (thresholds, tie_quota)``

Rule: tensor ``t`` prunes every score ``< thresholds[s]`` plus its first ``tie_quota[s, t]`` scores
``== thresholds[s]`` (row-major). Across all tensors this prunes exactly ``round(sparsity * total)``
scores, ties at the cut going to the earliest tensor and index; :func:`score_keep_mask` applies it.
``-0.0`` counts as ``+0.0``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from robustprune.sparse_ops.backend import flat_chunks, skip_dynamo_until_loaded
from robustprune.sparse_ops.radix_select import (
    chunked_histogram,
    empty_thresholds,
    radix_select,
    select_thresholds,
)
from robustprune.sparse_ops.validation import (
    check_finite,
    check_float_tensor,
    check_sparsities,
    check_tensor_list,
)

SIGNED_KEY_BITS = 32
DIGIT_PLAN = ((16, 16), (0, 16))
_SIGN_OFFSET = 1 << 31
_NEG_INF_KEY = ~int(torch.tensor([float("-inf")]).view(torch.int32)[0])


def signed_keys(chunk: torch.Tensor) -> torch.Tensor:
    """int64 keys in ``[0, 2**32)`` that order like the fp32 values of ``chunk``: non-negative values
    keep their bit pattern (offset by ``2**31``), negative ones have the pattern's bits inverted."""
    bits = (chunk.float() + 0.0).view(torch.int32).to(torch.int64)  # + 0.0 turns -0.0 into +0.0
    return torch.where(bits < 0, ~bits, bits + _SIGN_OFFSET)


def key_to_float(key: int) -> float:
    """The fp32 value whose :func:`signed_keys` key is ``key``; keys below that of ``-inf`` (the empty
    cut of sparsity 0) give ``-inf``, below every finite score."""
    key = max(key, _NEG_INF_KEY)
    bits = key - _SIGN_OFFSET if key >= _SIGN_OFFSET else ~key
    return float(torch.tensor([bits], dtype=torch.int32).view(torch.float32)[0])


def _check_inputs(tensors: Sequence[torch.Tensor], sparsities: Sequence[float]) -> None:
    check_tensor_list(tensors, "tensors")
    check_sparsities(sparsities, "sparsities")


def score_thresholds(tensors: Sequence[torch.Tensor], sparsities: Sequence[float]
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact global thresholds of signed ``tensors`` for each sparsity, in one selection.

    Returns ``thresholds`` (float32, one per sparsity) and ``tie_quota`` (int64, sparsities x tensors);
    see the module docstring for the mask they define. Raises on an empty list, a sparsity outside
    [0, 1), an unsupported dtype or NaN/Inf scores (named by index).
    """
    _check_inputs(tensors, sparsities)
    for index, tensor in enumerate(tensors):
        check_finite(tensor, f"tensors[{index}]")
    return _score_thresholds_op(list(tensors), [float(s) for s in sparsities])


@torch.library.custom_op("robustprune::score_thresholds", mutates_args=(), device_types=("cpu", "cuda"))
def _score_thresholds_op(tensors: list[torch.Tensor], sparsities: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    # bincount and the key arithmetic run on either device: one implementation for both
    _check_inputs(tensors, sparsities)
    tensors = [t.contiguous() for t in tensors]
    histogram = chunked_histogram(tensors, signed_keys, SIGNED_KEY_BITS)

    def count_equal(index: int, key: int) -> int:
        return sum(int((signed_keys(chunk) == key).sum()) for _, chunk in flat_chunks(tensors[index]))

    result = select_thresholds([t.numel() for t in tensors], sparsities,
                               lambda ranks: radix_select(histogram, DIGIT_PLAN, ranks, SIGNED_KEY_BITS),
                               count_equal)
    device = tensors[0].device
    thresholds = torch.tensor([key_to_float(key) for key in result.threshold_bits], dtype=torch.float32,
                              device=device)
    return thresholds, torch.tensor(result.tie_quota, dtype=torch.int64, device=device)


@_score_thresholds_op.register_fake
def _score_thresholds_fake(tensors: list[torch.Tensor], sparsities: list[float]):
    _check_inputs(tensors, sparsities)
    return empty_thresholds(tensors, sparsities)


@torch.no_grad()
def score_keep_mask(scores: torch.Tensor, threshold: float, ties_to_prune: int = 0) -> torch.Tensor:
    """Keep-mask (bool, ``scores``' shape) of the rule above: prune ``score < threshold`` and the first
    ``ties_to_prune`` scores equal to it (row-major); compared in fp32, a chunk at a time."""
    check_float_tensor(scores, "scores")
    if math.isnan(threshold):  # every comparison with NaN is False: the mask would prune everything
        raise ValueError("threshold is NaN; pass a threshold from score_thresholds")
    if ties_to_prune < 0:
        raise ValueError(f"ties_to_prune must be >= 0, got {ties_to_prune}")
    keep = torch.empty(scores.shape, dtype=torch.bool, device=scores.device)
    flat_keep = keep.view(-1)
    for start, chunk in flat_chunks(scores.detach().contiguous()):
        values = chunk.float()
        kept = flat_keep[start:start + values.numel()]
        torch.ge(values, threshold, out=kept)
        if ties_to_prune:
            ties = torch.nonzero(values == threshold).view(-1)[:ties_to_prune]
            kept[ties] = False
            ties_to_prune -= ties.numel()
    return keep


skip_dynamo_until_loaded(_score_thresholds_op)

__all__ = ["score_keep_mask", "score_thresholds"]
