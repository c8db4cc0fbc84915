"""The hard-concrete gate op (CPU: eager torch code): hand-computed values, gradients vs autograd of the formula, opcheck, errors."""

import math

import pytest
import torch

from robustprune.sparse_ops.hard_concrete import (
    BETA,
    GAMMA,
    ZETA,
    hard_concrete_gate,
    sample_hard_concrete_noise,
)
from tests.conftest import DTYPES


def reference(weight, log_alpha, noise):
    """The gate written as separate torch ops (Louizos et al., 2018), noise = log u - log(1 - u)."""
    if noise is None:
        s = torch.sigmoid(log_alpha)
    else:
        s = torch.sigmoid((noise + log_alpha) / BETA)
    return weight * torch.clamp(s * (ZETA - GAMMA) + GAMMA, 0, 1)


def problem(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(shape, generator=g)
    log_alpha = torch.randn(shape, generator=g) * 3  # spans both clamped ends and the open middle
    return weight, log_alpha, sample_hard_concrete_noise(weight, generator=g)


def test_gate_equals_hand_computed_values():
    ones = torch.ones(4)
    log_alpha = torch.tensor([0.0, math.log(3.0), 10.0, -10.0])
    # eval: z = clamp(1.2 * sigmoid(la) - 0.1, 0, 1): 0.5 -> 0.5, 0.75 -> 0.8, ~1 -> 1, ~0 -> 0 (clamped)
    z = hard_concrete_gate(ones, log_alpha)
    assert torch.allclose(z, torch.tensor([0.5, 0.8, 1.0, 0.0]), atol=1e-6)
    assert z[2] == 1.0 and z[3] == 0.0
    # train, u = 0.5: noise log(u / (1 - u)) = 0, s = sigmoid(la * 3/2)
    half = torch.zeros(4)
    s = [1 / (1 + math.exp(-1.5 * a)) for a in (0.0, math.log(3.0))]
    expected = [min(1.0, max(0.0, 1.2 * v - 0.1)) for v in s]  # 0.5 and 1.2 / (1 + 3^-1.5) - 0.1 = 0.90633
    assert torch.allclose(hard_concrete_gate(ones, log_alpha, half)[:2], torch.tensor(expected), atol=1e-6)
    assert expected[1] == pytest.approx(0.906331, abs=1e-6)
    # train, u = 0.75, la = 0: noise log 3, s = sigmoid(1.5 log 3) again
    z = hard_concrete_gate(torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([math.log(3.0)]))
    assert float(z) == pytest.approx(2 * 0.906331, abs=2e-6)


@pytest.mark.parametrize("noise", [True, False])
def test_forward_and_backward_match_autograd_of_the_formula(noise):
    weight, log_alpha, u = problem((37, 53))
    u = u if noise else None
    wr, lr = weight.clone().requires_grad_(), log_alpha.clone().requires_grad_()
    expected = reference(wr, lr, u)
    grad = torch.randn(expected.shape, generator=torch.Generator().manual_seed(5))
    expected.backward(grad)
    w, la = weight.clone().requires_grad_(), log_alpha.clone().requires_grad_()
    out = hard_concrete_gate(w, la, u)
    out.backward(grad)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(w.grad, wr.grad, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(la.grad, lr.grad, rtol=1e-5, atol=1e-6)
    assert bool((la.grad == 0).any()) and bool((la.grad != 0).any())  # clamped gates pass no gradient


def test_many_chunks_and_frozen_weight():
    weight, log_alpha, u = problem((700, 1000), seed=1)  # > CPU_CHUNK elements: several chunks
    la = log_alpha.clone().requires_grad_()
    out = hard_concrete_gate(weight, la, u)  # weight frozen: only log_alpha gets a gradient
    out.sum().backward()
    lr = log_alpha.clone().requires_grad_()
    reference(weight, lr, u).sum().backward()
    torch.testing.assert_close(out, reference(weight, log_alpha, u), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(la.grad, lr.grad, rtol=1e-5, atol=1e-6)
    assert weight.grad is None


@pytest.mark.parametrize("dtype", DTYPES)
def test_half_precision_weights_gate_in_fp32(dtype):
    weight, log_alpha, u = problem((9, 16), seed=2)
    w = weight.to(dtype).requires_grad_()
    out = hard_concrete_gate(w, log_alpha, u)
    assert out.dtype == dtype
    expected = reference(w.detach().float(), log_alpha, u).to(dtype)
    # fp32 gate, one rounding to dtype; torch's sigmoid may differ by an ulp between its vector (SLEEF) and
    # scalar code, so not bit for bit
    torch.testing.assert_close(out, expected)
    out.float().sum().backward()
    assert w.grad.dtype == dtype


def test_noise_is_the_logistic_transform_of_uniform_noise():
    noise = sample_hard_concrete_noise(
        torch.empty(1000, 100), eps=0.1, generator=torch.Generator().manual_seed(0)
    )
    u = torch.empty(1000, 100).uniform_(0.1, 0.9, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(noise, torch.log(u) - torch.log(1 - u))
    assert noise.dtype == torch.float32 and float(noise.abs().max()) <= math.log(9.0) + 1e-5
    assert abs(float(noise.mean())) < 0.02 and abs(float(torch.sigmoid(noise).mean()) - 0.5) < 0.01


def test_opcheck():
    weight, log_alpha, u = problem((6, 10), seed=3)
    op = torch.ops.robustprune.hard_concrete_gate.default
    torch.library.opcheck(op, (weight.requires_grad_(), log_alpha.requires_grad_(), u, GAMMA, ZETA, BETA))
    torch.library.opcheck(op, (weight, log_alpha, None, GAMMA, ZETA, BETA))
    backward = torch.ops.robustprune.hard_concrete_gate_backward.default
    grad = torch.randn(6, 10)
    for weight_grad in (True, False):
        torch.library.opcheck(
            backward, (grad, weight.detach(), log_alpha.detach(), u, GAMMA, ZETA, BETA, weight_grad)
        )


def test_clear_errors():
    weight, log_alpha, u = problem((4, 8))
    with pytest.raises(ValueError, match=r"log_alpha has shape \(4, 4\), expected the weight's \(4, 8\)"):
        hard_concrete_gate(weight, log_alpha[:, :4])
    with pytest.raises(ValueError, match="noise has shape"):
        hard_concrete_gate(weight, log_alpha, u.t())
    with pytest.raises(TypeError, match="log_alpha has dtype torch.int64"):
        hard_concrete_gate(weight, log_alpha.long())
    with pytest.raises(ValueError, match="gamma must be a finite negative"):
        hard_concrete_gate(weight, log_alpha, gamma=0.1)
    with pytest.raises(ValueError, match="beta"):
        hard_concrete_gate(weight, log_alpha, beta=0.0)
    with pytest.raises(ValueError, match="eps must lie in"):
        sample_hard_concrete_noise(weight, eps=0.7)
