"""Hard-concrete gate fused with its use on the weight, out = W * z(log_alpha, noise), and its backward.

Gate (Louizos et al., constants in :mod:`robustprune.sparse_ops.hard_concrete`):
  train: s = sigmoid((noise + log_alpha) / beta), noise = log u - log(1 - u) precomputed by the caller
  eval (no noise): s = sigmoid(log_alpha)
  z = clamp(s * (zeta - gamma) + gamma, 0, 1)
Backward recomputes s from (log_alpha, noise) instead of saving z, so the forward keeps no temporary:
  dz/dlog_alpha = (zeta - gamma) * s * (1 - s) / beta  where gamma <= pre-clamp value <= 1 (else 0)
(beta = 1 in eval), grad_W = grad_out * z, grad_log_alpha = grad_out * W * dz/dlog_alpha.

Per launch over n elements (weight element size s_w, log_alpha and noise in fp32):
  forward   reads  n * (s_w + 4 [+ 4 with noise]) bytes, writes n * s_w bytes; ~15 FLOPs per element
  backward  reads  n * (2 s_w + 4 [+ 4]) bytes, writes n * (4 [+ s_w with grad_W]) bytes; ~25 FLOPs each
All arithmetic is fp32 (the interpreter gets bf16 arithmetic wrong; fp32 is also what the CPU path uses).

Launch configs: both kernels run every training step, so on CUDA ``triton.autotune`` picks per tensor size
(and flags, dtypes) among BLOCK = 1,024 elements with 4 warps (the default, and the interpreter's only
config), 1,024 with 8 warps (4 elements per thread, not 8) and 4,096 with 16 warps (8 per thread, 4x
larger programs); 2,048 or 4,096 elements over 8 warps spill in some variants on sm_90. Each program
handles one block: nothing but the grid depends on BLOCK, and the kernels write only their outputs, so
the autotuner's timing runs leave no trace.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from robustprune.kernels import tuning_configs

CONFIGS = [triton.Config({"BLOCK": 1024}, num_warps=4), triton.Config({"BLOCK": 1024}, num_warps=8),
           triton.Config({"BLOCK": 4096}, num_warps=16)]


@triton.jit
def _gate(
    log_alpha, noise, HAS_NOISE: tl.constexpr, GAMMA: tl.constexpr, ZETA: tl.constexpr, BETA: tl.constexpr
):
    """(z, dz/dlog_alpha) in fp32."""
    if HAS_NOISE:
        s = tl.sigmoid((noise + log_alpha) / BETA)
        slope = s * (1.0 - s) * ((ZETA - GAMMA) / BETA)
    else:
        s = tl.sigmoid(log_alpha)
        slope = s * (1.0 - s) * (ZETA - GAMMA)
    stretched = s * (ZETA - GAMMA) + GAMMA
    z = tl.minimum(tl.maximum(stretched, 0.0), 1.0)
    # torch.clamp's gradient convention: the bounds themselves pass the gradient.
    slope = tl.where((stretched >= 0.0) & (stretched <= 1.0), slope, 0.0)
    return z, slope


@triton.autotune(configs=tuning_configs(CONFIGS), key=["numel", "HAS_NOISE"])
@triton.jit
def hard_concrete_forward_kernel(
    w_ptr,
    log_alpha_ptr,
    noise_ptr,
    out_ptr,
    numel,
    HAS_NOISE: tl.constexpr,
    GAMMA: tl.constexpr,
    ZETA: tl.constexpr,
    BETA: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offsets < numel
    w = tl.load(w_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
    log_alpha = tl.load(log_alpha_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
    noise = 0.0
    if HAS_NOISE:
        noise = tl.load(noise_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
    z, _ = _gate(log_alpha, noise, HAS_NOISE, GAMMA, ZETA, BETA)
    tl.store(out_ptr + offsets, (w * z).to(out_ptr.dtype.element_ty), mask=ok)


@triton.autotune(configs=tuning_configs(CONFIGS), key=["numel", "HAS_NOISE", "WEIGHT_GRAD"])
@triton.jit
def hard_concrete_backward_kernel(
    grad_ptr,
    w_ptr,
    log_alpha_ptr,
    noise_ptr,
    grad_w_ptr,
    grad_log_alpha_ptr,
    numel,
    HAS_NOISE: tl.constexpr,
    WEIGHT_GRAD: tl.constexpr,
    GAMMA: tl.constexpr,
    ZETA: tl.constexpr,
    BETA: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offsets < numel
    grad = tl.load(grad_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
    log_alpha = tl.load(log_alpha_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
    noise = 0.0
    if HAS_NOISE:
        noise = tl.load(noise_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
    z, slope = _gate(log_alpha, noise, HAS_NOISE, GAMMA, ZETA, BETA)
    tl.store(
        grad_log_alpha_ptr + offsets, (grad * w * slope).to(grad_log_alpha_ptr.dtype.element_ty), mask=ok
    )
    if WEIGHT_GRAD:
        tl.store(grad_w_ptr + offsets, (grad * z).to(grad_w_ptr.dtype.element_ty), mask=ok)


def hard_concrete_forward(
    weight: torch.Tensor,
    log_alpha: torch.Tensor,
    noise: torch.Tensor | None,
    out: torch.Tensor,
    gamma: float,
    zeta: float,
    beta: float,
) -> None:
    """out = weight * z(log_alpha, noise) elementwise; contiguous tensors with the same number of elements."""
    numel = weight.numel()
    grid = lambda meta: (triton.cdiv(numel, meta["BLOCK"]),)
    hard_concrete_forward_kernel[grid](
        weight,
        log_alpha,
        noise if noise is not None else log_alpha,
        out,
        numel,
        HAS_NOISE=noise is not None,
        GAMMA=gamma,
        ZETA=zeta,
        BETA=beta,
    )


def hard_concrete_backward(
    grad: torch.Tensor,
    weight: torch.Tensor,
    log_alpha: torch.Tensor,
    noise: torch.Tensor | None,
    grad_weight: torch.Tensor | None,
    grad_log_alpha: torch.Tensor,
    gamma: float,
    zeta: float,
    beta: float,
) -> None:
    """grad_log_alpha = grad * weight * dz/dlog_alpha and (if given) grad_weight = grad * z; contiguous."""
    numel = weight.numel()
    grid = lambda meta: (triton.cdiv(numel, meta["BLOCK"]),)
    hard_concrete_backward_kernel[grid](
        grad,
        weight,
        log_alpha,
        noise if noise is not None else log_alpha,
        grad_weight if grad_weight is not None else grad_log_alpha,
        grad_log_alpha,
        numel,
        HAS_NOISE=noise is not None,
        WEIGHT_GRAD=grad_weight is not None,
        GAMMA=gamma,
        ZETA=zeta,
        BETA=beta,
    )
