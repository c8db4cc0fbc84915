"""``robustprune::nm_linear``: y = x W^T + b with W stored compressed N:M, with backward.

CPU, small batches (decoding; up to :data:`~robustprune.sparse_ops.nm_linear_cpu.SMALL_BATCH` rows of
``x``): a compiled kernel reads the compressed weight once, straight from its packed form
(:mod:`robustprune.sparse_ops.nm_linear_cpu`, LLVM IR compiled once per machine; half the bytes of dense,
so faster than dense ``F.linear``). Larger batches, CPUs or patterns it does not cover, no llvmlite or a
kernel that fails to build (one warning names why: :mod:`robustprune.sparse_ops.compiled`), or
``ROBUSTPRUNE_NM_LINEAR_CPU=eager`` in the environment: W is rebuilt a block of rows at a time into a
reused 4 MiB buffer, and each block is multiplied with BLAS; the full dense matrix is never
materialised. The backward always takes the BLAS route. CUDA: the Triton
kernels in :mod:`robustprune.kernels.nm_matmul` (dense tile rebuilt in registers + ``tl.dot``).
There is no 4:8 (or general N:M) matmul in PyTorch; for 2:4 fp16/bf16 on CUDA, PyTorch's
``to_sparse_semi_structured`` is an alternative this op does not dispatch to yet.

Gradients flow to ``x``, to the kept ``values`` (the mask stays fixed) and to ``bias``. Where no gradient
is to be recorded and nothing traces or intercepts the call (``backend.dispatch_reaches_cpu_kernel``),
:func:`nm_linear` runs the op's CPU kernel without going through the dispatcher: at decode, its cost is
a sizeable part of a layer's time.
"""

from __future__ import annotations

import torch

from robustprune.sparse_ops.backend import (
    check_triton_device,
    count_launch,
    dispatch_reaches_cpu_kernel,
    skip_dynamo_until_loaded,
    triton_interpreter_active,
    triton_route,
)
from robustprune.sparse_ops.compiled import CompiledRoute
from robustprune.sparse_ops.nm_format import check_compressed, unpack_indices

# Dense bytes rebuilt per CPU block: large enough to amortise per-op overhead at batch 1, small enough to
# bound the temporary (4 MiB whatever the layer size).
_CPU_BLOCK_BYTES = 4 << 20


def in_features_of(values: torch.Tensor, n: int, m: int) -> int:
    return values.shape[1] // n * m


def check_nm_linear(x: torch.Tensor, values: torch.Tensor, metadata: torch.Tensor, bias: torch.Tensor | None,
                    n: int, m: int) -> None:
    in_features = in_features_of(values, n, m)
    check_compressed(values, metadata, n, m, in_features)
    if x.dtype != values.dtype:
        raise TypeError(f"input has dtype {x.dtype} but the sparse weight is {values.dtype}; cast one of them")
    if x.device != values.device:
        raise ValueError(f"input is on {x.device} but the sparse weight is on {values.device}")
    if x.dim() == 0 or x.shape[-1] != in_features:
        raise ValueError(f"input's last dimension must be in_features={in_features}, got shape {tuple(x.shape)}")
    if bias is not None and (bias.shape != (values.shape[0],) or bias.dtype != values.dtype
                             or bias.device != values.device):
        raise ValueError(f"bias must be a {values.dtype} vector of {values.shape[0]} on {values.device}, "
                         f"got {bias.dtype} {tuple(bias.shape)} on {bias.device}")


def nm_linear(x: torch.Tensor, values: torch.Tensor, metadata: torch.Tensor, bias: torch.Tensor | None,
              n: int, m: int) -> torch.Tensor:
    """``x @ W^T + bias`` for W compressed as ``(values, metadata)`` with pattern ``n:m``.

    ``x`` has shape ``(..., in_features)``; differentiable in ``x``, ``values`` and ``bias``.
    """
    check_nm_linear(x, values, metadata, bias, n, m)
    if dispatch_reaches_cpu_kernel(x, values, metadata, bias):
        return _nm_linear_cpu(x, values, metadata, bias, int(n), int(m))
    return _nm_linear_op(x, values, metadata, bias, int(n), int(m))


