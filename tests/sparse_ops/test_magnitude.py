import itertools
import math

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from hypothesis import given, settings
from hypothesis import strategies as st

from robustprune.ops import magnitude_mask_, magnitude_thresholds, pack_mask, unpack_mask
from tests.conftest import DTYPES
from tests.reference import reference_global_masks


def prune_all(tensors, sparsities, packed=False):
    """Run thresholds + fused mask-and-apply; return per sparsity (pruned copies, masks)."""
    thresholds, quota = magnitude_thresholds(tensors, sparsities)
    results = []
    for s in range(len(sparsities)):
        copies = [t.clone() for t in tensors]
        masks = [magnitude_mask_(c, float(thresholds[s]), int(quota[s, i]), packed) for i, c in enumerate(copies)]
        results.append((copies, masks))
    return results


def tensor_set(dtype, seed=0, with_ties=False):
    g = torch.Generator().manual_seed(seed)
    shapes = [(37, 53), (1,), (8, 8, 3), (129,)]
    if with_ties:  # few distinct magnitudes: many weights share the cut value
        return [torch.randint(-4, 5, s, generator=g).to(dtype) for s in shapes]
    return [torch.randn(s, generator=g).to(dtype) for s in shapes]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_ties", [False, True])
@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.73, 0.999])
def test_global_masks_match_sort_reference(dtype, with_ties, sparsity):
    tensors = tensor_set(dtype, with_ties=with_ties)
    [(pruned, masks)] = prune_all(tensors, [sparsity])
    expected = reference_global_masks(tensors, sparsity)
    n = sum(t.numel() for t in tensors)
    assert sum(int((~m).sum()) for m in masks) == round(sparsity * n)
    for original, copy, mask, ref in zip(tensors, pruned, masks, expected):
        assert torch.equal(mask, ref)
        assert torch.equal(copy, torch.where(ref, original, torch.zeros_like(original)))


def test_matches_torch_global_unstructured_without_ties():
    g = torch.Generator().manual_seed(1)
    layers = [torch.nn.Linear(i, o, bias=False) for i, o in [(64, 32), (32, 96), (96, 17)]]
    for layer in layers:
        layer.weight.data = torch.randn(layer.weight.shape, generator=g)
    weights = [layer.weight.detach().clone() for layer in layers]
    torch_prune.global_unstructured([(layer, "weight") for layer in layers],
                                    pruning_method=torch_prune.L1Unstructured, amount=0.6)
    [(pruned, masks)] = prune_all(weights, [0.6])
    for layer, mask, copy in zip(layers, masks, pruned):
        assert torch.equal(mask, layer.weight_mask.bool())
        assert torch.equal(copy, layer.weight.detach())


def test_multiple_sparsities_in_one_call_are_nested_and_equal_single_calls():
    tensors = tensor_set(torch.float32, seed=3, with_ties=True)
    sparsities = [0.2, 0.5, 0.5, 0.9]
    together = prune_all(tensors, sparsities)
    for s, (_, masks) in zip(sparsities, together):
        [(_, alone)] = prune_all(tensors, [s])
        assert all(torch.equal(a, b) for a, b in zip(masks, alone))
    for (_, lower), (_, higher) in itertools.pairwise(together):
        assert all(bool((h <= l).all()) for l, h in zip(lower, higher))  # pruned sets only grow


def test_tie_rule_prunes_earliest_tensor_and_index_first():
    tensors = [torch.ones(2, 3), torch.ones(4)]
    thresholds, quota = magnitude_thresholds(tensors, [0.5])  # 5 of 10 equal weights
    assert float(thresholds[0]) == 1.0
    assert quota.tolist() == [[5, 0]]
    [(_, masks)] = prune_all(tensors, [0.5])
    assert masks[0].tolist() == [[False, False, False], [False, False, True]]
    assert masks[1].tolist() == [True] * 4


