"""pytest-benchmark: CPU forward of the compressed N:M linear against dense F.linear (4096x4096 fp32)."""

import pytest
import torch

from bench import sparse_linear


@pytest.mark.parametrize("n,m", sparse_linear.PATTERNS)
@pytest.mark.parametrize("batch", sparse_linear.BATCHES)
@pytest.mark.parametrize("impl", ["ours", "dense"])
def test_forward(benchmark, n, m, batch, impl):
    dense, ours, _ = sparse_linear.forward_cases(n, m, batch)
    benchmark.group = f"linear {n}:{m} batch {batch}"
    result = benchmark(ours if impl == "ours" else dense)
    assert torch.allclose(result, dense(), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("n,m", sparse_linear.PATTERNS)
def test_bytes_at_rest(n, m):
    assert sparse_linear.bytes_at_rest(n, m, torch.float16) <= sparse_linear.GOAL_BYTES_FP16[(n, m)] + 1e-9
