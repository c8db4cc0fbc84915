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
BLOCK_B and BLOCK_O are those of the launch's config (:func:`nm_linear_cost`).

Launch configs (``triton.autotune`` on CUDA; ``(BLOCK_B, BLOCK_O, BLOCK_K)``, warps, pipeline stages):
  every kernel   DEFAULT      (16, 32, 32), 8 warps, 3 stages   the tile used before autotuning
                 DEFAULT_M16  (16, 16, 32), 8 warps, 3 stages   DEFAULT's stand-in at M=16 (16 lanes per
                                                                group: DEFAULT spills there on sm_90)
  nm_linear      DECODE       (16, 16, 64), 8 warps, 4 stages   for batch <= 16: twice the programs along
                                                                OUT, twice the K per step, one more stage
                 LARGE_BATCH  (64, 32, 32), 8 warps, 3 stages   W re-read ceil(B/64) times, not ceil(B/16)
  grad_input     (32, 32, 64), 8 warps, 3 stages (M <= 8: spills at M=16 on sm_90)
  grad_values    (32, 64, 64), 8 warps, 3 stages (a 64 x 64 dW tile per program: x and grad_y re-read less)
A launch keeps the configs valid for its group size M (BLOCK_K whole groups, at least two; DEFAULT_M16 in
place of the tiles that spill at M=16); bench/cuda_compile.py compiles every one for sm_80 and sm_90. The
autotuner times them once per key: the batch bucket (:func:`batch_bucket`: 16 for batch <= 16, then powers
of two up to 256, so varying batch sizes do not each re-tune), OUT, IN, N, M, the precision and the dtypes.
Under ``TRITON_INTERPRET=1`` each kernel has the single config DEFAULT, at every M (there is no GPU to time
on, and no register file to spill).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from robustprune.kernels import tuning_configs
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


def _config(block_b: int, block_o: int, block_k: int, num_warps: int, num_stages: int) -> triton.Config:
    return triton.Config({"BLOCK_B": block_b, "BLOCK_O": block_o, "BLOCK_K": block_k}, num_warps=num_warps,
                         num_stages=num_stages)


# See the module docstring. Each list starts with its default; none spills on sm_80 / sm_90 at the group sizes
# it is kept for (bench/cuda_compile.py checks every config).
DEFAULT = _config(16, 32, 32, 8, 3)
DEFAULT_M16 = _config(16, 16, 32, 8, 3)
DECODE = _config(16, 16, 64, 8, 4)
LARGE_BATCH = _config(64, 32, 32, 8, 3)
GRAD_INPUT_LARGE = _config(32, 32, 64, 8, 3)
GRAD_VALUES_LARGE = _config(32, 64, 64, 8, 3)
NM_LINEAR_CONFIGS = [DEFAULT, DEFAULT_M16, DECODE, LARGE_BATCH]
GRAD_INPUT_CONFIGS = [DEFAULT, DEFAULT_M16, GRAD_INPUT_LARGE]
GRAD_VALUES_CONFIGS = [DEFAULT, DEFAULT_M16, GRAD_VALUES_LARGE]
SPILLS_AT_M16 = (DEFAULT, GRAD_INPUT_LARGE)  # on sm_90: DEFAULT in IEEE fp32, GRAD_INPUT_LARGE in fp16
# (+ the dtypes, which triton adds). A key can only name kernel arguments: B_BUCKET = batch_bucket(B) is one
# that only the key reads.
TUNING_KEY = ["B_BUCKET", "OUT", "IN", "N", "M", "DOT_FP32", "INPUT_PRECISION"]


def configs_for_group_size(configs: list[triton.Config], m: int) -> list[triton.Config]:
    """The configs a launch with group size ``m`` may use: BLOCK_K holds whole groups, at least two; at
    M=16 DEFAULT_M16 replaces the tiles that spill there, at other M DEFAULT serves."""
    excluded = SPILLS_AT_M16 if m == 16 else (DEFAULT_M16,)
    return [config for config in configs if config.kwargs["BLOCK_K"] % m == 0
            and config.kwargs["BLOCK_K"] >= 2 * m and config not in excluded]


