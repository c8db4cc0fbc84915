"""The compiled (native, LLVM IR) small-batch CPU forward of nm_linear against dense F.linear and the BLAS route."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustprune.ops import nm_compress, nm_linear, nm_mask
from robustprune.sparse_ops import nm_linear as nm_linear_module
from robustprune.sparse_ops import nm_linear_cpu

ALL_PATTERNS = [(n, m) for m in (4, 8, 16) for n in range(1, m)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# fp16 / bf16 widening is the same code for every pattern: checked on these (each index width, both kinds
# of chunk) rather than compiled for all 45.
WIDENING_PATTERNS = [(2, 4), (3, 4), (4, 8), (2, 8), (8, 16), (1, 16)]
# The kinds this CPU can execute: the host's own and every less demanding one.
RUNNABLE_KINDS = nm_linear_cpu.KINDS[nm_linear_cpu.KINDS.index(nm_linear_cpu.host_kind()):]


def problem(out, in_features, n, m, dtype, batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, in_features, generator=g).to(dtype)
    w = w * nm_mask(w, n, m)
    x = torch.randn(batch, in_features, generator=g).to(dtype)
    return w, x


def assert_within_fp32_rounding(actual, x, w):
    """|actual - x W^T| within fp32 accumulation error: a few ulps of sum |x_i w_i| per output."""
    expected = F.linear(x.double(), w.double())
    bound = 1e-6 * F.linear(x.double().abs(), w.double().abs()) * 8 + 1e-30
    error = (actual.double() - expected).abs()
    assert bool((error <= bound).all()), float((error / bound).max())


def test_host_kind_is_known_and_used_by_the_op():
    assert nm_linear_cpu.host_kind() in nm_linear_cpu.KINDS
    values = torch.zeros(4, 32)
    assert nm_linear_module.compiled_forward_applies(1, values, 2, 4)
    assert not nm_linear_module.compiled_forward_applies(1000, values, 2, 4)  # large batches: BLAS


@pytest.mark.parametrize("kind", RUNNABLE_KINDS)
@pytest.mark.parametrize("n,m", ALL_PATTERNS)
def test_every_kind_and_pattern_matches_dense(kind, n, m):
    lanes = nm_linear_cpu.LANES[kind]
    in_features = 3 * lanes * m  # three chunks per row at least, 2 * lanes * m for wide groups
    kept = in_features // m * n
    if not nm_linear_cpu.supports(kind, n, m, kept):
        assert kind != "gather" and lanes % n != 0  # only the permutation kinds skip patterns
        return
    for dtype in DTYPES if (n, m) in WIDENING_PATTERNS else [torch.float32]:
        for batch in (1, 3):
            w, x = problem(21, in_features, n, m, dtype, batch, seed=100 * m + n)
            values, metadata = nm_compress(w, n, m)
            y = nm_linear_cpu.nm_linear_forward(x, values, metadata, n, m, kind)
            assert y.dtype == torch.float32 and y.shape == (batch, 21)
            assert_within_fp32_rounding(y, x.float(), w.float())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_the_op_on_odd_chunk_counts_and_many_rows(dtype):
    """Chunk counts not a multiple of the eight accumulators; row counts not a multiple of the rows advanced
    together; the thread split; several column blocks (batch 1)."""
    cases = [(2, 4, 32 * 13, 40), (4, 8, 32 * 9, 9), (2, 4, 4096, 1100), (2, 8, 8256, 5), (2, 4, 9216, 7)]
    for (n, m, in_features, out), batch in itertools.product(cases, (1, 2)):
        w, x = problem(out, in_features, n, m, dtype, batch, seed=in_features)
        values, metadata = nm_compress(w, n, m)
        bias = torch.randn(out, generator=torch.Generator().manual_seed(1)).to(dtype)
        y = nm_linear(x, values, metadata, bias, n, m)
        assert y.dtype == dtype
        expected = (F.linear(x.double(), w.double()) + bias.double()).to(dtype)
        # fp32 accumulation, one rounding to dtype: within one unit in the last place of dtype
        assert torch.allclose(y.double(), expected.double(), rtol=torch.finfo(dtype).eps * 2, atol=1e-4)


def test_batch_shapes_bias_and_non_contiguous_input():
    w, x = problem(48, 256, 2, 4, torch.float32, 6)
    values, metadata = nm_compress(w, 2, 4)
    bias = torch.randn(48)
    x3 = x.view(2, 3, 256)
    expected = F.linear(x3, w, bias)
    assert torch.allclose(nm_linear(x3, values, metadata, bias, 2, 4), expected, atol=1e-5)
    strided = torch.randn(256, 6).t()  # not contiguous
    assert torch.allclose(nm_linear(strided, values, metadata, None, 2, 4), F.linear(strided, w), atol=1e-5)


def test_gradients_still_flow():
    w, x = problem(16, 64, 2, 4, torch.float32, 2)
    values, metadata = nm_compress(w, 2, 4)
    values.requires_grad_()
    x.requires_grad_()
    nm_linear(x, values, metadata, None, 2, 4).square().sum().backward()
    w_dense = w.clone().requires_grad_()
    x_dense = x.detach().clone().requires_grad_()
    F.linear(x_dense, w_dense).square().sum().backward()
    assert torch.allclose(x.grad, x_dense.grad, atol=1e-4)
    kept = nm_compress(w_dense.grad * nm_mask(w, 2, 4), 2, 4)[0]
    assert torch.allclose(values.grad, kept, atol=1e-4)


def test_nan_at_a_kept_column_propagates():
    """Kept values multiply their inputs; pruned weights are never multiplied (as in sparse kernels)."""
    w, x = problem(8, 64, 2, 4, torch.float32, 1)
    values, metadata = nm_compress(w, 2, 4)
    kept_column = int(nm_mask(w, 2, 4)[3].nonzero()[0])
    x[0, kept_column] = float("nan")
    y = nm_linear(x, values, metadata, None, 2, 4)
    assert bool(torch.isnan(y[0, 3]))


def test_forced_eager_takes_the_blas_route(monkeypatch):
    monkeypatch.setenv("ROBUSTPRUNE_NM_LINEAR_CPU", "eager")

    def refuse(*args, **kwargs):
        raise AssertionError("the compiled kernel ran although ROBUSTPRUNE_NM_LINEAR_CPU=eager")

    monkeypatch.setattr(nm_linear_cpu, "nm_linear_forward", refuse)
    w, x = problem(8, 64, 2, 4, torch.float32, 1)
    values, metadata = nm_compress(w, 2, 4)
    assert not nm_linear_module.compiled_forward_applies(1, values, 2, 4)
    assert torch.allclose(nm_linear(x, values, metadata, None, 2, 4), F.linear(x, w), atol=1e-5)


def test_a_route_switched_off_takes_the_blas_route(monkeypatch):
    monkeypatch.setattr(nm_linear_module.CPU_ROUTE, "failure", "KernelBuildError: (test)")
    monkeypatch.setattr(nm_linear_cpu, "nm_linear_forward", None)  # would fail if called
    w, x = problem(8, 64, 2, 4, torch.float32, 1)
    values, metadata = nm_compress(w, 2, 4)
    assert not nm_linear_module.compiled_forward_applies(1, values, 2, 4)
    assert torch.allclose(nm_linear(x, values, metadata, None, 2, 4), F.linear(x, w), atol=1e-5)


def test_unknown_switch_value_is_refused(monkeypatch):
    monkeypatch.setenv("ROBUSTPRUNE_NM_LINEAR_CPU", "fast")
    values, metadata = nm_compress(torch.ones(2, 8) * torch.tensor([1.0, 1, 0, 0] * 2), 2, 4)
    with pytest.raises(ValueError, match="ROBUSTPRUNE_NM_LINEAR_CPU must be 'eager' or 'compiled'"):
        nm_linear(torch.ones(1, 8), values, metadata, None, 2, 4)


def test_threads_and_forked_children():
    """A layer large enough for the thread split; concurrent calls and a forked child still work."""
    import multiprocessing
    from concurrent.futures import ThreadPoolExecutor

    w, x = problem(1024, 4096, 2, 4, torch.float32, 1, seed=3)
    assert w.numel() >= 2 * nm_linear_cpu.PARALLEL_MIN_ELEMENTS  # split over threads
    values, metadata = nm_compress(w, 2, 4)
    expected = nm_linear_cpu.nm_linear_forward(x, values, metadata, 2, 4)
    assert_within_fp32_rounding(expected, x, w)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: nm_linear_cpu.nm_linear_forward(x, values, metadata, 2, 4), range(8)))
    assert all(torch.equal(result, expected) for result in results)  # same split, same sums: bit for bit

    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_product_matches, args=(x, values, metadata, expected, queue))
    child.start()
    child.join(120)
    assert child.exitcode == 0
    assert queue.get(timeout=10)


def _child_product_matches(x, values, metadata, expected, queue):
    # Only the compiled kernel and numpy here (torch's GNU OpenMP ops can hang in a forked child).
    y = nm_linear_cpu.nm_linear_forward(x, values, metadata, 2, 4)
    queue.put(bool(np.array_equal(y.numpy(), expected.numpy())))
