"""Every Triton kernel compiles for NVIDIA GPUs (sm_80, sm_90) without a GPU, every autotune config of it
included, with no register spills, tensor-core MMA where a half-precision (or TF32-requested) tl.dot runs
and none where fp32 must stay IEEE.

``bench.cuda_compile`` does the work in a subprocess: the test session runs under TRITON_INTERPRET=1,
which replaces the kernels it compiles.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from triton.runtime.autotuner import Autotuner

from bench.cuda_compile import config_label, kernel_modules
from robustprune.kernels import hard_concrete, nm_matmul

REPO = Path(__file__).resolve().parents[2]
# Every autotuned kernel and its CUDA config list (this session runs the interpreter, which keeps the first).
AUTOTUNED = {
    "nm_linear_kernel": nm_matmul.NM_LINEAR_CONFIGS,
    "nm_linear_grad_input_kernel": nm_matmul.GRAD_INPUT_CONFIGS,
    "nm_linear_grad_values_kernel": nm_matmul.GRAD_VALUES_CONFIGS,
    "hard_concrete_forward_kernel": hard_concrete.CONFIGS,
    "hard_concrete_backward_kernel": hard_concrete.CONFIGS,
}


def kernel_names() -> set[str]:
    """Every launchable @triton.jit kernel (the *_kernel functions; helpers are inlined into them)."""
    return {name for module in kernel_modules() for name, value in vars(module).items()
            if name.endswith("_kernel") and hasattr(value, "fn")}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("cuda")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-m", "bench.cuda_compile", "--json", str(out / "results.json"),
                          "--out", str(out / "table.md")], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=600, check=False)
    return run, json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else []


@pytest.mark.slow
def test_every_kernel_compiles_for_sm80_and_sm90_without_spills(compiled):
    run, results = compiled
    assert run.returncode == 0, run.stderr[-3000:]
    assert {r["kernel"] for r in results} == kernel_names()
    for arch in (80, 90):
        assert {r["kernel"] for r in results if r["arch"] == arch} == kernel_names()
    assert all(r["ok"] and r["spill_bytes"] == 0 and r["registers"] > 0 for r in results)
    assert not [r for r in results if r["problems"]]


@pytest.mark.slow
def test_every_autotune_config_compiles_for_sm80_and_sm90(compiled):
    _, results = compiled
    assert {name for module in kernel_modules() for name, value in vars(module).items()
            if isinstance(value, Autotuner)} == set(AUTOTUNED)
    for kernel, configs in AUTOTUNED.items():
        for arch in (80, 90):
            found = {r["config"] for r in results if r["kernel"] == kernel and r["arch"] == arch}
            assert found == {config_label(config) for config in configs}, (kernel, arch)
    assert not [r for r in results if r["config"] and r["kernel"] not in AUTOTUNED]


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["nm_linear_kernel", "nm_linear_grad_input_kernel", "nm_linear_grad_values_kernel"])
def test_each_group_size_compiles_the_configs_it_may_pick(compiled, kernel):
    _, results = compiled
    for m in (4, 8, 16):
        for arch in (80, 90):
            found = {r["config"] for r in results if r["kernel"] == kernel and r["arch"] == arch
                     and f" M={m} " in r["variant"]}
            assert found == {config_label(c) for c in nm_matmul.configs_for_group_size(AUTOTUNED[kernel], m)}


@pytest.mark.slow
def test_tensor_cores_only_where_asked(compiled):
    _, results = compiled
    dots = [r for r in results if r["uses_dot"]]
    assert {r["kernel"] for r in dots} == {"nm_linear_kernel", "nm_linear_grad_input_kernel",
                                          "nm_linear_grad_values_kernel"}
    half = [r for r in dots if "fp16" in r["variant"] or "bf16" in r["variant"]]
    assert half and all(r["has_mma"] for r in half)
    tf32 = [r for r in dots if "INPUT_PRECISION=tf32" in r["variant"]]
    assert tf32 and all(r["has_tf32_mma"] for r in tf32)
    ieee = [r for r in dots if "INPUT_PRECISION=ieee" in r["variant"] and "DOT_FP32=True" in r["variant"]]
    assert ieee and not any(r["has_mma"] or r["has_tf32_mma"] for r in ieee)  # IEEE fp32: FMA, not TF32


def test_the_committed_table_lists_every_kernel():
    table = (REPO / "bench" / "cuda_compile.md").read_text()
    for name in kernel_names():
        for arch in (80, 90):
            assert f"| `{name}` | sm_{arch} |" in table, (name, arch)
    assert "bench/cuda_compile.md" in (REPO / "README.md").read_text()
