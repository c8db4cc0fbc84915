"""N:M sparse matmul kernels: y = x W^T (+ b) with W compressed (robustprune.sparse_ops.nm_format).

Triton cannot issue sparse tensor-core instructions, so each program loads the compressed tile
(kept values + index bit stream), rebuilds the dense (BLOCK_O, BLOCK_K) tile of W in registers and
uses a dense ``tl.dot``. The win is memory traffic (W read at N/M of its size plus b bits per kept
entry), which dominates at decode / small batch; FLOPs are those of the dense product.

Precision (``precision`` of the launchers): ``"native"`` multiplies fp16 / bf16 inputs on tensor cores
with fp32 accumulation; ``"ieee"`` upcasts to fp32 and multiplies in IEEE fp32 (no tensor cores);
``"tf32"`` upcasts and uses TF32 tensor cores (10-bit mantissa products), only when the caller asks.

Per launch of ``nm_linear`` (x: B x IN, W: OUT x IN, element size s, index bits b):
  bytes read    = B*IN*s * ceil(OUT/BLOCK_O)  +  OUT*IN*(N/M)*(s + b/8) * ceil(B/BLOCK_B)  (+ OUT*s bias)
  bytes written = B*OUT*s
  FLOPs         = 2*B*OUT*IN  (dense tl.dot on the rebuilt tile)
The backward kernels move the same bytes with the roles of x / y swapped and the same FLOPs each.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from robustprune.kernels.nm_format import load_group_indices


@triton.jit
def dense_tile(values_ptr, meta_ptr, rows, row_ok, k0, groups_per_row, row_bytes,
               N: tl.constexpr, M: tl.constexpr, BITS: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr):
    """The (BLOCK_O, BLOCK_K) fp32 tile of W for rows ``rows`` and columns ``k0 .. k0 + BLOCK_K``."""
    GROUPS: tl.constexpr = BLOCK_K // M
    groups = k0 // M + tl.arange(0, GROUPS)
    valid = row_ok[:, None] & (groups < groups_per_row)[None, :]
    lanes = tl.arange(0, M)
    kept_per_row = groups_per_row * N
    tile = tl.zeros((BLOCK_O, GROUPS, M), dtype=tl.float32)
    for j in tl.static_range(N):
        entry = groups[None, :] * N + j
        value = tl.load(values_ptr + rows[:, None] * kept_per_row + entry, mask=valid, other=0.0).to(tl.float32)
        index = load_group_indices(meta_ptr, entry, rows[:, None], row_bytes, valid, BITS)
        tile += tl.where(index[:, :, None] == lanes[None, None, :], value[:, :, None], 0.0)
    return tl.reshape(tile, (BLOCK_O, BLOCK_K))


@triton.jit
def nm_linear_kernel(x_ptr, values_ptr, meta_ptr, bias_ptr, y_ptr, B, OUT, IN, row_bytes,
                     HAS_BIAS: tl.constexpr, N: tl.constexpr, M: tl.constexpr, BITS: tl.constexpr,
                     BLOCK_B: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr, DOT_FP32: tl.constexpr,
                     INPUT_PRECISION: tl.constexpr):
    b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    o = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
    acc = tl.zeros((BLOCK_B, BLOCK_O), dtype=tl.float32)
    for k0 in range(0, IN, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + b[:, None] * IN + k[None, :], mask=(b < B)[:, None] & (k < IN)[None, :], other=0.0)
        w = dense_tile(values_ptr, meta_ptr, o, o < OUT, k0, IN // M, row_bytes, N, M, BITS, BLOCK_O, BLOCK_K)
        if DOT_FP32:
            acc += tl.dot(x.to(tl.float32), tl.trans(w), input_precision=INPUT_PRECISION)
        else:
            acc += tl.dot(x, tl.trans(w.to(x.dtype)))
    if HAS_BIAS:
        acc += tl.load(bias_ptr + o, mask=o < OUT, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + b[:, None] * OUT + o[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=(b < B)[:, None] & (o < OUT)[None, :])


@triton.jit
def nm_linear_grad_input_kernel(grad_y_ptr, values_ptr, meta_ptr, grad_x_ptr, B, OUT, IN, row_bytes,
                                N: tl.constexpr, M: tl.constexpr, BITS: tl.constexpr, BLOCK_B: tl.constexpr,
                                BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr, DOT_FP32: tl.constexpr,
                                INPUT_PRECISION: tl.constexpr):
    b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    k0 = tl.program_id(1) * BLOCK_K
    k = k0 + tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_B, BLOCK_K), dtype=tl.float32)
    for o0 in range(0, OUT, BLOCK_O):
        o = o0 + tl.arange(0, BLOCK_O)
        gy = tl.load(grad_y_ptr + b[:, None] * OUT + o[None, :], mask=(b < B)[:, None] & (o < OUT)[None, :],
                     other=0.0)
        w = dense_tile(values_ptr, meta_ptr, o, o < OUT, k0, IN // M, row_bytes, N, M, BITS, BLOCK_O, BLOCK_K)
        if DOT_FP32:
            acc += tl.dot(gy.to(tl.float32), w, input_precision=INPUT_PRECISION)
        else:
            acc += tl.dot(gy, w.to(gy.dtype))
    tl.store(grad_x_ptr + b[:, None] * IN + k[None, :], acc.to(grad_x_ptr.dtype.element_ty),
             mask=(b < B)[:, None] & (k < IN)[None, :])


@triton.jit
def nm_linear_grad_values_kernel(grad_y_ptr, x_ptr, meta_ptr, grad_values_ptr, B, OUT, IN, row_bytes,
                                 N: tl.constexpr, M: tl.constexpr, BITS: tl.constexpr, BLOCK_B: tl.constexpr,
                                 BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr, DOT_FP32: tl.constexpr,
                                 INPUT_PRECISION: tl.constexpr):
    o = tl.program_id(0) * BLOCK_O + tl.arange(0, BLOCK_O)
    k0 = tl.program_id(1) * BLOCK_K
    k = k0 + tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_O, BLOCK_K), dtype=tl.float32)  # dense dL/dW tile
    for b0 in range(0, B, BLOCK_B):
        b = b0 + tl.arange(0, BLOCK_B)
        gy = tl.load(grad_y_ptr + b[:, None] * OUT + o[None, :], mask=(b < B)[:, None] & (o < OUT)[None, :],
                     other=0.0)
        x = tl.load(x_ptr + b[:, None] * IN + k[None, :], mask=(b < B)[:, None] & (k < IN)[None, :], other=0.0)
        if DOT_FP32:
            acc += tl.dot(tl.trans(gy.to(tl.float32)), x.to(tl.float32), input_precision=INPUT_PRECISION)
        else:
            acc += tl.dot(tl.trans(gy), x)
    GROUPS: tl.constexpr = BLOCK_K // M
    acc = tl.reshape(acc, (BLOCK_O, GROUPS, M))
    groups = k0 // M + tl.arange(0, GROUPS)
    groups_per_row = IN // M
    kept_per_row = groups_per_row * N
    valid = (o < OUT)[:, None] & (groups < groups_per_row)[None, :]
    lanes = tl.arange(0, M)
    for j in tl.static_range(N):  # keep only the gradient of the stored entries
        entry = groups[None, :] * N + j
        index = load_group_indices(meta_ptr, entry, o[:, None], row_bytes, valid, BITS)
        grad = tl.sum(tl.where(index[:, :, None] == lanes[None, None, :], acc, 0.0), axis=2)
        tl.store(grad_values_ptr + o[:, None] * kept_per_row + entry, grad.to(grad_values_ptr.dtype.element_ty),
                 mask=valid)


PRECISIONS = ("native", "ieee", "tf32")


# (BLOCK_B, BLOCK_O, BLOCK_K) and warps: chosen so that no variant spills registers on sm_80 / sm_90
# (bench/cuda_compile.py checks every one); M=16 rebuilds twice the lanes per tile, so half the rows.
NUM_WARPS = 8


def _blocks(m: int) -> tuple[int, int, int]:
    return 16, 16 if m == 16 else 32, max(32, 2 * m)


def _precision(precision: str) -> dict[str, object]:
    """The kernels' constexprs for ``precision`` (see the module docstring)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return {"DOT_FP32": precision != "native", "INPUT_PRECISION": "ieee" if precision == "native" else precision}


