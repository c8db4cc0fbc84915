"""SparseGPT's in-block Triton kernel against the CPU op, on every device present (tests/conftest.py): CPU
tensors under the interpreter, CUDA tensors where a GPU is; BERT-base layer shapes (bench/gpu.py) on CUDA only.

The op's CUDA implementation is called directly: it computes unstructured block masks in torch, launches
the kernel once per block of columns (N:M masks chosen inside it) and does the cross-block matmul.
Shapes stay small on both devices: every program runs its column loop in Python under the interpreter.
"""

import pytest
import torch

from bench.gpu import SHAPES
from robustprune.kernels.obs import sparsegpt_block_
from robustprune.sparse_ops.obs import _sparsegpt_prune_triton, sparsegpt_hinv, sparsegpt_prune_
from tests.reference import FP32, ulp


def problem(rows, columns, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows, columns, generator=g)
    x = torch.randn(2 * columns, columns, generator=g) * torch.rand(columns, generator=g) * 2 * scale
    hinv, _ = sparsegpt_hinv(2 * x.t() @ x / x.shape[0])
    return weight, hinv


def assert_matches_cpu(device, hinv, weight, keep, pruned, keep_cpu, pruned_cpu):
    """The interpreter computes in numpy's fp32 in the CPU path's order: equal masks, weights to a few ulp.
    CUDA sums in another order (FMA, cuBLAS): per row the update is a triangular solve with U = hinv's upper
    factor, off by at most about n u cond(U) of the row's scale; a score that lands that close to its block's
    cut can flip a mask bit, which changes the rest of that row (and nothing else in N:M): at most 1 % of the
    rows may differ, the others must agree within that bound."""
    keep, pruned = keep.cpu(), pruned.cpu()
    if device.type == "cpu":
        assert torch.equal(keep, keep_cpu)
        torch.testing.assert_close(pruned, pruned_cpu, rtol=1e-5, atol=1e-6)
        return
    same_rows = (keep == keep_cpu).all(dim=1)
    assert float(same_rows.float().mean()) >= 0.99
    tolerance = hinv.shape[0] * FP32 * float(torch.linalg.cond(hinv.triu().double()))
    scale = weight.abs().amax(dim=1, keepdim=True)[same_rows]
    assert bool(((pruned[same_rows] - pruned_cpu[same_rows]).abs() <= tolerance * scale).all())


CASES = [  # (rows, columns, blocksize, sparsity, n, m)
    (24, 64, 32, 0.5, 0, 0),
    (24, 64, 32, 0.5, 2, 4),
    (24, 64, 32, 0.5, 4, 8),
    (19, 56, 24, 0.3, 0, 0),  # odd rows (a partial row tile), last block 8 wide padded in the tile
    (19, 56, 24, 0.5, 2, 4),
]


def run_both(device, weight, hinv, sparsity, n, m, blocksize):
    via_triton, via_cpu = weight.to(device, copy=True), weight.clone()
    keep_triton = _sparsegpt_prune_triton(via_triton, hinv.to(device), sparsity, n, m, blocksize)
    pattern = f"{n}:{m}" if m else "unstructured"
    keep_cpu = sparsegpt_prune_(via_cpu, hinv, None if m else sparsity, pattern=pattern, blocksize=blocksize)
    assert keep_triton.dtype == torch.bool and keep_triton.shape == weight.shape
    return keep_triton, via_triton, keep_cpu, via_cpu


@pytest.mark.parametrize("rows,columns,blocksize,sparsity,n,m", CASES)
def test_kernel_matches_cpu(kernel_device, rows, columns, blocksize, sparsity, n, m):
    weight, hinv = problem(rows, columns, seed=rows + m)
    results = run_both(kernel_device, weight, hinv, sparsity, n, m, blocksize)
    assert_matches_cpu(kernel_device, hinv, weight, *results)


@pytest.mark.parametrize("shape", [pytest.param(s, id=f"{s[0]}x{s[1]}") for s in SHAPES["BERT-base"]])
@pytest.mark.parametrize("n,m", [(0, 0), (2, 4)])
def test_kernel_at_bert_base_shapes(cuda_device, shape, n, m):
    """bench.gpu's SparseGPT workload: 50 % (or 2:4) of a BERT-base layer, blocks of 128 columns."""
    weight, hinv = problem(*shape, seed=9, scale=50.0)
    results = run_both(cuda_device, weight, hinv, 0.5, n, m, 128)
    assert_matches_cpu(cuda_device, hinv, weight, *results)


def test_kernel_half_precision_weight(kernel_device):
    weight, hinv = problem(16, 32, seed=7)
    weight = weight.to(torch.bfloat16)
    via_triton, via_cpu = weight.to(kernel_device, copy=True), weight.clone()
    keep_triton = _sparsegpt_prune_triton(via_triton, hinv.to(kernel_device), 0.5, 2, 4, 16)
    keep_cpu = sparsegpt_prune_(via_cpu, hinv, pattern="2:4", blocksize=16)
    assert torch.equal(keep_triton.cpu(), keep_cpu)
    if kernel_device.type == "cpu":  # the same fp32 results, rounded to the same bf16
        assert torch.equal(via_triton.cpu(), via_cpu)
    else:  # fp32 results a few ulp apart: at most one bf16 rounding apart
        assert bool(((via_triton.cpu().double() - via_cpu.double()).abs() <= ulp(via_cpu)).all())


def test_block_launcher_outputs(kernel_device):
    """One launch: updated block, Err block and N:M mask, with several programs (8 rows each)."""
    weight, hinv = problem(20, 16, seed=3)
    w = weight.to(kernel_device, copy=True)
    err = torch.empty(20, 16, device=kernel_device)
    keep = torch.empty(20, 16, dtype=torch.uint8, device=kernel_device)
    sparsegpt_block_(w, hinv.to(kernel_device), err, keep, 2, 4, rows_per_program=8)
    w, err, keep = w.cpu(), err.cpu(), keep.cpu()
    expected_w = weight.clone()
    expected_keep = sparsegpt_prune_(expected_w, hinv, pattern="2:4", blocksize=16)
    assert torch.equal(keep.bool(), expected_keep)
    torch.testing.assert_close(w, expected_w, rtol=1e-5, atol=1e-6)
    # err = (w - q) / hinv_ii: zero where kept, and W_block - Q_block = Err @ triu(hinv) reproduces the block
    assert bool((err[keep.bool()] == 0).all())
    torch.testing.assert_close(weight - w, err @ hinv.triu(), rtol=1e-4, atol=1e-5)
