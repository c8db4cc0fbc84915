"""pytest-benchmark: the fused hard-concrete gate against the same computation as separate torch ops.

Gate forward + backward over all-MiniLM-L6-v2's 10.6M targeted weights, and one Robust Tickets
mask-training step on the real model. Each benchmark checks its result cheaply; no assertion on time.
For the side-by-side ratio table: ``python -m bench.hard_concrete``.
"""

from __future__ import annotations

import math

import torch

from bench import hard_concrete


def test_gate_fused(benchmark):
    """robustprune::hard_concrete_gate (CPU path), forward + backward to log_alpha."""
    benchmark.group = "hard-concrete gate fwd+bwd, MiniLM targets"
    grads = benchmark.pedantic(hard_concrete.ours_gate_step, rounds=5, iterations=1, warmup_rounds=1)
    expected = hard_concrete.separate_gate_step()
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_gate_separate_ops(benchmark):
    """Baseline: the same gate as separate torch ops under autograd."""
    benchmark.group = "hard-concrete gate fwd+bwd, MiniLM targets"
    grads = benchmark.pedantic(hard_concrete.separate_gate_step, rounds=5, iterations=1, warmup_rounds=1)
    assert len(grads) == 36


def test_training_step_fused(benchmark):
    benchmark.group = "Robust Tickets mask-training step, MiniLM"
    loss = benchmark.pedantic(
        hard_concrete.training_step, args=(True,), rounds=5, iterations=1, warmup_rounds=1
    )
    assert math.isfinite(loss)


def test_training_step_separate_ops(benchmark):
    benchmark.group = "Robust Tickets mask-training step, MiniLM"
    loss = benchmark.pedantic(
        hard_concrete.training_step, args=(False,), rounds=5, iterations=1, warmup_rounds=1
    )
    assert math.isfinite(loss)
