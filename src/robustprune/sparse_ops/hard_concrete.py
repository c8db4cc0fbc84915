"""Hard-concrete gates on a weight: ``robustprune::hard_concrete_gate(weight, log_alpha, noise) -> W * z``.

The stochastic gate of Louizos et al. (L0 regularisation), as Robust Tickets use it, one gate per weight:

  train (``noise`` given):  s = sigmoid((noise + log_alpha) / beta),  noise = log u - log(1 - u),
                           u ~ U(eps, 1 - eps)
  eval  (``noise`` None):   s = sigmoid(log_alpha)
  z = clamp(s * (zeta - gamma) + gamma, 0, 1),  out = weight * z

with gamma = -0.1, zeta = 1.1, beta = 2/3 by default. Gradients flow to ``log_alpha`` and ``weight``.

The noise is an explicit input, drawn by :func:`sample_hard_concrete_noise` as the logistic transform of
``u`` (computed once per sample, not in every pass): the CPU path and the Triton kernel see identical noise
and agree to a few ulp (same fp32 formula, different ``sigmoid`` implementations). An explicit sample also
lets several forward/backward passes share one gate draw (FreeLB's ascent steps attack the same
sub-network); it costs 4 bytes per gate.

CPU path: the eager torch code below (:func:`hard_concrete_gate_eager`,
:func:`hard_concrete_gate_backward_eager`). A compiled (LLVM IR) kernel for it was measured 7.2x faster on
the gate alone but only 1.08x on a whole mask-training step (``python -m bench.hard_concrete``: the model's
own forward and backward dominate), too little to carry native code for, so the CPU runs torch's ops.

Fused: neither path materialises ``z`` or any intermediate for autograd. The forward reads W, log_alpha
(and noise) once and writes the gated weight; the backward recomputes the gate and writes both gradients in
one pass (the weight's only when it requires grad). Eager CPU path: chunks of
:data:`~robustprune.sparse_ops.backend.CPU_CHUNK` elements with in-place torch ops, so temporaries stay in
cache. CUDA: :mod:`robustprune.kernels.hard_concrete`. Gate arithmetic is fp32 whatever the weight's dtype.
"""

from __future__ import annotations

import math

import torch

from robustprune.sparse_ops.backend import (
    CPU_CHUNK,
    check_triton_device,
    count_launch,
    skip_dynamo_until_loaded,
    triton_route,
)
from robustprune.sparse_ops.validation import check_float_tensor

GAMMA = -0.1
ZETA = 1.1
BETA = 2.0 / 3.0
NOISE_EPS = 1e-6


def _check_constants(gamma: float, zeta: float, beta: float) -> None:
    if not (math.isfinite(gamma) and gamma < 0):
        raise ValueError(f"gamma must be a finite negative number (the stretch's lower end), got {gamma}")
    if not (math.isfinite(zeta) and zeta > 1):
        raise ValueError(f"zeta must be a finite number > 1 (the stretch's upper end), got {zeta}")
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta (temperature) must be a finite number > 0, got {beta}")


def check_hard_concrete(
    weight: torch.Tensor,
    log_alpha: torch.Tensor,
    noise: torch.Tensor | None,
    gamma: float = GAMMA,
    zeta: float = ZETA,
    beta: float = BETA,
) -> None:
    """Raise early, naming the argument, unless the three tensors match in shape and device."""
    check_float_tensor(weight, "weight")
    check_float_tensor(log_alpha, "log_alpha")
    named = [("log_alpha", log_alpha)]
    if noise is not None:
        check_float_tensor(noise, "noise")
        named.append(("noise", noise))
    for name, tensor in named:
        if tensor.shape != weight.shape:
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)}, expected the weight's {tuple(weight.shape)} "
                "(one gate per weight)"
            )
        if tensor.device != weight.device:
            raise ValueError(f"{name} is on {tensor.device} but weight is on {weight.device}")
    _check_constants(gamma, zeta, beta)


def sample_hard_concrete_noise(
    like: torch.Tensor, eps: float = NOISE_EPS, generator: torch.Generator | None = None
) -> torch.Tensor:
    """fp32 logistic noise ``log u - log(1 - u)``, ``u ~ U(eps, 1 - eps)``, with ``like``'s shape and device
    (torch's default RNG or ``generator``): the ``noise`` input of :func:`hard_concrete_gate`."""
    if not 0 < eps < 0.5:
        raise ValueError(f"eps must lie in (0, 0.5), got {eps}")
    u = torch.empty(like.shape, dtype=torch.float32, device=like.device).uniform_(
        eps, 1 - eps, generator=generator
    )
    return torch.log(u).sub_(torch.log(1.0 - u))


