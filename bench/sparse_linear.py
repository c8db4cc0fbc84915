"""SparseLinear benchmarks: bytes at rest and CPU forward time against dense ``F.linear``.

Used by ``python -m bench.compare`` (section "SparseLinear"); times are medians of interleaved
rounds in one process, as everywhere in bench/.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import robustprune.ops

PATTERNS = ((2, 4), (4, 8))
BATCHES = (1, 16, 128)
SIZE = 4096
# Goals from the issue: compressed bytes at rest relative to dense fp16.
GOAL_BYTES_FP16 = {(2, 4): 0.5625, (4, 8): 0.594}
# Forward-speed workloads (weight out x in): square, LLaMA-7B's up/gate (11008 x 4096) and down projection.
SHAPES = ((4096, 4096), (11008, 4096), (4096, 11008))
FORWARD_DTYPES = (torch.float32, torch.float16)
# Goals from the issue (2:4): batch 1 at least 1.3x dense F.linear, batch 16 at least 1.0x.
GOAL_SPEEDUP = {1: 1.3, 16: 1.0}
# Decoding reads every layer once per token: the streamed cases cycle through distinct copies of the weight
# totalling at least this much (four times this machine's 32 MiB L3), so neither side is served from cache.
STREAM_BYTES = 128 << 20


def compressed(n: int, m: int, dtype: torch.dtype = torch.float32, shape: tuple[int, int] = (SIZE, SIZE),
               seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(masked dense weight, values, metadata) for an N:M matrix of ``shape`` (out, in)."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.empty(shape, dtype=torch.float32).normal_(generator=generator).to(dtype)
    weight.mul_(robustprune.ops.nm_mask(weight, n, m))
    values, metadata = robustprune.ops.nm_compress(weight, n, m)
    return weight, values, metadata


def bytes_at_rest(n: int, m: int, dtype: torch.dtype) -> float:
    """Compressed (values + metadata) over dense bytes for a SIZE x SIZE weight in ``dtype``."""
    layer = robustprune.SparseLinear(SIZE, SIZE, f"{n}:{m}", bias=False, dtype=dtype)
    return layer.weight_bytes() / layer.dense_weight_bytes()


def forward_cases(n: int, m: int, batch: int):
    """(dense F.linear call, our nm_linear call, inputs) on the same masked fp32 SIZE x SIZE weight."""
    weight, values, metadata = compressed(n, m)
    x = torch.randn(batch, SIZE, generator=torch.Generator().manual_seed(batch))
    return (lambda: F.linear(x, weight)), (lambda: robustprune.ops.nm_linear(x, values, metadata, None, n, m)), (
        x, weight, values, metadata)


class StreamedForward:
    """Dense and compressed copies of one N:M layer, called round-robin (``streamed``) or always the first
    (``hot``: the compressed weight may then sit in the L3 cache between calls, the dense one less so)."""

    def __init__(self, n: int, m: int, dtype: torch.dtype, shape: tuple[int, int], batch: int, streamed: bool):
        weight, values, metadata = compressed(n, m, dtype, shape)
        dense_bytes = weight.numel() * weight.element_size()
        copies = max(1, -(-STREAM_BYTES // dense_bytes)) if streamed else 1
        self.n, self.m = n, m
        self.weights = [weight] + [weight.clone() for _ in range(copies - 1)]
        self.compressed = [(values, metadata)] + [(values.clone(), metadata.clone()) for _ in range(copies - 1)]
        self.x = torch.randn(batch, shape[1], generator=torch.Generator().manual_seed(batch)).to(dtype)
        self.compressed_bytes = values.numel() * values.element_size() + metadata.numel()
        self.dense_bytes = dense_bytes
        self._dense_turn = self._ours_turn = 0

    def dense(self) -> torch.Tensor:
        self._dense_turn = (self._dense_turn + 1) % len(self.weights)
        return F.linear(self.x, self.weights[self._dense_turn])

    def ours(self) -> torch.Tensor:
        self._ours_turn = (self._ours_turn + 1) % len(self.compressed)
        values, metadata = self.compressed[self._ours_turn]
        return robustprune.ops.nm_linear(self.x, values, metadata, None, self.n, self.m)

    def matches(self) -> bool:
        """Ours equals dense on the first copy within fp32-accumulation rounding (one rounding to fp16)."""
        values, metadata = self.compressed[0]
        ours = robustprune.ops.nm_linear(self.x, values, metadata, None, self.n, self.m).double()
        exact = F.linear(self.x.double(), self.weights[0].double())
        scale = F.linear(self.x.double().abs(), self.weights[0].double().abs())
        tolerance = 1e-5 * scale + (exact.abs() * 1e-3 if self.x.dtype == torch.float16 else 0)
        return bool(((ours - exact).abs() <= tolerance + 1e-6).all())
