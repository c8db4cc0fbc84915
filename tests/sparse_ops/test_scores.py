"""Signed-score thresholds: the exact global selection of magnitude pruning, on signed keys."""

import pytest
import torch

from robustprune.ops import score_keep_mask, score_thresholds
from robustprune.sparse_ops.scores import key_to_float, signed_keys
from tests.conftest import DTYPES


def reference_keep(tensors, sparsity):
    """Prune the round(sparsity * n) lowest scores; ties in traversal order (stable sort of the concat)."""
    flat = torch.cat([t.float().reshape(-1) for t in tensors])
    pruned = torch.sort(flat, stable=True).indices[:round(sparsity * flat.numel())]
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    keep[pruned] = False
    return keep


def keep_of(tensors, sparsities):
    thresholds, quota = score_thresholds(tensors, sparsities)
    return [torch.cat([score_keep_mask(t, float(thresholds[s]), int(quota[s, i])).reshape(-1)
                       for i, t in enumerate(tensors)]) for s in range(len(sparsities))]


@pytest.mark.parametrize("dtype", DTYPES)
def test_equals_a_stable_sort_of_the_concatenation(dtype):
    g = torch.Generator().manual_seed(0)
    tensors = [torch.randn(64, 33, generator=g).to(dtype) - 1.0, (torch.randn(700, generator=g) * 4).to(dtype),
               torch.tensor([0.0, -0.0, 1.0, 1.0, 1.0, -2.0, -2.0]).to(dtype)]  # ties, signed zeros
    sparsities = [0.0, 0.05, 0.3, 0.5, 0.5003, 0.9, 0.999]
    for sparsity, keep in zip(sparsities, keep_of(tensors, sparsities)):
        assert torch.equal(keep, reference_keep(tensors, sparsity)), sparsity


def test_many_ties_at_the_cut_go_to_the_earliest_tensor_and_index():
    tensors = [torch.full((10,), -0.5), torch.full((6,), -0.5), torch.tensor([3.0, -7.0])]
    (keep,) = keep_of(tensors, [0.5])  # 9 pruned: -7.0, then the first 8 of the 16 ties
    assert keep.tolist() == [False] * 8 + [True] * 2 + [True] * 6 + [True, False]


def test_nested_across_sparsities():
    g = torch.Generator().manual_seed(1)
    tensors = [torch.randn(200, generator=g), torch.randn(3, 50, generator=g)]
    keeps = keep_of(tensors, [0.2, 0.4, 0.8])
    assert bool((keeps[1] <= keeps[0]).all()) and bool((keeps[2] <= keeps[1]).all())


def test_keys_order_like_the_values():
    values = torch.tensor([float("-inf"), -3.0, -1e-40, -0.0, 0.0, 1e-40, 2.0, float("inf")])
    keys = signed_keys(values)
    assert keys.tolist() == sorted(keys.tolist()) and keys[3] == keys[4]  # -0.0 is +0.0
    assert [key_to_float(int(k)) for k in keys[[0, 1, 6, 7]]] == [float("-inf"), -3.0, 2.0, float("inf")]
    assert key_to_float(0) == float("-inf")  # the empty cut


def test_errors_and_opcheck():
    with pytest.raises(ValueError, match=r"tensors\[1\] contains 1 NaN/Inf"):
        score_thresholds([torch.randn(4), torch.tensor([1.0, float("nan")])], [0.5])
    with pytest.raises(ValueError, match="empty list"):
        score_thresholds([], [0.5])
    with pytest.raises(ValueError, match=r"sparsities\[0\]"):
        score_thresholds([torch.randn(4)], [1.0])
    with pytest.raises(TypeError, match="dtype torch.int64"):
        score_thresholds([torch.arange(4)], [0.5])
    with pytest.raises(ValueError, match="threshold is NaN"):
        score_keep_mask(torch.randn(4), float("nan"))
    with pytest.raises(TypeError, match="scores has dtype torch.int64"):
        score_keep_mask(torch.arange(4), 1.0)
    with pytest.raises(ValueError, match="ties_to_prune must be >= 0"):
        score_keep_mask(torch.randn(4), 0.0, -1)
    torch.library.opcheck(torch.ops.robustprune.score_thresholds.default, ([torch.randn(8), torch.randn(2, 3)], [0.25]))
