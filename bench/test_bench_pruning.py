"""pytest-benchmark: whole-model 50% unstructured pruning of all-MiniLM-L6-v2 per method.

A small calibration set (16 samples x 64 tokens) keeps the suite short; each round prunes a fresh
deepcopy of the dense model (made in the untimed setup). Each benchmark checks its result cheaply (the
targeted weights are half zero); no assertion on time. For the full tables (128 samples, hidden-state
error, sparsity sweeps, Hessian throughput): ``python -m bench.pruning``.
"""

from __future__ import annotations

import pytest
import torch

from bench import pruning

SAMPLES = 16
TOKENS = 64


@pytest.mark.parametrize("method", pruning.METHODS)
def test_prune_whole_model(benchmark, method):
    benchmark.group = f"whole-model prune all-MiniLM-L6-v2 50% ({SAMPLES}x{TOKENS} calibration)"
    batches = pruning.calibration(SAMPLES, TOKENS)
    prune = pruning.prune_fn(method, batches)
    models: list[torch.nn.Module] = []

    def setup():
        models.clear()
        models.append(pruning.fresh_model())
        return (models[0],), {}

    masks = benchmark.pedantic(prune, setup=setup, rounds=2, iterations=1, warmup_rounds=1)
    kept = sum(int(mask.sum()) for mask in masks.values())
    total = sum(mask.numel() for mask in masks.values())
    assert abs(kept / total - 0.5) < 0.01
    weights = dict(models[0].named_parameters())
    for name, mask in masks.items():
        assert not weights[name][~mask].any()
