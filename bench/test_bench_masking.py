"""pytest-benchmark suites: robustprune masking against what a user would otherwise write.

Run with ``python -m pytest bench/ --benchmark-only``. Each benchmark also checks its result cheaply
(exact pruned count, N:M equal to topk+scatter); no assertion is ever made on time. For ratios measured
side by side in one process, see ``python -m bench.compare``.
"""

from __future__ import annotations

import pytest
import torch

from bench.workloads import ours_global, ours_nm, pruned_count, topk_scatter_nm, torch_prune_global

GLOBAL_SPARSITY = 0.5
NM_PATTERNS = [(2, 4), (4, 8)]


def _target_pruned(weights: list[torch.Tensor], sparsity: float) -> int:
    return round(sparsity * sum(w.numel() for w in weights))


# ----------------------------------------------------------------------------------- global magnitude

@pytest.mark.benchmark(group="global magnitude 50%, BERT-base 85M fp32")
def test_global_ours_packed(benchmark, bert_weights: list[torch.Tensor]) -> None:
    """robustprune: exact global threshold + in-place masking, bit-packed masks."""
    pruned: list[list[torch.Tensor]] = []

    def setup():  # the op zeroes weights in place: every round gets fresh copies (not timed)
        pruned.clear()
        pruned.append([w.clone() for w in bert_weights])
        return (pruned[0], GLOBAL_SPARSITY), {}

    masks = benchmark.pedantic(ours_global, setup=setup, rounds=3, iterations=1, warmup_rounds=1)
    weights = pruned[0]
    target = _target_pruned(weights, GLOBAL_SPARSITY)
    assert pruned_count(masks, weights) == target
    assert sum(int(torch.count_nonzero(w)) for w in weights) == sum(w.numel() for w in weights) - target


@pytest.mark.benchmark(group="global magnitude 50%, BERT-base 85M fp32")
def test_global_torch_prune(benchmark, bert_weights: list[torch.Tensor]) -> None:
    """Baseline: torch.nn.utils.prune.global_unstructured(L1Unstructured). ~20 s: a single round."""
    linears = benchmark.pedantic(torch_prune_global, args=(bert_weights, GLOBAL_SPARSITY),
                                 rounds=1, iterations=1)
    target = _target_pruned(bert_weights, GLOBAL_SPARSITY)
    assert sum(int((linear.weight_mask == 0).sum()) for linear in linears) == target


# -------------------------------------------------------------------------------------------------- N:M

@pytest.mark.parametrize(("n", "m"), NM_PATTERNS, ids=[f"{n}:{m}" for n, m in NM_PATTERNS])
def test_nm_ours(benchmark, matrix_4096: torch.Tensor, n: int, m: int) -> None:
    """robustprune.ops.nm_mask on a 4096x4096 fp32 matrix."""
    benchmark.group = f"{n}:{m} mask, 4096x4096 fp32"
    mask = benchmark.pedantic(ours_nm, args=(matrix_4096, n, m), rounds=10, iterations=1, warmup_rounds=1)
    assert torch.equal(mask, topk_scatter_nm(matrix_4096, n, m))


@pytest.mark.parametrize(("n", "m"), NM_PATTERNS, ids=[f"{n}:{m}" for n, m in NM_PATTERNS])
def test_nm_topk_scatter(benchmark, matrix_4096: torch.Tensor, n: int, m: int) -> None:
    """Baseline: topk over |w| per group, scattered into a zero bool mask."""
    benchmark.group = f"{n}:{m} mask, 4096x4096 fp32"
    mask = benchmark.pedantic(topk_scatter_nm, args=(matrix_4096, n, m), rounds=5, iterations=1,
                              warmup_rounds=1)
    assert torch.equal(mask.sum(dim=1), torch.full((mask.shape[0],), mask.shape[1] * n // m))


# ------------------------------------------------------------------------------------ bandwidth reference

@pytest.mark.benchmark(group="copy 4096x4096 fp32 (bandwidth reference)")
def test_copy_reference(benchmark, matrix_4096: torch.Tensor) -> None:
    """dst.copy_(src) into a preallocated tensor: 2 x 64 MiB moved, the machine's bandwidth reference."""
    dst = torch.empty_like(matrix_4096)
    benchmark.pedantic(dst.copy_, args=(matrix_4096,), rounds=20, iterations=1, warmup_rounds=2)
    assert torch.equal(dst, matrix_4096)