def hard_concrete_gate(
    weight: torch.Tensor,
    log_alpha: torch.Tensor,
    noise: torch.Tensor | None = None,
    *,
    gamma: float = GAMMA,
    zeta: float = ZETA,
    beta: float = BETA,
) -> torch.Tensor:
    """``weight * z`` with the hard-concrete gate ``z`` of ``log_alpha`` (see the module docstring).

    Args:
        weight: fp32/fp16/bf16 tensor; the result has its dtype.
        log_alpha: one gate parameter per weight (same shape and device; any supported dtype, fp32 math).
        noise: training noise ``log u - log(1 - u)``, same shape (:func:`sample_hard_concrete_noise`); None
            for the deterministic eval gate ``sigmoid(log_alpha)``.
        gamma, zeta, beta: stretch interval (gamma < 0, zeta > 1) and temperature (> 0).

    Differentiable in ``weight`` and ``log_alpha``.
    """
    check_hard_concrete(weight, log_alpha, noise, gamma, zeta, beta)
    return _gate_op(weight, log_alpha, noise, float(gamma), float(zeta), float(beta))


# ------------------------------------------------------------------------------------------------ CPU path

def _chunks(numel: int):
    for start in range(0, numel, CPU_CHUNK):
        yield slice(start, min(start + CPU_CHUNK, numel))


