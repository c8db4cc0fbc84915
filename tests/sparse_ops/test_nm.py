import itertools

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robustprune.ops import NMPattern, nm_mask, parse_pattern
from robustprune.sparse_ops.nm import selection_network, sorting_network
from tests.conftest import DTYPES
from tests.reference import reference_nm_mask

ALL_PATTERNS = [(n, m) for m in (4, 8, 16) for n in range(1, m)]


@pytest.fixture(autouse=True, params=["dispatched", "eager"])
def cpu_path(request, monkeypatch):
    """Every test runs on the op as dispatched (the compiled kernel where llvmlite is importable) and on the
    eager torch path forced with ROBUSTPRUNE_NM_MASK_CPU=eager."""
    if request.param == "eager":
        monkeypatch.setenv("ROBUSTPRUNE_NM_MASK_CPU", "eager")
    return request.param


@pytest.mark.parametrize("m", [4, 8, 16])
def test_sorting_network_sorts_every_zero_one_input(m):
    # 0-1 principle: a comparator network sorts all inputs iff it sorts all 0/1 inputs.
    inputs = torch.tensor(list(itertools.product([0, 1], repeat=m)), dtype=torch.int32)
    lanes = list(inputs.unbind(1))
    for lo, hi in sorting_network(m):
        lanes[lo], lanes[hi] = torch.minimum(lanes[lo], lanes[hi]), torch.maximum(lanes[lo], lanes[hi])
    assert torch.equal(torch.stack(lanes, 1), inputs.sort(dim=1).values)
    for output in range(m):
        assert len(selection_network(m, (output,))) <= len(sorting_network(m))


@pytest.mark.parametrize("n,m", ALL_PATTERNS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_pattern_matches_reference(n, m, dtype):
    g = torch.Generator().manual_seed(n * 100 + m)
    scores = torch.randn(13, 3 * m, generator=g).to(dtype)
    mask = nm_mask(scores, n, m)
    assert mask.dtype == torch.bool and mask.shape == scores.shape
    assert torch.equal(mask, reference_nm_mask(scores, n, m))
    assert bool((mask.view(-1, m).sum(1) == n).all())


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (5, 16)])
def test_ties_keep_lower_index(n, m):
    g = torch.Generator().manual_seed(7)
    scores = torch.randint(-2, 3, (64, 2 * m), generator=g).float()  # heavy ties, signs mixed
    assert torch.equal(nm_mask(scores, n, m), reference_nm_mask(scores, n, m))
    assert nm_mask(torch.ones(1, m), n, m).view(-1).tolist() == [True] * n + [False] * (m - n)


def test_matches_topk_scatter_on_distinct_values():
    w = torch.randn(256, 512, generator=torch.Generator().manual_seed(0))
    for n, m in [(2, 4), (4, 8)]:
        expected = torch.zeros_like(w, dtype=torch.bool).view(-1, m)
        expected.scatter_(1, w.abs().view(-1, m).topk(n, dim=1).indices, True)
        assert torch.equal(nm_mask(w, n, m), expected.view(w.shape))


def test_higher_rank_and_chunk_spanning_inputs():
    w = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(nm_mask(w, 2, 4), reference_nm_mask(w, 2, 4))
    big = torch.randint(-3, 4, (1100, 1024), generator=torch.Generator().manual_seed(2)).half()
    assert torch.equal(nm_mask(big, 2, 4), reference_nm_mask(big, 2, 4))


def test_non_contiguous_scores():
    w = torch.randn(16, 32, generator=torch.Generator().manual_seed(3)).t()
    assert torch.equal(nm_mask(w, 2, 4), reference_nm_mask(w.contiguous(), 2, 4))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pattern=st.sampled_from(ALL_PATTERNS), rows=st.integers(1, 7), groups=st.integers(1, 4),
       levels=st.integers(1, 5), seed=st.integers(0, 2**16), dtype=st.sampled_from(DTYPES))
def test_property_matches_reference(pattern, rows, groups, levels, seed, dtype):
    n, m = pattern
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(-levels, levels + 1, (rows, groups * m), generator=g).to(dtype)
    assert torch.equal(nm_mask(scores, n, m), reference_nm_mask(scores, n, m))


def test_clear_errors():
    with pytest.raises(ValueError, match="last .input. dimension must be divisible by M=4"):
        nm_mask(torch.randn(4, 6), 2, 4)
    with pytest.raises(ValueError, match="0 < N < M"):
        nm_mask(torch.randn(4, 8), 4, 4)
    with pytest.raises(ValueError, match="group size m must be one of"):
        nm_mask(torch.randn(4, 10), 2, 5)
    with pytest.raises(TypeError, match="scores has dtype torch.int32"):
        nm_mask(torch.ones(4, 8, dtype=torch.int32), 2, 4)
    with pytest.raises(ValueError, match="scores is empty"):
        nm_mask(torch.randn(0, 8), 2, 4)


def test_pattern_parsing_counts_kept_weights():
    assert parse_pattern("unstructured") is None
    assert parse_pattern(" 2:4 ") == NMPattern(2, 4)
    assert NMPattern(1, 4).sparsity == 0.75
    for bad in ["2-4", "4:4", "2:5", "a:b", "2:4:8"]:
        with pytest.raises(ValueError, match="N:M|pattern"):
            parse_pattern(bad)


def test_opcheck():
    scores = torch.randn(6, 16, generator=torch.Generator().manual_seed(4))
    for n, m in [(2, 4), (4, 8), (3, 16)]:
        torch.library.opcheck(torch.ops.robustprune.nm_mask.default, (scores, n, m))
