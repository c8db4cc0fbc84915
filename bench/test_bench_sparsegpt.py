"""pytest-benchmark: SparseGPT's blockwise OBS op against the straightforward per-column loop.

BERT-base layer shapes, fp32, the same Hinv for both. Each benchmark checks its result cheaply (masks
identical to the per-column implementation's, weights within fp32 tolerance); no assertion on time.
For the side-by-side ratio table: ``python -m bench.sparsegpt``.
"""

from __future__ import annotations

import pytest
import torch

from bench import sparsegpt

WORKLOADS = [(rows, columns, pattern, sparsity) for rows, columns in sparsegpt.SHAPES
             for pattern, sparsity in sparsegpt.PATTERNS]
IDS = [sparsegpt.label(*w).replace(" ", "-") for w in WORKLOADS]


@pytest.mark.parametrize("rows,columns,pattern,sparsity", WORKLOADS, ids=IDS)
def test_sparsegpt_ours(benchmark, rows, columns, pattern, sparsity):
    """robustprune.sparse_ops.obs.sparsegpt_prune_ (CPU path) on a fresh copy of the weight."""
    benchmark.group = f"SparseGPT {sparsegpt.label(rows, columns, pattern, sparsity)}"
    weight, hinv = sparsegpt.layer_problem(rows, columns)
    pruned: list[torch.Tensor] = []

    def setup():
        pruned.clear()
        pruned.append(weight.clone())
        return (pruned[0], hinv, pattern, sparsity), {}

    keep = benchmark.pedantic(sparsegpt.ours, setup=setup, rounds=5, iterations=1, warmup_rounds=1)
    expected_w, expected_keep = sparsegpt.baseline_result(rows, columns, pattern, sparsity)
    assert torch.equal(keep, expected_keep)
    torch.testing.assert_close(pruned[0], expected_w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rows,columns,pattern,sparsity", WORKLOADS, ids=IDS)
def test_sparsegpt_per_column(benchmark, rows, columns, pattern, sparsity):
    """Baseline: the reference per-column loop."""
    benchmark.group = f"SparseGPT {sparsegpt.label(rows, columns, pattern, sparsity)}"
    weight, hinv = sparsegpt.layer_problem(rows, columns)
    _, keep = benchmark.pedantic(sparsegpt.baseline, args=(weight, hinv, pattern, sparsity), rounds=3,
                                 iterations=1, warmup_rounds=1)
    assert keep.shape == weight.shape