def _flat(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.contiguous().view(-1)


def _pre_sigmoid(log_alpha: torch.Tensor, noise: torch.Tensor | None, beta: float) -> torch.Tensor:
    """fp32 ``s`` of one chunk, computed with the kernel's formula and order of operations."""
    log_alpha = log_alpha.float()
    if noise is None:
        return torch.sigmoid(log_alpha)
    return torch.add(noise.float(), log_alpha).div_(beta).sigmoid_()


@torch.library.custom_op("robustprune::hard_concrete_gate", mutates_args=(), device_types="cpu")
def _gate_op(
    weight: torch.Tensor,
    log_alpha: torch.Tensor,
    noise: torch.Tensor | None,
    gamma: float,
    zeta: float,
    beta: float,
) -> torch.Tensor:
    if triton_route():  # route("triton"): the CUDA implementation on these CPU tensors
        return _gate_triton(weight, log_alpha, noise, gamma, zeta, beta)
    count_launch("robustprune::hard_concrete_gate", "cpu", (weight, log_alpha, noise))
    check_hard_concrete(weight, log_alpha, noise, gamma, zeta, beta)
    return hard_concrete_gate_eager(weight, log_alpha, noise, gamma, zeta, beta)


def hard_concrete_gate_eager(
    weight: torch.Tensor,
    log_alpha: torch.Tensor,
    noise: torch.Tensor | None,
    gamma: float = GAMMA,
    zeta: float = ZETA,
    beta: float = BETA,
) -> torch.Tensor:
    """The CPU path of ``robustprune::hard_concrete_gate`` (chunked torch ops, see the module docstring)."""
    check_hard_concrete(weight, log_alpha, noise, gamma, zeta, beta)
    w, la, noise = _flat(weight), _flat(log_alpha), _flat(noise)
    out = torch.empty(weight.shape, dtype=weight.dtype)
    flat_out = out.view(-1)
    for part in _chunks(w.numel()):
        z = _pre_sigmoid(la[part], None if noise is None else noise[part], beta)
        z.mul_(zeta - gamma).add_(gamma).clamp_(0.0, 1.0)
        if weight.dtype == torch.float32:
            torch.mul(w[part], z, out=flat_out[part])
        else:
            flat_out[part].copy_(z.mul_(w[part]))
    return out


@_gate_op.register_kernel("cuda")
def _gate_triton(weight, log_alpha, noise, gamma, zeta, beta):
    count_launch("robustprune::hard_concrete_gate", "triton", (weight, log_alpha, noise))
    check_hard_concrete(weight, log_alpha, noise, gamma, zeta, beta)
    check_triton_device(weight, "weight")
    from robustprune.kernels.hard_concrete import hard_concrete_forward

    out = torch.empty(weight.shape, dtype=weight.dtype, device=weight.device)
    hard_concrete_forward(
        weight.contiguous(),
        log_alpha.contiguous(),
        None if noise is None else noise.contiguous(),
        out,
        gamma,
        zeta,
        beta,
    )
    return out


@_gate_op.register_fake
def _gate_fake(weight, log_alpha, noise, gamma, zeta, beta):
    check_hard_concrete(weight, log_alpha, noise, gamma, zeta, beta)
    return torch.empty(weight.shape, dtype=weight.dtype, device=weight.device)


# ------------------------------------------------------------------------------------------------ backward


def _grad_shapes(weight: torch.Tensor, log_alpha: torch.Tensor, weight_grad: bool):
    grad_weight = torch.empty(weight.shape if weight_grad else (0,), dtype=weight.dtype, device=weight.device)
    return grad_weight, torch.empty(log_alpha.shape, dtype=log_alpha.dtype, device=log_alpha.device)


@torch.library.custom_op("robustprune::hard_concrete_gate_backward", mutates_args=(), device_types="cpu")
def _gate_backward_op(
    grad: torch.Tensor,
    weight: torch.Tensor,
    log_alpha: torch.Tensor,
    noise: torch.Tensor | None,
    gamma: float,
    zeta: float,
    beta: float,
    weight_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_weight, grad_log_alpha); grad_weight is empty (shape (0,)) unless ``weight_grad``."""
    if triton_route():  # route("triton"): the CUDA implementation on these CPU tensors
        return _gate_backward_triton(grad, weight, log_alpha, noise, gamma, zeta, beta, weight_grad)
    count_launch("robustprune::hard_concrete_gate_backward", "cpu", (grad, weight, log_alpha, noise))
    return hard_concrete_gate_backward_eager(grad, weight, log_alpha, noise, gamma, zeta, beta, weight_grad)


def _backward_into(fill, grad, weight, log_alpha, noise, gamma, zeta, beta, weight_grad):
    """Allocate the gradients and let ``fill`` (the Triton launcher ``hard_concrete_backward``) write them."""
    grad_weight, grad_log_alpha = _grad_shapes(weight, log_alpha, weight_grad)
    fill(grad, weight.contiguous(), log_alpha.contiguous(), None if noise is None else noise.contiguous(),
         grad_weight if weight_grad else None, grad_log_alpha, gamma, zeta, beta)
    return grad_weight, grad_log_alpha


def hard_concrete_gate_backward_eager(
    grad: torch.Tensor,
    weight: torch.Tensor,
    log_alpha: torch.Tensor,
    noise: torch.Tensor | None,
    gamma: float,
    zeta: float,
    beta: float,
    weight_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The eager torch CPU path of ``robustprune::hard_concrete_gate_backward``: (grad_weight,
    grad_log_alpha), grad_weight empty (shape (0,)) unless ``weight_grad``."""
    g, w, la, noise = _flat(grad), _flat(weight), _flat(log_alpha), _flat(noise)
    grad_weight, grad_log_alpha = _grad_shapes(weight, log_alpha, weight_grad)
    flat_gw, flat_gla = grad_weight.view(-1), grad_log_alpha.view(-1)
    # dz/dlog_alpha = (zeta - gamma) / temperature * s * (1 - s) inside the clamp's range, else 0
    scale = (zeta - gamma) / (1.0 if noise is None else beta)
    for part in _chunks(w.numel()):
        s = _pre_sigmoid(la[part], None if noise is None else noise[part], beta)
        g_part = g[part].float()
        grad_la = torch.ops.aten.sigmoid_backward(
            torch.mul(g_part, w[part].float()), s
        )  # g * w * s * (1 - s)
        stretched = s.mul_(zeta - gamma).add_(gamma)
        z = stretched.clamp(0.0, 1.0)
        # z == stretched exactly inside [0, 1], bounds included: torch.clamp's gradient convention.
        grad_la.masked_fill_(z != stretched, 0.0).mul_(scale)
        flat_gla[part].copy_(grad_la)
        if weight_grad:
            flat_gw[part].copy_(z.mul_(g_part))
    return grad_weight, grad_log_alpha


@_gate_backward_op.register_kernel("cuda")
def _gate_backward_triton(grad, weight, log_alpha, noise, gamma, zeta, beta, weight_grad):
    count_launch("robustprune::hard_concrete_gate_backward", "triton", (grad, weight, log_alpha, noise))
    check_triton_device(weight, "weight")
    from robustprune.kernels.hard_concrete import hard_concrete_backward

    return _backward_into(hard_concrete_backward, grad.contiguous(), weight, log_alpha, noise, gamma, zeta, beta,
                          weight_grad)


@_gate_backward_op.register_fake
def _gate_backward_fake(grad, weight, log_alpha, noise, gamma, zeta, beta, weight_grad):
    return _grad_shapes(weight, log_alpha, weight_grad)


def _setup_context(ctx, inputs, output):
    weight, log_alpha, noise, gamma, zeta, beta = inputs
    ctx.save_for_backward(weight, log_alpha, noise)
    ctx.constants = (gamma, zeta, beta)


def _backward(ctx, grad):
    weight, log_alpha, noise = ctx.saved_tensors
    weight_grad = bool(ctx.needs_input_grad[0])
    # grad as autograd hands it (maybe a scalar expanded to the weight's shape): each path makes it contiguous.
    grad_weight, grad_log_alpha = _gate_backward_op(grad, weight, log_alpha, noise, *ctx.constants, weight_grad)
    return (grad_weight if weight_grad else None), grad_log_alpha, None, None, None, None


_gate_op.register_autograd(_backward, setup_context=_setup_context)


skip_dynamo_until_loaded(_gate_op)
skip_dynamo_until_loaded(_gate_backward_op)
