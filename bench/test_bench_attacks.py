"""pytest-benchmark: one recipe's attack throughput, pooled engine vs one example at a time vs one query at a time.

Six SST-2 dev sentences, TextFooler and PWWS (the recipes with many candidates per word), one round each
after a warm-up. Each benchmark checks that every mode gives the same per-example results; no assertion
on time. For the full side-by-side table with examples/s, queries/s and the goal: ``python -m bench.attacks``.
"""

from __future__ import annotations

import pytest
import torch

from bench import attacks

EXAMPLES = 6


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Same thread setting as ``python -m bench.attacks`` (see its docstring)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("recipe", ["textfooler", "pwws"])
@pytest.mark.parametrize("mode", attacks.MODES)
def test_attack_throughput(benchmark, recipe, mode):
    benchmark.group = f"attack {recipe}, {EXAMPLES} SST-2 dev sentences, all-MiniLM-L6-v2"
    data = attacks.dev_examples(EXAMPLES)
    reference = attacks.run(recipe, data, "pooled")  # also the warm-up
    report = benchmark.pedantic(attacks.run, args=(recipe, data, mode), rounds=1, iterations=1)
    assert attacks.outcome(report) == attacks.outcome(reference)
    benchmark.extra_info["queries"] = report.total_queries
    benchmark.extra_info["model_calls"] = report.model_calls