def nm_linear_cost(batch: int, out: int, in_features: int, n: int, m: int, element_size: int) -> tuple[int, int]:
    """``(bytes moved, FLOPs)`` of one :func:`nm_linear` launch without bias: the module docstring's model
    with this launcher's tile sizes."""
    block_b, block_o, _ = _blocks(m)
    index_bits = m.bit_length() - 1
    read = (batch * in_features * element_size * triton.cdiv(out, block_o)
            + out * in_features * n / m * (element_size + index_bits / 8) * triton.cdiv(batch, block_b))
    return int(read) + batch * out * element_size, 2 * batch * out * in_features


def nm_linear(x: torch.Tensor, values: torch.Tensor, metadata: torch.Tensor, bias: torch.Tensor | None,
              y: torch.Tensor, n: int, m: int, precision: str) -> None:
    """y (B, OUT) = x (B, IN) @ W^T + bias, W given compressed. All inputs contiguous."""
    (batch, in_features), out = x.shape, values.shape[0]
    block_b, block_o, block_k = _blocks(m)
    grid = (triton.cdiv(batch, block_b), triton.cdiv(out, block_o))
    nm_linear_kernel[grid](x, values, metadata, bias if bias is not None else values, y, batch, out, in_features,
                           metadata.shape[1], HAS_BIAS=bias is not None, N=n, M=m, BITS=m.bit_length() - 1,
                           BLOCK_B=block_b, BLOCK_O=block_o, BLOCK_K=block_k, num_warps=NUM_WARPS,
                           **_precision(precision))