def test_single_element_and_all_pruned_by_rounding():
    [(pruned, masks)] = prune_all([torch.tensor([3.0])], [0.6])  # round(0.6) = 1 of 1
    assert masks[0].tolist() == [False] and pruned[0].tolist() == [0.0]
    [(_, masks)] = prune_all([torch.tensor([3.0])], [0.4])
    assert masks[0].tolist() == [True]


def test_negative_zero_and_signs_are_ranked_by_magnitude():
    t = torch.tensor([-0.0, 0.0, -5.0, 4.0, -1.0, 2.0])
    [(_, masks)] = prune_all([t], [0.5])
    assert masks[0].tolist() == [False, False, True, True, False, True]


@pytest.mark.parametrize("numel", [1, 7, 8, 9, 1000, (1 << 19) + 13])
def test_packed_mask_equals_packed_bool_mask(numel):
    t = torch.randn(numel, generator=torch.Generator().manual_seed(numel))
    [(pruned_bool, [mask])] = prune_all([t], [0.4])
    [(pruned_packed, [packed])] = prune_all([t], [0.4], packed=True)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(numel / 8)
    assert torch.equal(packed, pack_mask(mask))
    assert torch.equal(unpack_mask(packed, t.shape), mask)
    assert torch.equal(pruned_bool[0], pruned_packed[0])


def test_chunk_boundaries_do_not_change_results():
    g = torch.Generator().manual_seed(5)
    big = torch.randint(-50, 51, ((1 << 20) + 5,), generator=g).float()  # spans several CPU chunks, many ties
    [(_, masks)] = prune_all([big], [0.37])
    assert torch.equal(masks[0], reference_global_masks([big], 0.37)[0])


