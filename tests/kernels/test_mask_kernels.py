"""The selection kernels (N:M mask, global magnitude threshold, threshold mask) against the CPU implementation,
on every device present (tests/conftest.py, ``kernel_device``): CPU tensors under the Triton interpreter, and
CUDA tensors where a GPU is; the selections are exact, so the results must be equal.

The CUDA implementations of the ops are called directly: they launch the kernels. Shapes stay small on both
devices (each program costs ~1 ms interpreted); the real layer shapes of bench/gpu.py run on CUDA only.
"""

import pytest
import torch

from bench.gpu import NM_PATTERNS
from bench.workloads import bert_base_weights
from robustprune.sparse_ops.magnitude import (
    _magnitude_mask_triton,
    _magnitude_thresholds_triton,
    magnitude_mask_,
    magnitude_thresholds,
)
from robustprune.sparse_ops.nm import _nm_mask_triton, nm_mask
from tests.conftest import DTYPES
from tests.kernels import REAL_SHAPES


def on(device, tensors):
    return [t.to(device) for t in tensors]


def small_tensors(dtype, ties):
    g = torch.Generator().manual_seed(11)
    # (45, 61): 2,745 elements, three 1,024-element programs with a ragged last one (cross-program atomics,
    # packed-byte offsets of program ids above 0); the others fit one program
    shapes = [(17, 24), (5,), (40, 8), (45, 61)]
    if ties:
        return [torch.randint(-3, 4, s, generator=g).to(dtype) for s in shapes]
    return [torch.randn(s, generator=g).to(dtype) for s in shapes]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ties", [False, True])
def test_radix_histogram_thresholds_match_cpu(kernel_device, dtype, ties):
    tensors = small_tensors(dtype, ties)
    # seven sparsities: later passes count up to seven prefixes, in launches of PREFIX_SLOTS (4) and 3
    sparsities = [0.0, 0.1, 0.25, 0.4, 0.5, 0.7, 0.9]
    triton_thresholds, triton_quota = _magnitude_thresholds_triton(on(kernel_device, tensors), sparsities)
    cpu_thresholds, cpu_quota = magnitude_thresholds(tensors, sparsities)
    assert torch.equal(triton_thresholds.cpu(), cpu_thresholds)
    assert torch.equal(triton_quota.cpu(), cpu_quota)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_global_threshold_and_masks_at_bert_base(cuda_device, dtype):
    """The exact global selection over BERT-base's 72 encoder Linears (85M weights), as bench.gpu times it."""
    weights = [w.to(dtype) for w in bert_base_weights()]
    sparsities = [0.5, 0.9]
    triton_thresholds, triton_quota = _magnitude_thresholds_triton(on(cuda_device, weights), sparsities)
    cpu_thresholds, cpu_quota = magnitude_thresholds(weights, sparsities)
    assert torch.equal(triton_thresholds.cpu(), cpu_thresholds) and torch.equal(triton_quota.cpu(), cpu_quota)
    for index in (0, 4, 5, 71):  # Q, FFN in, FFN out of the first layer; the last FFN out
        via_cuda, via_cpu = weights[index].to(cuda_device), weights[index].clone()
        args = (float(cpu_thresholds[1]), int(cpu_quota[1, index]), True)
        assert torch.equal(_magnitude_mask_triton(via_cuda, *args).cpu(), magnitude_mask_(via_cpu, *args))
        assert torch.equal(via_cuda.cpu(), via_cpu)


def test_one_launch_counts_several_prefixes(kernel_device):
    from robustprune.kernels.radix_histogram import radix_histogram

    g = torch.Generator().manual_seed(3)
    x = torch.randn(5000, generator=g)  # three programs of 2 x 1,024 elements, the last ragged
    bits = x.view(torch.int32) & 0x7FFFFFFF
    prefixes = torch.unique(bits >> 20)[[0, 5, 9]].to(torch.int32)
    hist = torch.zeros(3, 1024, dtype=torch.int32, device=kernel_device)
    radix_histogram(x.to(kernel_device), hist, prefixes.to(kernel_device), 20, 10, blocks_per_program=2)
    hist = hist.cpu()
    for row, prefix in enumerate(prefixes.tolist()):
        selected = bits[(bits >> 20) == prefix]
        assert torch.equal(hist[row], torch.bincount((selected >> 10) & 1023, minlength=1024).to(torch.int32))


