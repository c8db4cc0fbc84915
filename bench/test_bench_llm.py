"""pytest-benchmark: SmolLM2-135M-Instruct whole-model pruning per method (128 calibration windows of 128
tokens) and perplexity-evaluation throughput. Tables with ratios: ``python -m bench.llm``."""

from __future__ import annotations

import pytest
import torch

from bench import llm


@pytest.mark.parametrize("pattern,sparsity", llm.PATTERNS)
@pytest.mark.parametrize("method", llm.METHODS)
def test_prune_smollm2(benchmark, method, pattern, sparsity):
    benchmark.group = f"prune SmolLM2-135M {pattern} ({llm.SAMPLES}x{llm.TOKENS} calibration)"
    prune = llm.prune_fn(method, llm.calibration(), sparsity, pattern)
    models: list[torch.nn.Module] = []

    def setup():
        models.clear()
        models.append(llm.fresh_model())
        return (models[0],), {}

    masks = benchmark.pedantic(prune, setup=setup, rounds=1, iterations=1)
    kept = sum(int(mask.sum()) for mask in masks.values())
    assert kept == sum(mask.numel() for mask in masks.values()) // 2


def test_perplexity_tokens_per_second(benchmark):
    benchmark.group = f"perplexity SmolLM2-135M ({llm.PPL_WINDOWS} x {llm.PPL_SEQ_LEN} tokens)"
    model = llm.dense_model()[0]
    ppl = benchmark.pedantic(llm.eval_ppl, args=(model,), rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info["tokens_per_s"] = llm.PPL_WINDOWS * llm.PPL_SEQ_LEN / benchmark.stats.stats.median
    assert 1 < ppl < 1000