def nm_linear_grad_input(grad_y: torch.Tensor, values: torch.Tensor, metadata: torch.Tensor, grad_x: torch.Tensor,
                         n: int, m: int, precision: str) -> None:
    """grad_x (B, IN) = grad_y (B, OUT) @ W."""
    (batch, in_features), out = grad_x.shape, values.shape[0]
    block_b, block_o, block_k = _blocks(m)
    grid = (triton.cdiv(batch, block_b), triton.cdiv(in_features, block_k))
    nm_linear_grad_input_kernel[grid](grad_y, values, metadata, grad_x, batch, out, in_features, metadata.shape[1],
                                      N=n, M=m, BITS=m.bit_length() - 1, BLOCK_B=block_b, BLOCK_O=block_o,
                                      BLOCK_K=block_k, num_warps=NUM_WARPS, **_precision(precision))


def nm_linear_grad_values(grad_y: torch.Tensor, x: torch.Tensor, metadata: torch.Tensor,
                          grad_values: torch.Tensor, n: int, m: int, precision: str) -> None:
    """grad_values = (grad_y^T @ x) restricted to the stored entries of W."""
    (batch, in_features), out = x.shape, grad_values.shape[0]
    block_b, block_o, block_k = _blocks(m)
    grid = (triton.cdiv(out, block_o), triton.cdiv(in_features, block_k))
    nm_linear_grad_values_kernel[grid](grad_y, x, metadata, grad_values, batch, out, in_features, metadata.shape[1],
                                       N=n, M=m, BITS=m.bit_length() - 1, BLOCK_B=block_b, BLOCK_O=block_o,
                                       BLOCK_K=block_k, num_warps=NUM_WARPS, **_precision(precision))
