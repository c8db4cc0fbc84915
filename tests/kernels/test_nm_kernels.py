"""The compressed-N:M Triton kernels (compress, decompress, nm_linear forward and backward) against the CPU
path, on every device present (tests/conftest.py): CPU tensors under the interpreter, CUDA tensors where a
GPU is; the real layer shapes of bench/gpu.py (BERT-base, LLaMA-7B) on CUDA only.

The format kernels are exact. The matmuls are held to the error bound of the arithmetic each path does
(:func:`kernel_arithmetic`, ``tests.reference.linear_error_bound``), which an output scaled by 1.03 or
moved by 32 ulp in half precision exceeds; and on integer data, where every product and partial sum is exact
in fp32 and the result representable in the output format, they must give the exact result (so a 1 ulp
error is caught in every format, fp32 included).
"""

import pytest
import torch

from robustprune.sparse_ops.nm import nm_mask
from robustprune.sparse_ops.nm_format import (
    _nm_compress_triton,
    _nm_decompress_triton,
    nm_compress,
    nm_decompress,
    unpack_indices,
)
from robustprune.sparse_ops.nm_linear import _nm_linear_backward_triton, _nm_linear_triton
from tests.conftest import DTYPES
from tests.kernels import REAL_SHAPES
from tests.reference import (
    FP32,
    TF32_INPUT,
    linear_error_bound,
    nm_linear_backward_bounds,
    ulp,
    within_bound,
)


def kernel_arithmetic(device: torch.device, dtype: torch.dtype) -> dict:
    """How the N:M matmul kernels compute on ``device`` in ``dtype``, as ``linear_error_bound`` takes it."""
    if device.type == "cpu":
        # The interpreter: inputs upcast to fp32, IEEE fp32 products and sums (numpy), one conversion at the end.
        # Triton 3.9's interpreter converts fp32 to bf16 by truncation (interpreter.py: cast_impl calls
        # _convert_float without a rounding mode, which drops the low 16 bits); measured on 1,024 N(0, 1) fp32
        # values: 499 differ from torch's round-to-nearest, every one equals the truncated value, the largest
        # relative error is 7.6e-3 > u = 2^-8. Truncation loses up to a whole ulp: 2 u for bf16 outputs. fp16
        # goes through numpy's astype, which rounds to nearest.
        return {"conversion": 2 if dtype == torch.bfloat16 else 1}
    if dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest":
        return {}  # IEEE fp32 (input_precision="ieee"): FMA products and sums rounded to nearest
    # Tensor cores (mma.sync / wgmma): fp16 / bf16 products are exact in fp32; the fp32 sums inside an MMA may
    # truncate instead of rounding (Fasi et al., "Numerical behavior of NVIDIA tensor cores", PeerJ CS 2021):
    # 2 u_32 per addition. The output conversion is cvt.rn (round to nearest; in the kernels' PTX). TF32 reads
    # each fp32 input with its low 13 bits dropped: off by less than 2^-10 of itself.
    return {"accumulation": 2 * FP32, "inputs": TF32_INPUT if dtype == torch.float32 else 0.0}


def nm_weight(out, in_features, n, m, dtype, seed=0, std=1.0, integers=False):
    g = torch.Generator().manual_seed(seed)
    if integers:
        w = torch.randint(-2, 3, (out, in_features), generator=g).to(dtype)
    else:
        w = torch.empty(out, in_features).normal_(0.0, std, generator=g).to(dtype)
    return w * nm_mask(w, n, m)


