"""SparseLinear benchmarks: bytes at rest and CPU forward time against dense ``F.linear``.

Used by ``python -m bench.compare`` (section "SparseLinear"); times are medians of interleaved
rounds in one process, as everywhere in bench/.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import robustprune.ops
from bench.workloads import square_matrix

PATTERNS = ((2, 4), (4, 8))
BATCHES = (1, 16, 128)
SIZE = 4096
# Goals from the issue: compressed bytes at rest relative to dense fp16.
GOAL_BYTES_FP16 = {(2, 4): 0.5625, (4, 8): 0.594}


def compressed(n: int, m: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(masked dense weight, values, metadata) for a SIZE x SIZE N:M matrix."""
    weight = square_matrix(SIZE, dtype)
    weight.mul_(robustprune.ops.nm_mask(weight, n, m))
    values, metadata = robustprune.ops.nm_compress(weight, n, m)
    return weight, values, metadata


def bytes_at_rest(n: int, m: int, dtype: torch.dtype) -> float:
    """Compressed (values + metadata) over dense bytes for a SIZE x SIZE weight in ``dtype``."""
    layer = robustprune.SparseLinear(SIZE, SIZE, f"{n}:{m}", bias=False, dtype=dtype)
    return layer.weight_bytes() / layer.dense_weight_bytes()


def forward_cases(n: int, m: int, batch: int):
    """(dense F.linear call, our nm_linear call, inputs) on the same masked fp32 weight."""
    weight, values, metadata = compressed(n, m)
    x = torch.randn(batch, SIZE, generator=torch.Generator().manual_seed(batch))
    return (lambda: F.linear(x, weight)), (lambda: robustprune.ops.nm_linear(x, values, metadata, None, n, m)), (
        x, weight, values, metadata)