def _prune(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    return configs_for_group_size(configs, kwargs["M"])


def _autotune(configs: list[triton.Config]):
    return triton.autotune(configs=tuning_configs(configs), key=TUNING_KEY,
                           prune_configs_by={"early_config_prune": _prune})


def batch_bucket(batch: int) -> int:
    """The batch as the autotuning key sees it: 16 up to 16 rows (decode), then the next power of two, at
    most 256 (four tiles of the largest BLOCK_B). Tuning is per bucket, not per batch size."""
    return min(max(triton.next_power_of_2(batch), 16), 256)


@_autotune(NM_LINEAR_CONFIGS)
@triton.jit
def nm_linear_kernel(x_ptr, values_ptr, meta_ptr, bias_ptr, y_ptr, B, OUT, IN, row_bytes, B_BUCKET,
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


@_autotune(GRAD_INPUT_CONFIGS)
@triton.jit
def nm_linear_grad_input_kernel(grad_y_ptr, values_ptr, meta_ptr, grad_x_ptr, B, OUT, IN, row_bytes,
                                B_BUCKET,
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


@_autotune(GRAD_VALUES_CONFIGS)
@triton.jit
def nm_linear_grad_values_kernel(grad_y_ptr, x_ptr, meta_ptr, grad_values_ptr, B, OUT, IN, row_bytes,
                                 B_BUCKET,
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


def _precision(precision: str) -> dict[str, object]:
    """The kernels' constexprs for ``precision`` (see the module docstring)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return {"DOT_FP32": precision != "native", "INPUT_PRECISION": "ieee" if precision == "native" else precision}


def nm_linear_cost(batch: int, out: int, in_features: int, n: int, m: int, element_size: int,
                   block_b: int | None = None, block_o: int | None = None) -> tuple[int, int]:
    """``(bytes moved, FLOPs)`` of one :func:`nm_linear` launch without bias: the module docstring's model.

    ``block_b`` / ``block_o`` are the tile of the config that ran (on a GPU, the autotuner's choice:
    ``nm_linear_kernel.best_config.kwargs`` after the launch); by default the default config for ``m``:
    DEFAULT (the interpreter's only config), or DEFAULT_M16 at M=16 (the tiles used before autotuning)."""
    default = configs_for_group_size(NM_LINEAR_CONFIGS, m)[0].kwargs
    block_b = block_b or default["BLOCK_B"]
    block_o = block_o or default["BLOCK_O"]
    index_bits = m.bit_length() - 1
    read = (batch * in_features * element_size * triton.cdiv(out, block_o)
            + out * in_features * n / m * (element_size + index_bits / 8) * triton.cdiv(batch, block_b))
    return int(read) + batch * out * element_size, 2 * batch * out * in_features


# Tiles, warps and stages are the autotuner's choice: the grids read the tile from the config (``meta``).

def nm_linear(x: torch.Tensor, values: torch.Tensor, metadata: torch.Tensor, bias: torch.Tensor | None,
              y: torch.Tensor, n: int, m: int, precision: str) -> None:
    """y (B, OUT) = x (B, IN) @ W^T + bias, W given compressed. All inputs contiguous."""
    (batch, in_features), out = x.shape, values.shape[0]
    grid = lambda meta: (triton.cdiv(batch, meta["BLOCK_B"]), triton.cdiv(out, meta["BLOCK_O"]))
    nm_linear_kernel[grid](x, values, metadata, bias if bias is not None else values, y, batch, out, in_features,
                           metadata.shape[1], batch_bucket(batch), HAS_BIAS=bias is not None, N=n, M=m,
                           BITS=m.bit_length() - 1, **_precision(precision))


def nm_linear_grad_input(grad_y: torch.Tensor, values: torch.Tensor, metadata: torch.Tensor, grad_x: torch.Tensor,
                         n: int, m: int, precision: str) -> None:
    """grad_x (B, IN) = grad_y (B, OUT) @ W."""
    (batch, in_features), out = grad_x.shape, values.shape[0]
    grid = lambda meta: (triton.cdiv(batch, meta["BLOCK_B"]), triton.cdiv(in_features, meta["BLOCK_K"]))
    nm_linear_grad_input_kernel[grid](grad_y, values, metadata, grad_x, batch, out, in_features, metadata.shape[1],
                                      batch_bucket(batch), N=n, M=m, BITS=m.bit_length() - 1, **_precision(precision))


def nm_linear_grad_values(grad_y: torch.Tensor, x: torch.Tensor, metadata: torch.Tensor,
                          grad_values: torch.Tensor, n: int, m: int, precision: str) -> None:
    """grad_values = (grad_y^T @ x) restricted to the stored entries of W."""
    (batch, in_features), out = x.shape, grad_values.shape[0]
    grid = lambda meta: (triton.cdiv(out, meta["BLOCK_O"]), triton.cdiv(in_features, meta["BLOCK_K"]))
    nm_linear_grad_values_kernel[grid](grad_y, x, metadata, grad_values, batch, out, in_features, metadata.shape[1],
                                       batch_bucket(batch), N=n, M=m, BITS=m.bit_length() - 1,
                                       **_precision(precision))