def test_radix_histogram_rejects_nonfinite(kernel_device):
    bad = torch.randn(64)
    bad[10] = float("nan")
    with pytest.raises(ValueError, match=r"tensors\[1\] contains NaN/Inf"):
        _magnitude_thresholds_triton(on(kernel_device, [torch.randn(8), bad]), [0.5])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("ties", [False, True])
def test_threshold_mask_kernel_matches_cpu(kernel_device, dtype, packed, ties):
    tensors = small_tensors(dtype, ties)
    thresholds, quota = magnitude_thresholds(tensors, [0.6])
    for index, weight in enumerate(tensors):
        via_triton, via_cpu = weight.to(kernel_device, copy=True), weight.clone()
        args = (float(thresholds[0]), int(quota[0, index]), packed)
        mask_triton = _magnitude_mask_triton(via_triton, *args)
        mask_cpu = magnitude_mask_(via_cpu, *args)
        assert torch.equal(mask_triton.cpu(), mask_cpu)
        assert torch.equal(via_triton.cpu(), via_cpu)


@pytest.mark.parametrize("dtype", DTYPES)
def test_packed_mask_zero_pads_its_last_byte_like_the_cpu(kernel_device, dtype):
    # 2,045 elements: the last packed byte holds 5 real bits; at threshold 0 (sparsity 0, or a cut that
    # falls among zeros) every real element is kept, and the 3 padding bits must stay 0 as on the CPU
    g = torch.Generator().manual_seed(5)
    weight = torch.randn(2045, generator=g).to(dtype)
    weight[:600] = 0
    for threshold, quota in ((0.0, 0), (0.0, 300)):  # sparsity 0; the cut among the 600 zeros
        via_triton, via_cpu = weight.to(kernel_device, copy=True), weight.clone()
        mask_triton = _magnitude_mask_triton(via_triton, threshold, quota, True).cpu()
        mask_cpu = magnitude_mask_(via_cpu, threshold, quota, True)
        assert torch.equal(mask_triton, mask_cpu) and torch.equal(via_triton.cpu(), via_cpu)
        assert int(mask_triton.view(torch.uint8)[-1]) >> 5 == 0


def test_threshold_mask_kernel_with_unrepresentable_threshold(kernel_device):
    weight = torch.tensor([0.1, 0.2, 0.30000001, 0.3, 0.4]).half()
    for threshold in (0.3, 0.30000001, 0.2999):
        assert torch.equal(_magnitude_mask_triton(weight.to(kernel_device, copy=True), threshold, 0, False).cpu(),
                           magnitude_mask_(weight.clone(), threshold, 0, False))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (4, 8), (3, 8), (5, 16)])
def test_nm_mask_kernel_matches_cpu(kernel_device, dtype, n, m):
    g = torch.Generator().manual_seed(n + m)
    # 41 x 4 groups: three 64-group programs, the last ragged
    for scores in (torch.randn(41, 4 * m, generator=g).to(dtype),
                   torch.randint(-2, 3, (41, 4 * m), generator=g).to(dtype)):
        assert torch.equal(_nm_mask_triton(scores.to(kernel_device), n, m).cpu(), nm_mask(scores, n, m))


@pytest.mark.parametrize("shape", REAL_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nm_mask_kernel_at_real_shapes(cuda_device, shape, dtype):
    """BERT-base and LLaMA-7B layers (bench/gpu.py), weights ~N(0, 0.02^2): half precision makes ties within
    groups common, which the kernel must break as the CPU does (the lower index is kept)."""
    weight = torch.empty(shape).normal_(0.0, 0.02, generator=torch.Generator().manual_seed(0)).to(dtype)
    on_cuda = weight.to(cuda_device)
    for n, m in NM_PATTERNS:
        assert torch.equal(_nm_mask_triton(on_cuda, n, m).cpu(), nm_mask(weight, n, m))
