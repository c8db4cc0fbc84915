"""The compressed-N:M Triton kernels under TRITON_INTERPRET=1 against the CPU implementations."""

import pytest
import torch

from robustprune.sparse_ops.backend import triton_interpreter_active
from robustprune.sparse_ops.nm import nm_mask
from robustprune.sparse_ops.nm_format import (
    _nm_compress_triton,
    _nm_decompress_triton,
    nm_compress,
    nm_decompress,
)
from robustprune.sparse_ops.nm_linear import (
    _nm_linear_backward_op,
    _nm_linear_backward_triton,
    _nm_linear_triton,
    nm_linear,
)
from tests.conftest import DTYPES

pytestmark = pytest.mark.skipif(not triton_interpreter_active(), reason="needs TRITON_INTERPRET=1")

RTOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


def nm_weight(out, in_features, n, m, dtype, seed=0):
    w = torch.randn(out, in_features, generator=torch.Generator().manual_seed(seed)).to(dtype)
    return w * nm_mask(w, n, m)


def assert_close(actual, expected, dtype):
    scale = float(expected.float().abs().max().clamp_min(1.0))
    assert float((actual.float() - expected.float()).abs().max()) <= 4 * RTOL[dtype] * scale


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (3, 8), (1, 4), (5, 16)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_compress_and_decompress_kernels_match_cpu(n, m, dtype):
    # rows of just over 128 index bytes: two byte-programs per row in the packing kernel (the second
    # ragged), and 3 x groups_per_row groups: several 64-group programs, the last ragged
    bits = m.bit_length() - 1
    groups_per_row = -(-130 * 8 // (n * bits)) + 1
    in_features = groups_per_row * m
    w = nm_weight(3, in_features, n, m, dtype)
    values, metadata = nm_compress(w, n, m)
    assert metadata.shape[1] > 128 and (3 * groups_per_row) % 64
    triton_values, triton_metadata = _nm_compress_triton(w, n, m)
    assert torch.equal(triton_values, values)
    assert torch.equal(triton_metadata, metadata)
    assert torch.equal(_nm_decompress_triton(values, metadata, n, m, in_features),
                       nm_decompress(values, metadata, n, m, in_features))


def test_compress_kernel_rejects_non_nm_weight():
    with pytest.raises(ValueError, match="weight is not 2:4"):
        _nm_compress_triton(torch.ones(2, 8), 2, 4)


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (3, 16)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_nm_linear_kernels_match_cpu(n, m, dtype):
    g = torch.Generator().manual_seed(n * m)
    out, in_features = 37, 3 * max(32, 2 * m) + m  # ragged edges in every block dimension
    w = nm_weight(out, in_features, n, m, dtype)
    values, metadata = nm_compress(w, n, m)
    x = torch.randn(2, 9, in_features, generator=g).to(dtype)
    bias = torch.randn(out, generator=g).to(dtype)
    assert_close(_nm_linear_triton(x, values, metadata, bias, n, m), nm_linear(x, values, metadata, bias, n, m), dtype)
    assert_close(_nm_linear_triton(x, values, metadata, None, n, m), nm_linear(x, values, metadata, None, n, m), dtype)
    grad_y = torch.randn(2, 9, out, generator=g).to(dtype)
    triton_grads = _nm_linear_backward_triton(grad_y, x, values, metadata, n, m)
    cpu_grads = _nm_linear_backward_op(grad_y, x, values, metadata, n, m)
    for triton_grad, cpu_grad in zip(triton_grads, cpu_grads):
        assert triton_grad.shape == cpu_grad.shape
        assert_close(triton_grad, cpu_grad, dtype)