@settings(max_examples=40, deadline=None)
@given(
    shapes=st.lists(st.lists(st.integers(1, 9), min_size=1, max_size=3), min_size=1, max_size=4),
    sparsity=st.floats(0.0, 0.999),
    levels=st.integers(1, 6),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**16),
)
def test_property_matches_reference(shapes, sparsity, levels, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    tensors = [(torch.randint(-levels, levels + 1, s, generator=g) * 0.37).to(dtype) for s in shapes]
    [(_, masks)] = prune_all(tensors, [sparsity])
    for mask, ref in zip(masks, reference_global_masks(tensors, sparsity)):
        assert torch.equal(mask, ref)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan")])
def test_rejects_sparsity_outside_unit_interval(bad):
    with pytest.raises(ValueError, match=r"sparsities\[0\] must lie in \[0, 1\)"):
        magnitude_thresholds([torch.randn(4)], [bad])


def test_rejects_empty_inputs_and_bad_dtypes():
    with pytest.raises(ValueError, match="tensors is an empty list"):
        magnitude_thresholds([], [0.5])
    with pytest.raises(ValueError, match="sparsities must hold at least one"):
        magnitude_thresholds([torch.randn(4)], [])
    with pytest.raises(ValueError, match=r"tensors\[1\] is empty"):
        magnitude_thresholds([torch.randn(4), torch.randn(0)], [0.5])
    with pytest.raises(TypeError, match=r"tensors\[0\] has dtype torch.int64"):
        magnitude_thresholds([torch.arange(4)], [0.5])
    with pytest.raises(TypeError, match="weight has dtype torch.float64"):
        magnitude_mask_(torch.randn(4, dtype=torch.float64), 0.5, 0, False)


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("dtype", DTYPES)
def test_rejects_nonfinite_weights_naming_the_tensor(bad_value, dtype):
    bad = torch.randn(10).to(dtype)
    bad[3] = bad_value
    with pytest.raises(ValueError, match=r"tensors\[1\] contains NaN/Inf"):
        magnitude_thresholds([torch.randn(5).to(dtype), bad], [0.5])


def test_opcheck():
    tensors = tensor_set(torch.float32, with_ties=True)
    torch.library.opcheck(torch.ops.robustprune.magnitude_thresholds.default, (tensors, [0.3, 0.8]))
    thresholds, quota = magnitude_thresholds(tensors, [0.3])
    for packed in (False, True):
        torch.library.opcheck(torch.ops.robustprune.magnitude_mask_.default,
                              (tensors[0].clone(), float(thresholds[0]), int(quota[0, 0]), packed))


@pytest.mark.parametrize("setting", [("MAX_BRACKET", 0), ("BRACKET_SIGMAS", 0.0)])
def test_radix_fallback_when_the_sample_bracket_fails(monkeypatch, setting):
    # MAX_BRACKET=0 aborts every bracket; near-zero-width brackets often miss the rank. Either way
    # the CPU falls back to radix select, which must give the same exact masks.
    from robustprune.sparse_ops import bracket_select

    calls = []
    original = bracket_select.bracket_select
    monkeypatch.setattr(bracket_select, setting[0], setting[1])
    monkeypatch.setattr("robustprune.sparse_ops.magnitude.bracket_select",
                        lambda *args: calls.append(result := original(*args)) or result)
    tensors = tensor_set(torch.float32, seed=9, with_ties=True) + [torch.randn(300, 301)]
    for sparsity in (0.05, 0.5, 0.95):
        [(_, masks)] = prune_all(tensors, [sparsity])
        for mask, ref in zip(masks, reference_global_masks(tensors, sparsity)):
            assert torch.equal(mask, ref)
    assert calls
    if setting[0] == "MAX_BRACKET":
        assert all(result is None for result in calls)


def test_bracket_path_is_taken_on_large_inputs():
    from robustprune.sparse_ops import bracket_select
    from robustprune.sparse_ops.radix_select import nonfinite_error

    g = torch.Generator().manual_seed(4)
    tensors = [torch.randn(512, 700, generator=g), torch.randn(900, 300, generator=g).half()]
    total = sum(t.numel() for t in tensors)
    ranks = [0, total // 3, total - 1]
    selections = bracket_select.bracket_select(tensors, ranks, nonfinite_error)
    assert selections is not None
    magnitudes = torch.cat([t.float().abs().flatten() for t in tensors]).sort().values
    for rank, selection in zip(ranks, selections):
        value = magnitudes[rank]
        assert selection.value_bits == int(value.view(torch.int32))
        assert selection.num_below == int((magnitudes < value).sum())
        assert selection.num_equal == int((magnitudes == value).sum())


@pytest.mark.parametrize("offset, numel", [(0, 64), (3, 61), (8, 13), (5, 1)])
def test_pack_mask_equals_numpy_packbits_on_views(offset, numel):
    """The bit layout is numpy's little-endian packbits, also for masks that start inside a byte word."""
    import numpy as np

    mask = torch.rand(offset + numel, generator=torch.Generator().manual_seed(numel)) > 0.5
    view = mask[offset:]
    expected = np.packbits(view.numpy(), bitorder="little")
    assert pack_mask(view).tolist() == expected.tolist()
    assert torch.equal(unpack_mask(pack_mask(view), view.shape), view)


def test_bracket_counts_ties_per_tensor():
    """The tie value's count in each tensor comes from the collected band (no second pass over the weights)."""
    from robustprune.sparse_ops import bracket_select
    from robustprune.sparse_ops.radix_select import nonfinite_error

    g = torch.Generator().manual_seed(5)
    tensors = [torch.randint(-6, 7, shape, generator=g).float() for shape in [(300, 200), (7,), (500, 90)]]
    total = sum(t.numel() for t in tensors)
    ranks = [total // 5, total // 2]
    selections = bracket_select.bracket_select(tensors, ranks, nonfinite_error)
    assert selections is not None
    for selection in selections:
        value = torch.tensor(selection.value_bits, dtype=torch.int32).view(torch.float32)
        expected = tuple(int((t.abs() == value).sum()) for t in tensors)
        assert selection.equal_per_tensor == expected and sum(expected) == selection.num_equal
