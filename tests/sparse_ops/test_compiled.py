"""The switch between compiled CPU kernels and eager paths: without llvmlite, and when a kernel fails to build,
every op runs its eager path with one warning naming the reason."""

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

from robustprune.sparse_ops.compiled import CompiledRoute, KernelBuildError

# Hides llvmlite before robustprune is imported, imports every sparse_ops module, runs every op that has a
# compiled kernel on CPU tensors and saves the results.
_WITHOUT_LLVMLITE = """
import importlib, json, pkgutil, sys, warnings
sys.modules["llvmlite"] = None
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import torch
    import robustprune.sparse_ops as package
    from robustprune import ops
    refused = []
    for module in pkgutil.iter_modules(package.__path__):
        try:
            importlib.import_module(f"robustprune.sparse_ops.{module.name}")
        except ImportError:
            refused.append(module.name)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 256, generator=g)
    results = {}
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for n, m in ((2, 4), (4, 8), (5, 16)):
            results[f"mask {dtype} {n}:{m}"] = ops.nm_mask(w.to(dtype), n, m)
        values, metadata = ops.nm_compress(w.to(dtype) * ops.nm_mask(w, 2, 4), 2, 4)
        results[f"linear {dtype}"] = ops.nm_linear(torch.randn(3, 256, generator=g).to(dtype), values, metadata,
                                                   None, 2, 4)
    results["gate"] = ops.hard_concrete_gate(w, torch.randn(64, 256, generator=g))
    torch.save(results, sys.argv[1])
messages = [str(warning.message) for warning in caught if issubclass(warning.category, RuntimeWarning)]
print(json.dumps({"refused": sorted(refused), "warnings": messages, "llvmlite": "llvmlite" in sys.modules
                  and sys.modules["llvmlite"] is not None}))
"""


@pytest.mark.slow
def test_without_llvmlite_every_op_runs_its_eager_path(tmp_path):
    saved = tmp_path / "results.pt"
    done = subprocess.run([sys.executable, "-c", _WITHOUT_LLVMLITE, str(saved)], check=False, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # Only the kernel modules themselves need llvmlite; every op module imports without it.
    assert report["refused"] == ["cpu_threads", "native", "nm_linear_cpu", "nm_mask_cpu"]
    assert not report["llvmlite"]
    assert len(report["warnings"]) == 1 and "llvmlite" in report["warnings"][0]
    assert "eager torch paths" in report["warnings"][0]

    from robustprune import ops
    from robustprune.sparse_ops.hard_concrete import hard_concrete_gate_eager
    from robustprune.sparse_ops.nm import nm_mask_eager
    from robustprune.sparse_ops.nm_linear import nm_linear_blas

    results = torch.load(saved)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 256, generator=g)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for n, m in ((2, 4), (4, 8), (5, 16)):
            assert torch.equal(results[f"mask {dtype} {n}:{m}"], nm_mask_eager(w.to(dtype), n, m))
        values, metadata = ops.nm_compress(w.to(dtype) * nm_mask_eager(w, 2, 4), 2, 4)
        x = torch.randn(3, 256, generator=g).to(dtype)
        assert torch.equal(results[f"linear {dtype}"], nm_linear_blas(x, values, metadata, None, 2, 4))
    assert torch.equal(results["gate"], hard_concrete_gate_eager(w, torch.randn(64, 256, generator=g), None))


def _route_of_broken_kernel(monkeypatch):
    """nm_mask's route with a fresh state, its kernel IR calling a function no process defines."""
    pytest.importorskip("llvmlite")
    from llvmlite import ir

    from robustprune.sparse_ops import native, nm, nm_mask_cpu

    route = CompiledRoute("nm_mask_cpu", "ROBUSTPRUNE_NM_MASK_CPU", "nm_mask")
    monkeypatch.setattr(nm, "CPU_ROUTE", route)
    original = nm_mask_cpu._scalar_group

    def scalar_group_calling_a_missing_function(builder, *args):
        missing = native.declare(builder.module, "robustprune_no_such_function", ir.VoidType())
        builder.call(missing, [])
        original(builder, *args)

    monkeypatch.setattr(nm_mask_cpu, "_scalar_group", scalar_group_calling_a_missing_function)
    nm_mask_cpu.kernel.cache_clear()
    return route, nm_mask_cpu


def test_a_kernel_that_fails_to_build_falls_back_with_one_warning(monkeypatch):
    route, nm_mask_cpu = _route_of_broken_kernel(monkeypatch)
    from robustprune.ops import nm_mask
    from robustprune.sparse_ops.nm import nm_mask_eager

    scores = torch.randn(16, 64, generator=torch.Generator().manual_seed(1))
    try:
        with pytest.warns(RuntimeWarning, match="robustprune_no_such_function") as caught:
            first = nm_mask(scores, 2, 4)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no second warning
            second = nm_mask(scores, 3, 4)
    finally:
        nm_mask_cpu.kernel.cache_clear()  # the broken kernel is never cached: rebuilt properly later
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1
    assert "symbols outside the allowed set" in route.failure
    assert torch.equal(first, nm_mask_eager(scores, 2, 4)) and torch.equal(second, nm_mask_eager(scores, 3, 4))
    assert not route.available()


def test_only_build_errors_switch_a_route_off():
    route = CompiledRoute("nm_mask_cpu", "ROBUSTPRUNE_TEST_SWITCH", "test")
    if route.module() is None:
        pytest.skip("llvmlite is not importable here")

    def bug(module):
        raise ZeroDivisionError("a bug in a kernel wrapper")

    with pytest.raises(ZeroDivisionError):
        route.run(bug)
    assert route.failure is None

    def build_error(module):
        raise KernelBuildError("LLVM refused")

    with pytest.warns(RuntimeWarning, match="LLVM refused"):
        assert route.run(build_error) is None
    assert route.module() is None


def test_switch_values(monkeypatch):
    route = CompiledRoute("nm_mask_cpu", "ROBUSTPRUNE_TEST_SWITCH", "test")
    monkeypatch.setenv("ROBUSTPRUNE_TEST_SWITCH", "eager")
    assert route.module() is None and route.run(lambda module: 1) is None
    monkeypatch.setenv("ROBUSTPRUNE_TEST_SWITCH", "fast")
    with pytest.raises(ValueError, match="ROBUSTPRUNE_TEST_SWITCH must be 'eager' or 'compiled'"):
        route.module()