def _row_blocks(values: torch.Tensor, n: int, m: int):
    in_features = in_features_of(values, n, m)
    rows = max(8, _CPU_BLOCK_BYTES // (in_features * values.element_size()))
    for start in range(0, values.shape[0], rows):
        yield start, min(start + rows, values.shape[0])


def _lanes(metadata: torch.Tensor, kept: int, n: int, m: int) -> torch.Tensor:
    return unpack_indices(metadata, kept, m).view(metadata.shape[0], -1, n)


def _rebuild(values: torch.Tensor, lanes: torch.Tensor, buffer: torch.Tensor, n: int, m: int) -> torch.Tensor:
    rows = values.shape[0]
    dense = buffer[:rows].zero_()
    dense.view(rows, -1, m).scatter_(2, lanes, values.view(rows, -1, n))
    return dense


CPU_SWITCH = "ROBUSTPRUNE_NM_LINEAR_CPU"
CPU_ROUTE = CompiledRoute("nm_linear_cpu", CPU_SWITCH, "nm_linear")


def compiled_forward_applies(batch: int, values: torch.Tensor, n: int, m: int) -> bool:
    """Whether the CPU forward of ``batch`` rows runs the compiled kernel (see the module docstring)."""
    compiled = CPU_ROUTE.module()
    if compiled is None:
        return False
    kind = compiled.host_kind()
    return 0 < batch <= compiled.SMALL_BATCH[kind] and compiled.supports(kind, n, m, values.shape[1])


@torch.library.custom_op("robustprune::nm_linear", mutates_args=(), device_types="cpu")
def _nm_linear_op(x: torch.Tensor, values: torch.Tensor, metadata: torch.Tensor, bias: torch.Tensor | None,
                  n: int, m: int) -> torch.Tensor:
    check_nm_linear(x, values, metadata, bias, n, m)
    return _nm_linear_cpu(x, values, metadata, bias, n, m)


def _nm_linear_cpu(x: torch.Tensor, values: torch.Tensor, metadata: torch.Tensor, bias: torch.Tensor | None,
                   n: int, m: int) -> torch.Tensor:
    """The op's CPU kernel (arguments already checked); :func:`nm_linear` calls it directly where the
    dispatcher would do nothing else."""
    if triton_route():  # route("triton"): the CUDA implementation on these CPU tensors
        return _nm_linear_triton(x, values, metadata, bias, n, m)
    count_launch("robustprune::nm_linear", "cpu", (x, values, metadata, bias))
    in_features, out = in_features_of(values, n, m), values.shape[0]
    x2 = x.reshape(-1, in_features)
    if compiled_forward_applies(x2.shape[0], values, n, m):
        y = CPU_ROUTE.run(lambda kernels: kernels.nm_linear_forward(x2, values, metadata, n, m))
        if y is not None:
            if bias is not None:
                y += bias
            return y.to(x.dtype).view(*x.shape[:-1], out)
    return nm_linear_blas(x2, values, metadata, bias, n, m).view(*x.shape[:-1], out)


def nm_linear_blas(x2: torch.Tensor, values: torch.Tensor, metadata: torch.Tensor, bias: torch.Tensor | None,
                   n: int, m: int) -> torch.Tensor:
    """The BLAS route of the CPU forward for 2-D ``x2``: dense blocks of W rebuilt and multiplied."""
    in_features, out = in_features_of(values, n, m), values.shape[0]
    y_t = torch.empty(out, x2.shape[0], dtype=x2.dtype)  # rows of W^T x^T are contiguous blocks
    buffer = torch.empty(min(out, next(_row_blocks(values, n, m))[1]), in_features, dtype=values.dtype)
    for start, stop in _row_blocks(values, n, m):
        dense = _rebuild(values[start:stop], _lanes(metadata[start:stop], values.shape[1], n, m), buffer, n, m)
        torch.mm(dense, x2.t(), out=y_t[start:stop])
    y = y_t.t()
    if bias is not None:
        y = y + bias
    return y.contiguous()


@_nm_linear_op.register_kernel("cuda")
def _nm_linear_triton(x, values, metadata, bias, n, m):
    count_launch("robustprune::nm_linear", "triton", (x, values, metadata, bias))
    check_nm_linear(x, values, metadata, bias, n, m)
    check_triton_device(values, "values")
    from robustprune.kernels.nm_matmul import nm_linear as launch

    in_features, out = in_features_of(values, n, m), values.shape[0]
    x2 = x.reshape(-1, in_features).contiguous()
    y = torch.empty(x2.shape[0], out, dtype=x.dtype, device=x.device)
    launch(x2, values.contiguous(), metadata.contiguous(), bias, y, n, m, _dot_precision(x.dtype))
    return y.view(*x.shape[:-1], out)


def _dot_precision(dtype: torch.dtype) -> str:
    """How the Triton kernels multiply: fp16 / bf16 on tensor cores ("native"); fp32 in IEEE fp32 unless
    the caller opted into TF32 with ``torch.set_float32_matmul_precision("high")`` (or "medium"), as
    for torch's own matmuls. The interpreter computes garbage for fp16/bf16 ``tl.dot`` on the CPU, so
    there everything is upcast to IEEE fp32."""
    if triton_interpreter_active():
        return "ieee"
    if dtype == torch.float32:
        return "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"
    return "native"


@_nm_linear_op.register_fake
def _nm_linear_fake(x, values, metadata, bias, n, m):
    check_nm_linear(x, values, metadata, bias, n, m)
    return x.new_empty(*x.shape[:-1], values.shape[0])


# ------------------------------------------------------------------------------------------------ backward

@torch.library.custom_op("robustprune::nm_linear_backward", mutates_args=(), device_types="cpu")
def _nm_linear_backward_op(grad_y: torch.Tensor, x: torch.Tensor, values: torch.Tensor, metadata: torch.Tensor,
                           n: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    if triton_route():  # route("triton"): the CUDA implementation on these CPU tensors
        return _nm_linear_backward_triton(grad_y, x, values, metadata, n, m)
    count_launch("robustprune::nm_linear_backward", "cpu", (grad_y, x, values, metadata))
    in_features = in_features_of(values, n, m)
    gy = grad_y.reshape(-1, values.shape[0])
    x2 = x.reshape(-1, in_features)
    grad_x = torch.zeros(x2.shape, dtype=x.dtype)
    grad_values = torch.empty_like(values)
    buffer = torch.empty(min(values.shape[0], next(_row_blocks(values, n, m))[1]), in_features, dtype=values.dtype)
    for start, stop in _row_blocks(values, n, m):
        lanes = _lanes(metadata[start:stop], values.shape[1], n, m)
        dense = _rebuild(values[start:stop], lanes, buffer, n, m)
        grad_x.addmm_(gy[:, start:stop], dense)
        grad_dense = gy[:, start:stop].t() @ x2  # (rows, in): dL/dW for this block
        grad_values[start:stop] = torch.gather(grad_dense.view(stop - start, -1, m), 2, lanes).flatten(1)
    return grad_x.view(x.shape), grad_values


@_nm_linear_backward_op.register_kernel("cuda")
def _nm_linear_backward_triton(grad_y, x, values, metadata, n, m):
    count_launch("robustprune::nm_linear_backward", "triton", (grad_y, x, values, metadata))
    check_triton_device(values, "values")
    from robustprune.kernels.nm_matmul import nm_linear_grad_input, nm_linear_grad_values

    in_features = in_features_of(values, n, m)
    gy = grad_y.reshape(-1, values.shape[0]).contiguous()
    x2 = x.reshape(-1, in_features).contiguous()
    grad_x = torch.empty_like(x2)
    grad_values = torch.empty_like(values)
    values, metadata = values.contiguous(), metadata.contiguous()
    nm_linear_grad_input(gy, values, metadata, grad_x, n, m, _dot_precision(x.dtype))
    nm_linear_grad_values(gy, x2, metadata, grad_values, n, m, _dot_precision(x.dtype))
    return grad_x.view(x.shape), grad_values


@_nm_linear_backward_op.register_fake
def _nm_linear_backward_fake(grad_y, x, values, metadata, n, m):
    return torch.empty_like(x), torch.empty_like(values)


def _setup_context(ctx, inputs, output):
    x, values, metadata, bias, n, m = inputs
    ctx.save_for_backward(x, values, metadata)
    ctx.n, ctx.m, ctx.has_bias = n, m, bias is not None


def _backward(ctx, grad_y):
    x, values, metadata = ctx.saved_tensors
    grad_x, grad_values = _nm_linear_backward_op(grad_y.contiguous(), x, values, metadata, ctx.n, ctx.m)
    grad_bias = grad_y.reshape(-1, values.shape[0]).sum(0) if ctx.has_bias else None
    return grad_x, grad_values, None, grad_bias, None, None


_nm_linear_op.register_autograd(_backward, setup_context=_setup_context)


skip_dynamo_until_loaded(_nm_linear_op)
skip_dynamo_until_loaded(_nm_linear_backward_op)