def data(shape, dtype, seed, std=1.0, integers=False):
    g = torch.Generator().manual_seed(seed)
    if integers:
        return torch.randint(-2, 3, shape, generator=g).to(dtype)
    return torch.empty(shape).normal_(0.0, std, generator=g).to(dtype)


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (3, 8), (1, 4), (5, 16)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_compress_and_decompress_kernels_match_cpu(kernel_device, n, m, dtype):
    # rows of just over 128 index bytes: two byte-programs per row in the packing kernel (the second
    # ragged), and 3 x groups_per_row groups: several 64-group programs, the last ragged
    bits = m.bit_length() - 1
    groups_per_row = -(-130 * 8 // (n * bits)) + 1
    in_features = groups_per_row * m
    w = nm_weight(3, in_features, n, m, dtype)
    values, metadata = nm_compress(w, n, m)
    assert metadata.shape[1] > 128 and (3 * groups_per_row) % 64
    triton_values, triton_metadata = _nm_compress_triton(w.to(kernel_device), n, m)
    assert torch.equal(triton_values.cpu(), values)
    assert torch.equal(triton_metadata.cpu(), metadata)
    assert torch.equal(_nm_decompress_triton(values.to(kernel_device), metadata.to(kernel_device), n, m,
                                             in_features).cpu(),
                       nm_decompress(values, metadata, n, m, in_features))


def test_compress_kernel_rejects_non_nm_weight(kernel_device):
    with pytest.raises(ValueError, match="weight is not 2:4"):
        _nm_compress_triton(torch.ones(2, 8, device=kernel_device), 2, 4)


def check_nm_linear(device, w, x, bias, grad_y, n, m, dtype, *, integers=False, caught=True):
    """The forward (with and without bias) and both backward kernels on ``device`` against the float64
    reference: within the arithmetic's bound, or on integer data exactly equal. ``caught``: also check that the
    bound rejects an output scaled by 1.03 (and, in half precision, one moved by 32 ulp)."""
    values, metadata = nm_compress(w, n, m)
    lanes = unpack_indices(metadata, values.shape[1], m).view(w.shape[0], -1, n)
    arithmetic = kernel_arithmetic(device, dtype)
    args = [t.to(device) for t in (x, values, metadata)]
    computed = {"y": _nm_linear_triton(*args, bias.to(device), n, m),
                "y (no bias)": _nm_linear_triton(*args, None, n, m)}
    expected = {"y": linear_error_bound(x.reshape(-1, x.shape[-1]), w, bias, dtype, **arithmetic),
                "y (no bias)": linear_error_bound(x.reshape(-1, x.shape[-1]), w, None, dtype, **arithmetic)}
    grad_x, grad_values = _nm_linear_backward_triton(grad_y.to(device), *args, n, m)
    computed.update({"grad x": grad_x, "grad values": grad_values})
    bounds = nm_linear_backward_bounds(grad_y, x, w, lanes, dtype, **arithmetic)
    expected.update({"grad x": bounds[0], "grad values": bounds[1]})
    for name, actual in computed.items():
        actual = actual.cpu()
        reference, bound = expected[name]
        actual_2d = actual.reshape(reference.shape)
        assert actual.dtype == dtype and actual.device.type == "cpu", name
        if integers:  # every product and partial sum exact in fp32, the result representable in dtype
            assert torch.equal(actual_2d.double(), reference), name
            continue
        assert within_bound(actual_2d, (reference, bound)), name
        if caught:
            assert not within_bound(actual_2d * 1.03, (reference, bound)), name
            if dtype != torch.float32:
                assert not within_bound(actual_2d.double() + 32 * ulp(actual_2d), (reference, bound)), name


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (3, 16)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_nm_linear_kernels_within_the_arithmetics_bound(kernel_device, n, m, dtype):
    out, in_features = 37, 3 * max(32, 2 * m) + m  # ragged edges in every block dimension
    w = nm_weight(out, in_features, n, m, dtype)
    x, bias, grad_y = data((2, 9, in_features), dtype, 1), data((out,), dtype, 2), data((2, 9, out), dtype, 3)
    check_nm_linear(kernel_device, w, x, bias, grad_y, n, m, dtype)


@pytest.mark.parametrize("n,m,dtype", [(2, 4, dtype) for dtype in DTYPES] + [(3, 16, torch.float32)])
def test_nm_linear_kernels_exact_on_integers(kernel_device, n, m, dtype):
    # values in -2..2: |y| <= 4 * (kept per row) + 2 <= 202 and |grad| <= 4 * 37: integers exact in bf16 (< 256)
    out, in_features = 37, 3 * max(32, 2 * m) + m
    w = nm_weight(out, in_features, n, m, dtype, integers=True)
    x, bias = data((2, 9, in_features), dtype, 1, integers=True), data((out,), dtype, 2, integers=True)
    grad_y = data((2, 9, out), dtype, 3, integers=True)
    check_nm_linear(kernel_device, w, x, bias, grad_y, n, m, dtype, integers=True)


@pytest.mark.parametrize("integers", [False, True], ids=["random", "integers"])
def test_nm_linear_kernels_tf32(cuda_device, integers):
    """fp32 with torch.set_float32_matmul_precision("high"): the kernels take TF32 tensor cores."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        for out, in_features, batch in ((37, 100, (2, 9)), (3072, 768, (16,))):
            w = nm_weight(out, in_features, 2, 4, torch.float32, integers=integers)
            x = data((*batch, in_features), torch.float32, 1, integers=integers)
            bias, grad_y = data((out,), torch.float32, 2, integers=integers), data((*batch, out), torch.float32, 3,
                                                                                  integers=integers)
            check_nm_linear(cuda_device, w, x, bias, grad_y, 2, 4, torch.float32, integers=integers)
    finally:
        torch.set_float32_matmul_precision(previous)


@pytest.mark.parametrize("shape", REAL_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nm_linear_kernels_at_real_shapes(cuda_device, shape, dtype):
    """2:4 at BERT-base and LLaMA-7B layer shapes, batch 16 (bench.gpu's decode bucket) and 128, weights and
    inputs ~N(0, 0.02^2) as bench.gpu draws them; the backward at BERT-base shapes."""
    out, in_features = shape
    w = nm_weight(out, in_features, 2, 4, dtype, std=0.02)
    for batch in (16, 128):
        x, bias = data((batch, in_features), dtype, 1, std=0.02), data((out,), dtype, 2, std=0.02)
        grad_y = data((batch, out), dtype, 3, std=0.02)
        if out * in_features > 768 * 3072:  # LLaMA-7B: the forward only (the backward's bench is BERT's)
            values, metadata = nm_compress(w, 2, 4)
            y = _nm_linear_triton(*(t.to(cuda_device) for t in (x, values, metadata, bias)), 2, 4).cpu()
            bound = linear_error_bound(x, w, bias, dtype, **kernel_arithmetic(cuda_device, dtype))
            assert within_bound(y, bound) and not within_bound(y * 1.03, bound)
        else:
            check_nm_linear(cuda_device, w, x, bias, grad_y, 2, 4, dtype)


@pytest.mark.parametrize("shape", REAL_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_nm_linear_exact_at_real_shapes(cuda_device, shape, dtype):
    """Values in {-1, 0, 1}: |y| <= 2,048 kept products, every partial sum exact in fp32 and the result an
    integer fp16 holds exactly: the tensor cores' sums must lose nothing."""
    in_features = shape[1]
    g = torch.Generator().manual_seed(5)
    w = torch.randint(-1, 2, shape, generator=g).to(dtype)
    w = w * nm_mask(w, 2, 4)
    x = torch.randint(-1, 2, (16, in_features), generator=g).to(dtype)
    values, metadata = nm_compress(w, 2, 4)
    y = _nm_linear_triton(*(t.to(cuda_device) for t in (x, values, metadata)), None, 2, 4).cpu()
    assert torch.equal(y.double(), x.double() @ w.double().t())
