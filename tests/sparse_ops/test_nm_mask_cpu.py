"""The compiled (native, LLVM IR) CPU N:M mask against the eager torch path, bit for bit, and the forced fallback."""

import math

import numpy as np
import pytest
import torch

from robustprune.ops import nm_mask
from robustprune.sparse_ops import nm as nm_module
from robustprune.sparse_ops import nm_mask_cpu
from robustprune.sparse_ops.nm import compiled_cpu_available, nm_mask_eager
from tests.reference import reference_nm_mask

ALL_PATTERNS = [(n, m) for m in (4, 8, 16) for n in range(1, m)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Ragged row counts and sizes that are not a multiple of one 64-byte vector (the scalar tail runs too).
SHAPES = [(1, 16), (3, 48), (37, 80), (5, 7, 32), (2, 3, 4, 16), (129, 144)]


def compiled(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    return nm_mask_cpu.nm_mask_into(scores.contiguous(), torch.empty(scores.shape, dtype=torch.bool), n, m)


def special_scores(shape, dtype, seed: int) -> torch.Tensor:
    """Integer-valued scores (heavy ties) salted with +-0, +-inf and NaNs of several payloads and signs."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(-3, 4, shape, generator=g).to(dtype)
    specials = torch.tensor([0.0, -0.0, math.inf, -math.inf, math.nan, -math.nan], dtype=dtype)
    pick = torch.randint(0, 3 * len(specials), shape, generator=g)
    salted = torch.where(pick < len(specials), specials[pick.clamp(max=len(specials) - 1)], scores)
    bits = salted.view(torch.int32 if dtype == torch.float32 else torch.int16)
    nan_payload = torch.randint(1, 64, shape, generator=g).to(bits.dtype)
    other_nan = torch.isnan(salted) & (torch.randint(0, 2, shape, generator=g) == 1)
    return torch.where(other_nan, bits | nan_payload, bits).view(dtype)


def test_compiled_path_is_the_default():
    assert compiled_cpu_available()


@pytest.mark.parametrize("n,m", ALL_PATTERNS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_compiled_equals_eager_bit_for_bit(n, m, dtype):
    for i, shape in enumerate(SHAPES):
        g = torch.Generator().manual_seed(1000 * m + 10 * n + i)
        randn = torch.randn(shape, generator=g).to(dtype)
        special = special_scores(shape, dtype, seed=1000 * m + 10 * n + i)
        for scores in (randn, special):
            ours = nm_mask(scores, n, m)
            assert torch.equal(ours, compiled(scores, n, m))
            assert torch.equal(ours, nm_mask_eager(scores, n, m)), (shape, scores)
            assert bool((ours.view(-1, m).sum(1) == n).all())
        assert torch.equal(nm_mask(randn, n, m), reference_nm_mask(randn, n, m))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_compiled_large_and_non_contiguous(dtype):
    g = torch.Generator().manual_seed(7)
    big = torch.randn(301, 1024, generator=g).to(dtype)
    big[::3] = big[::3].round()  # ties in a third of the rows
    for n, m in [(2, 4), (4, 8), (2, 8), (8, 16)]:
        assert torch.equal(nm_mask(big, n, m), nm_mask_eager(big, n, m))
        transposed = big[:256].t()  # (1024, 256), not contiguous
        assert torch.equal(nm_mask(transposed, n, m), nm_mask_eager(transposed.contiguous(), n, m))


def test_all_equal_groups_keep_the_first_n():
    for dtype in DTYPES:
        for n, m in ALL_PATTERNS:
            for value in (0.0, -0.0, 1.0, math.inf, math.nan):
                scores = torch.full((3, 4 * m), value, dtype=dtype)
                expected = torch.tensor([True] * n + [False] * (m - n)).repeat(3, 4)
                assert torch.equal(compiled(scores, n, m), expected)


def test_forced_fallback_runs_the_eager_path(monkeypatch):
    monkeypatch.setenv("ROBUSTPRUNE_NM_MASK_CPU", "eager")
    assert not compiled_cpu_available()

    def refuse(*args):
        raise AssertionError("the compiled kernel ran although ROBUSTPRUNE_NM_MASK_CPU=eager")

    monkeypatch.setattr(nm_mask_cpu, "nm_mask_into", refuse)
    for dtype in DTYPES:
        scores = special_scores((9, 32), dtype, seed=3)
        for n, m in [(2, 4), (4, 8), (2, 8), (5, 16)]:
            assert torch.equal(nm_mask(scores, n, m), nm_mask_eager(scores, n, m))


def test_a_route_switched_off_runs_the_eager_path(monkeypatch):
    monkeypatch.setattr(nm_module.CPU_ROUTE, "failure", "KernelBuildError: (test)")
    monkeypatch.setattr(nm_mask_cpu, "nm_mask_into", None)  # would fail if called
    assert not compiled_cpu_available()
    scores = torch.randn(8, 32, generator=torch.Generator().manual_seed(5))
    for n, m in [(2, 4), (3, 8), (7, 16)]:
        assert torch.equal(nm_mask(scores, n, m), reference_nm_mask(scores, n, m))


def test_threads_and_forked_children():
    """Large inputs split over threads; concurrent calls and a forked child after a call still work."""
    import multiprocessing
    from concurrent.futures import ThreadPoolExecutor

    scores = torch.randn(300, 4096, generator=torch.Generator().manual_seed(11))  # > PARALLEL_MIN_ELEMENTS
    expected = nm_mask_eager(scores, 2, 4)
    assert torch.equal(nm_mask(scores, 2, 4), expected)
    with ThreadPoolExecutor(4) as pool:
        assert all(torch.equal(mask, expected) for mask in pool.map(lambda _: nm_mask(scores, 2, 4), range(8)))

    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_mask_matches, args=(scores, expected, queue))
    child.start()
    child.join(120)
    assert child.exitcode == 0
    assert queue.get(timeout=10)


def _child_mask_matches(scores, expected, queue):
    # Only the compiled kernel and numpy here: torch's own GNU OpenMP ops can hang in a forked child of a
    # process that already ran them in parallel, whatever robustprune does.
    queue.put(bool(np.array_equal(nm_mask(scores, 2, 4).numpy(), expected.numpy())))


def test_unknown_switch_value_is_refused(monkeypatch):
    monkeypatch.setenv("ROBUSTPRUNE_NM_MASK_CPU", "fast")
    with pytest.raises(ValueError, match="ROBUSTPRUNE_NM_MASK_CPU must be 'eager' or 'compiled'"):
        nm_mask(torch.ones(2, 8), 2, 4)
    monkeypatch.setenv("ROBUSTPRUNE_NM_MASK_CPU", "compiled")
    assert nm_mask(torch.arange(8.0).view(2, 4), 2, 4).tolist() == [[False, False, True, True]] * 2
