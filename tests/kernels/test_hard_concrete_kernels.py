"""The fused hard-concrete Triton kernels against the CPU implementation, on every device present
(tests/conftest.py): CPU tensors under the interpreter, CUDA tensors where a GPU is; the real layer shapes
bench/gpu.py gates (BERT-base FFN, LLaMA-7B attention) on CUDA only.

Tolerances come from the arithmetic (:func:`error_bounds`): both paths compute in fp32 from the same formula,
with different exp / divide implementations (torch and numpy round to within an ulp; CUDA's ex2.approx and
div.full, in the kernels' PTX, to within 2 ulp), then round to the weight's format once.
"""

import pytest
import torch

from bench.gpu import SHAPES
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
from tests.reference import FP32, UNIT_ROUNDOFF, ulp


def problem(dtype, seed=0, shape=(13, 171)):  # 2223 elements: three 1024-element programs, the last ragged
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(shape, generator=g).to(dtype)
    log_alpha = torch.randn(shape, generator=g) * 3
    return (
        weight,
        log_alpha,
        sample_hard_concrete_noise(weight, generator=g),
        torch.randn(shape, generator=g).to(dtype),
    )


def error_bounds(device, weight, log_alpha, noise, grad, gamma=GAMMA, zeta=ZETA, beta=BETA):
    """How far the kernel's (out, grad_weight, grad_log_alpha) may be from the CPU path's, element by element.

    Each path computes s = sigmoid(t), t = (noise + log_alpha) / beta (or log_alpha), in fp32: t is off by
    at most 5 u (|noise| + |log_alpha|) / beta (an add, a 2-ulp divide), exp(-t) by (4 + 2|t|) u of itself
    (2 ulp, and t * log2(e) rounded), 1 + e by u, the reciprocal by 4 u: |ds| <= u (s(1-s)(5 A + 4 + 2|t|)
    + 5 s). The gate z = clamp(s (zeta - gamma) + gamma) adds two roundings, w z one, and the conversion to
    the weight's format c u_format (c = 2 where the interpreter truncates to bf16: see test_nm_kernels.py).
    grad_log_alpha = grad w s (1 - s) (zeta - gamma) / beta inside the clamp: near the clamp's ends (within
    the gate's error) either path may have cut it, so there the bound allows the whole value.
    """
    la = log_alpha.double()
    if noise is None:
        t, spread, temperature = la, torch.zeros_like(la), 1.0
    else:
        t = (noise.double() + la) / beta
        spread = (noise.double().abs() + la.abs()) / beta
        temperature = beta
    s = torch.sigmoid(t)
    width = zeta - gamma
    ds = 2 * FP32 * (s * (1 - s) * (5 * spread + 4 + 2 * t.abs()) + 5 * s)  # both paths
    stretched = s * width + gamma
    z = stretched.clamp(0.0, 1.0)
    dz = width * ds + 4 * FP32 * (s * width + abs(gamma))
    conversion = 2 if device.type == "cpu" and weight.dtype == torch.bfloat16 else 1
    rounding = (conversion + 1) * UNIT_ROUNDOFF[weight.dtype] + 4 * FP32  # the kernel's and the CPU's
    w, g = weight.double(), grad.double()
    out = w.abs() * dz + rounding * (w * z).abs()
    grad_weight = g.abs() * dz + rounding * (g * z).abs()
    slope = s * (1 - s) * width / temperature
    grad_log_alpha = (g * w).abs() * (width / temperature * ((1 - 2 * s).abs() * ds + 6 * FP32 * s * (1 - s))
                                      + 6 * FP32 * slope)
    near_an_end = (stretched.abs() <= dz) | ((stretched - 1).abs() <= dz)
    grad_log_alpha = torch.where(near_an_end, grad_log_alpha + (g * w * slope).abs(), grad_log_alpha)
    return out, grad_weight, grad_log_alpha


def within(actual, expected, bound):
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    return bool(((actual.cpu().double() - expected.double()).abs() <= bound).all())


def check_gate(device, weight, log_alpha, noise, grad, *, caught=True):
    """Forward and both backward variants on ``device`` against the CPU op, within :func:`error_bounds`;
    ``caught``: an output scaled by 1.03, or moved by 32 ulp, is not."""
    bounds = error_bounds(device, weight, log_alpha, noise, grad)
    on = [None if t is None else t.to(device) for t in (weight, log_alpha, noise, grad)]
    consts = (GAMMA, ZETA, BETA)
    expected = _gate_op(weight, log_alpha, noise, *consts)
    actual = _gate_triton(*on[:3], *consts)
    assert within(actual, expected, bounds[0])
    if caught:
        assert not within(actual.cpu() * 1.03, expected, bounds[0])
        assert not bool(((actual.cpu().double() + 32 * ulp(actual.cpu()) - expected.double()).abs()
                         <= bounds[0]).all())
    for weight_grad in (True, False):
        triton_grads = _gate_backward_triton(on[3], *on[:3], *consts, weight_grad)
        cpu_grads = _gate_backward_op(grad, weight, log_alpha, noise, *consts, weight_grad)
        assert within(triton_grads[1], cpu_grads[1], bounds[2])
        if weight_grad:
            assert within(triton_grads[0], cpu_grads[0], bounds[1])
        else:
            assert triton_grads[0].numel() == 0 == cpu_grads[0].numel()
        if caught:
            assert not within(triton_grads[1].cpu() * 1.03, cpu_grads[1], bounds[2])
    return cpu_grads


@pytest.mark.parametrize("noise", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_and_backward_kernels_match_cpu(kernel_device, dtype, noise):
    weight, log_alpha, sample, grad = problem(dtype)
    cpu_grads = check_gate(kernel_device, weight, log_alpha, sample if noise else None, grad)
    assert bool((cpu_grads[1] == 0).any())  # some gates sit on a clamped end: zero gradient in both


@pytest.mark.parametrize("shape", [pytest.param(shapes[0], id=f"{family}-{shapes[0][0]}x{shapes[0][1]}")
                                   for family, shapes in SHAPES.items()])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernels_at_real_shapes(cuda_device, shape, dtype):
    """bench.gpu's gate workload: the first layer shape of each family, fp32 and bf16, with training noise."""
    weight, log_alpha, sample, grad = problem(dtype, seed=2, shape=shape)
    check_gate(cuda_device, weight, log_alpha, sample, grad)


def test_kernel_other_constants(kernel_device):
    weight, log_alpha, u, grad = problem(torch.float32, seed=1)
    args = (-0.2, 1.3, 0.5)
    bounds = error_bounds(kernel_device, weight, log_alpha, u, grad, *args)
    on = [t.to(kernel_device) for t in (weight, log_alpha, u, grad)]
    assert within(_gate_triton(*on[:3], *args), _gate_op(weight, log_alpha, u, *args), bounds[0])
    assert within(_gate_backward_triton(on[3], *on[:3], *args, True)[1],
                  _gate_backward_op(grad, weight, log_alpha, u, *args, True)[1], bounds[2])
