"""SparseGPT's in-block Triton kernel on CPU tensors under TRITON_INTERPRET=1, against the CPU op.

The op's CUDA implementation is called directly: it computes unstructured block masks in torch, launches
the kernel once per block of columns (N:M masks chosen inside it) and does the cross-block matmul.
Shapes stay small: every program runs its column loop in Python under the interpreter.
"""

import pytest
import torch

from robustprune.kernels.obs import sparsegpt_block_
from robustprune.sparse_ops.backend import triton_interpreter_active
from robustprune.sparse_ops.obs import _sparsegpt_prune_triton, sparsegpt_hinv, sparsegpt_prune_

pytestmark = pytest.mark.skipif(not triton_interpreter_active(), reason="needs TRITON_INTERPRET=1")


def problem(rows, columns, seed=0):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows, columns, generator=g)
    x = torch.randn(2 * columns, columns, generator=g) * torch.rand(columns, generator=g) * 2
    hinv, _ = sparsegpt_hinv(2 * x.t() @ x / x.shape[0])
    return weight, hinv


CASES = [  # (rows, columns, blocksize, sparsity, n, m)
    (24, 64, 32, 0.5, 0, 0),
    (24, 64, 32, 0.5, 2, 4),
    (24, 64, 32, 0.5, 4, 8),
    (19, 56, 24, 0.3, 0, 0),  # odd rows (a partial row tile), last block 8 wide padded in the tile
    (19, 56, 24, 0.5, 2, 4),
]


@pytest.mark.parametrize("rows,columns,blocksize,sparsity,n,m", CASES)
def test_kernel_matches_cpu(rows, columns, blocksize, sparsity, n, m):
    weight, hinv = problem(rows, columns, seed=rows + m)
    via_triton, via_cpu = weight.clone(), weight.clone()
    keep_triton = _sparsegpt_prune_triton(via_triton, hinv, sparsity, n, m, blocksize)
    pattern = f"{n}:{m}" if m else "unstructured"
    keep_cpu = sparsegpt_prune_(via_cpu, hinv, None if m else sparsity, pattern=pattern, blocksize=blocksize)
    assert keep_triton.dtype == torch.bool and keep_triton.shape == weight.shape
    assert torch.equal(keep_triton, keep_cpu)
    torch.testing.assert_close(via_triton, via_cpu, rtol=1e-5, atol=1e-6)


def test_kernel_half_precision_weight():
    weight, hinv = problem(16, 32, seed=7)
    weight = weight.to(torch.bfloat16)
    via_triton, via_cpu = weight.clone(), weight.clone()
    keep_triton = _sparsegpt_prune_triton(via_triton, hinv, 0.5, 2, 4, 16)
    keep_cpu = sparsegpt_prune_(via_cpu, hinv, pattern="2:4", blocksize=16)
    assert torch.equal(keep_triton, keep_cpu)
    assert torch.equal(via_triton, via_cpu)  # fp32 results agree to far below one bf16 ulp


def test_block_launcher_outputs():
    """One launch: updated block, Err block and N:M mask, with several programs (8 rows each)."""
    weight, hinv = problem(20, 16, seed=3)
    w = weight.clone()
    err = torch.empty(20, 16)
    keep = torch.empty(20, 16, dtype=torch.uint8)
    sparsegpt_block_(w, hinv, err, keep, 2, 4, rows_per_program=8)
    expected_w = weight.clone()
    expected_keep = sparsegpt_prune_(expected_w, hinv, pattern="2:4", blocksize=16)
    assert torch.equal(keep.bool(), expected_keep)
    torch.testing.assert_close(w, expected_w, rtol=1e-5, atol=1e-6)
    # err = (w - q) / hinv_ii: zero where kept, and W_block - Q_block = Err @ triu(hinv) reproduces the block
    assert bool((err[keep.bool()] == 0).all())
    torch.testing.assert_close(weight - w, err @ hinv.triu(), rtol=1e-4, atol=1e-5)
