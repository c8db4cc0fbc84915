"""A shipped experiment's ``--quick`` sweep through ``robustprune.ops.route("triton")``: every op the sweep
calls runs its Triton kernel (the interpreter, on the CPU), no CPU kernel of an op runs at all, and the
records equal the CPU route's within the tolerances below.

The interpreter runs Triton programs one after another in Python: one magnitude selection over MiniLM's
21 M targeted weights takes about 5 minutes there, so the sweep runs the shipped protocol (methods,
patterns, calibration, training, evaluation) on a 2-layer BERT with random weights and MiniLM's
vocabulary, from a model folder the test writes (``model.name`` is any local folder)."""

from __future__ import annotations

import dataclasses

import pytest

from robustprune import ops
from robustprune.experiments.catalog import load_named_config
from robustprune.experiments.results import ResultsFile
from robustprune.experiments.runner import run_experiment
from robustprune.sparse_ops.backend import triton_interpreter_active

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not triton_interpreter_active(), reason="needs TRITON_INTERPRET=1 (tests/conftest.py)")]

# Tolerances, Triton route vs CPU route, both fp32 on the same machine:
# - measured sparsity: equal to 1e-6 (the masks come from exact selections: the same weights pruned);
# - accuracies: within one evaluated example (SparseGPT's OBS updates and the fine-tuning sum in another
#   order, so weights differ in the last bits and an example at the decision boundary may flip).
SPARSITY_TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from bench.workloads import write_tiny_bert

    return str(write_tiny_bert(tmp_path_factory.mktemp("tiny-bert")))


def _run(config, out, route):
    ops.reset_launch_counts()
    with ops.route(route):
        run_experiment(config, out, progress=False)
    counts = {kind: ops.launch_counts(kind) for kind in ("cpu", "triton")}
    ops.reset_launch_counts()
    return {r["key"]: r for r in ResultsFile(out / "results.jsonl").records()}, counts


# the ops each shipped experiment must reach at least (its methods' kernels)
USES = {
    "essential-sparsity": {"robustprune::magnitude_thresholds", "robustprune::magnitude_mask_", "robustprune::nm_mask",
                           "robustprune::sparsegpt_prune_"},
    "es-robust": {"robustprune::magnitude_thresholds", "robustprune::magnitude_mask_", "robustprune::sparsegpt_prune_"},
    "robust-tickets": {"robustprune::hard_concrete_gate", "robustprune::hard_concrete_gate_backward"},
}
# early-robust calls no robustprune op (whole heads and neurons go, by torch indexing), and neither IMP's masks
# nor the robust ticket's draw (score_thresholds) have a Triton kernel: on a GPU those run torch's own kernels.


@pytest.mark.parametrize("name", sorted(USES))
def test_a_quick_sweep_takes_the_triton_kernels_and_equals_the_cpu_route(name, tmp_path, tiny_model_dir):
    quick = load_named_config(name, quick=True)
    config = dataclasses.replace(quick, device="cpu", model=dataclasses.replace(quick.model, name=tiny_model_dir))
    cpu, cpu_counts = _run(config, tmp_path / "cpu", "cpu")
    triton, triton_counts = _run(config, tmp_path / "triton", "triton")
    assert cpu_counts["triton"] == {} and cpu_counts["cpu"]  # the CPU route used ops, on their CPU kernels
    assert triton_counts["cpu"] == {}  # the Triton route ran no CPU kernel of any op...
    # ... and every op the sweep used launched its Triton kernel (the CPU nm_compress calls nm_mask itself)
    assert set(triton_counts["triton"]) >= set(cpu_counts["cpu"]) - {"robustprune::nm_mask"}
    assert set(triton_counts["triton"]) <= set(cpu_counts["cpu"])
    assert set(triton_counts["triton"]) >= USES[name]
    assert list(triton) == list(cpu)
    for key, record in cpu.items():
        other = triton[key]
        assert other["measured_sparsity"] == pytest.approx(record["measured_sparsity"], abs=SPARSITY_TOLERANCE), key
        clean, routed = record["clean"], other["clean"]
        assert abs(routed["accuracy"] - clean["accuracy"]) <= 100.0 / clean["n"] + 1e-9, key
