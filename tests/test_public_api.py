"""The public API in tiers: every exported name resolves, has a docstring and a typed signature."""

from __future__ import annotations

import importlib
import inspect

import pytest

TIERS = ["robustprune", "robustprune.data", "robustprune.eval", "robustprune.pruners", "robustprune.ops"]


def public_names():
    for module_name in TIERS:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            if not name.startswith("__"):
                yield module_name, name


@pytest.mark.parametrize("module_name, name", list(public_names()), ids=lambda x: x)
def test_documented_and_typed(module_name, name):
    obj = getattr(importlib.import_module(module_name), name)
    assert inspect.getdoc(obj), f"{module_name}.{name} has no docstring"
    function = obj.__init__ if inspect.isclass(obj) else obj
    if not callable(function) or function is object.__init__ or not hasattr(function, "__code__"):
        return
    signature = inspect.signature(function)
    untyped = [p.name for p in signature.parameters.values()
               if p.annotation is inspect.Parameter.empty and p.name not in ("self", "cls")
               and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    assert not untyped, f"{module_name}.{name}: parameters without a type: {untyped}"
    if not inspect.isclass(obj):
        assert signature.return_annotation is not inspect.Signature.empty, f"{module_name}.{name}: no return type"


def test_top_level_is_the_pipeline_and_ops_are_a_tier_below():
    import robustprune
    import robustprune.ops

    assert {"magnitude_prune", "wanda_prune", "sparsegpt_prune", "iterative_magnitude_prune", "robust_ticket",
            "early_robust", "SparseLinear", "load_sparse_model", "finetune_classifier", "attack",
            "essential_sparsity", "es_robust", "load_csv", "load_jsonl"} <= set(robustprune.__all__)
    assert not {"nm_mask", "nm_compress", "magnitude_mask_", "hard_concrete_gate"} & set(robustprune.__all__)
    assert {"nm_mask", "nm_compress", "nm_linear", "magnitude_mask_", "magnitude_thresholds",
            "hard_concrete_gate", "sparsegpt_prune_"} <= set(robustprune.ops.__all__)
