"""The fused hard-concrete Triton kernels under TRITON_INTERPRET=1 against the CPU implementation."""

import pytest
import torch

from robustprune.sparse_ops.backend import triton_interpreter_active
from robustprune.sparse_ops.hard_concrete import (
    BETA,
    GAMMA,
    ZETA,
    _gate_backward_op,
    _gate_backward_triton,
    _gate_op,
    _gate_triton,
    sample_hard_concrete_noise,
)
from tests.conftest import DTYPES

pytestmark = pytest.mark.skipif(not triton_interpreter_active(), reason="needs TRITON_INTERPRET=1")

# fp32: the same formula, different log/sigmoid implementations (numpy vs torch): a few ulp.
TOL = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}


def problem(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (13, 171)  # 2223 elements: three 1024-element programs, the last one ragged
    weight = torch.randn(shape, generator=g).to(dtype)
    log_alpha = torch.randn(shape, generator=g) * 3
    return (
        weight,
        log_alpha,
        sample_hard_concrete_noise(weight, generator=g),
        torch.randn(shape, generator=g).to(dtype),
    )


def assert_close(actual, expected, dtype):
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    torch.testing.assert_close(actual.float(), expected.float(), rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("noise", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_and_backward_kernels_match_cpu(dtype, noise):
    weight, log_alpha, sample, grad = problem(dtype)
    u = sample if noise else None
    assert_close(
        _gate_triton(weight, log_alpha, u, GAMMA, ZETA, BETA),
        _gate_op(weight, log_alpha, u, GAMMA, ZETA, BETA),
        dtype,
    )
    for weight_grad in (True, False):
        triton_grads = _gate_backward_triton(grad, weight, log_alpha, u, GAMMA, ZETA, BETA, weight_grad)
        cpu_grads = _gate_backward_op(grad, weight, log_alpha, u, GAMMA, ZETA, BETA, weight_grad)
        assert_close(triton_grads[1], cpu_grads[1], dtype)
        if weight_grad:
            assert_close(triton_grads[0], cpu_grads[0], dtype)
        else:
            assert triton_grads[0].numel() == 0 == cpu_grads[0].numel()
    assert bool((cpu_grads[1] == 0).any())  # some gates sit on a clamped end: zero gradient in both


def test_kernel_other_constants():
    weight, log_alpha, u, grad = problem(torch.float32, seed=1)
    args = (-0.2, 1.3, 0.5)
    assert_close(
        _gate_triton(weight, log_alpha, u, *args), _gate_op(weight, log_alpha, u, *args), torch.float32
    )
    assert_close(
        _gate_backward_triton(grad, weight, log_alpha, u, *args, True)[1],
        _gate_backward_op(grad, weight, log_alpha, u, *args, True)[1],
        torch.float32,
    )
