"""``robustprune.ops.route("triton")``: every op with a Triton kernel takes it on CPU tensors (the
interpreter), counted by the launch counters, and gives what the CPU route gives; on CUDA tensors (where a
GPU is) every op launches its Triton kernel without any route. ``record_devices`` keeps the devices of the
tensors each op received, and ``ROBUSTPRUNE_ROUTE`` / ``ROBUSTPRUNE_LAUNCH_LOG`` do the same for a whole
(child) process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from robustprune import ops
from robustprune.sparse_ops.backend import triton_interpreter_active

needs_interpreter = pytest.mark.skipif(not triton_interpreter_active(), reason="needs TRITON_INTERPRET=1 "
                                       "(tests/conftest.py)")


def _both_routes(fn):
    """(result on the CPU route, result on the Triton route, {route: {implementation: calls}})."""
    ops.reset_launch_counts()
    cpu = fn()
    counts = {"cpu": {kind: ops.launch_counts(kind) for kind in ("cpu", "triton")}}
    ops.reset_launch_counts()
    with ops.route("triton"):
        triton = fn()
    counts["triton"] = {kind: ops.launch_counts(kind) for kind in ("cpu", "triton")}
    ops.reset_launch_counts()
    return cpu, triton, counts


_device = {"name": "cpu"}  # where the cases put their tensors (the CUDA test sets "cuda")


def _weight(shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(_device["name"])


def _case_nm_mask():
    w = _weight((8, 32))
    return lambda: ops.nm_mask(w, 2, 4)


def _case_nm_format():
    w = _weight((8, 32))
    w = w * ops.nm_mask(w, 2, 4)

    def run():
        values, metadata = ops.nm_compress(w, 2, 4)
        return values, metadata, ops.nm_decompress(values, metadata, 2, 4, 32)
    return run


def _case_nm_linear():
    w = _weight((16, 32))
    values, metadata = ops.nm_compress(w * ops.nm_mask(w, 2, 4), 2, 4)
    x = _weight((3, 32), seed=1)

    def run():
        v, xx = values.clone().requires_grad_(), x.clone().requires_grad_()
        y = ops.nm_linear(xx, v, metadata, None, 2, 4)
        y.sum().backward()
        return y.detach(), v.grad, xx.grad
    return run


def _case_magnitude():
    ws = [_weight((8, 16)), _weight((4, 32), seed=2)]

    def run():
        thresholds, quota = ops.magnitude_thresholds(ws, [0.5])
        w = ws[0].clone()
        mask = ops.magnitude_mask_(w, float(thresholds[0]), int(quota[0, 0]))
        return thresholds, quota, mask, w
    return run


def _case_hard_concrete():
    w, log_alpha = _weight((4, 16)), _weight((4, 16), seed=3)
    noise = ops.sample_hard_concrete_noise(w.cpu(), generator=torch.Generator().manual_seed(4)).to(w.device)

    def run():
        la = log_alpha.clone().requires_grad_()
        out = ops.hard_concrete_gate(w, la, noise)
        out.sum().backward()
        return out.detach(), la.grad
    return run


def _case_sparsegpt():
    x = _weight((64, 16), seed=5)
    hinv, _ = ops.sparsegpt_hinv(2 * x.T @ x / 64)
    w = _weight((8, 16), seed=6)

    def run():
        pruned = w.clone()
        mask = ops.sparsegpt_prune_(pruned, hinv, 0.5, blocksize=8)
        return mask, pruned
    return run


CASES = {
    "nm_mask": (_case_nm_mask, {"robustprune::nm_mask"}),
    "nm_format": (_case_nm_format, {"robustprune::nm_compress", "robustprune::nm_decompress"}),
    "nm_linear": (_case_nm_linear, {"robustprune::nm_linear", "robustprune::nm_linear_backward"}),
    "magnitude": (_case_magnitude, {"robustprune::magnitude_thresholds", "robustprune::magnitude_mask_"}),
    "hard_concrete": (_case_hard_concrete, {"robustprune::hard_concrete_gate",
                                            "robustprune::hard_concrete_gate_backward"}),
    "sparsegpt": (_case_sparsegpt, {"robustprune::sparsegpt_prune_"}),
}


def _assert_same(cpu, triton):
    cpu, triton = (cpu if isinstance(cpu, tuple) else (cpu,)), (triton if isinstance(triton, tuple) else (triton,))
    for a, b in zip(cpu, triton, strict=True):
        b = b.cpu()
        if a.dtype.is_floating_point:  # fp32 throughout: IEEE arithmetic, summation order may differ
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
        else:
            assert torch.equal(b, a)


@needs_interpreter
@pytest.mark.parametrize("case", sorted(CASES))
def test_each_op_launches_its_triton_kernel_under_the_route_and_equals_the_cpu_route(case):
    make, expected = CASES[case]
    cpu, triton, counts = _both_routes(make())
    assert counts["cpu"]["triton"] == {} and set(counts["cpu"]["cpu"]) >= expected  # CPU kernels only
    # the route: no CPU kernel at all (the CPU nm_compress also calls nm_mask; the Triton one needs no mask)
    assert counts["triton"]["cpu"] == {} and set(counts["triton"]["triton"]) == expected
    _assert_same(cpu, triton)


@needs_interpreter
@pytest.mark.parametrize("case", sorted(CASES))
def test_record_devices_keeps_the_devices_each_op_received(case):
    make, expected = CASES[case]
    run = make()
    ops.reset_launch_counts()
    with ops.route("triton"):
        run()  # not recorded: counted only
        assert ops.launch_devices("triton") == {} and set(ops.launch_counts("triton")) == expected
        with ops.record_devices():
            run()
    assert ops.launch_devices("triton") == {op: ["cpu"] for op in expected} and ops.launch_devices("cpu") == {}
    report = ops.launch_report()
    assert report["route"] == "cpu" and report["devices"]["triton"] == ops.launch_devices("triton")
    assert report["launches"]["triton"] == {op: 2 for op in expected}
    ops.reset_launch_counts()
    assert ops.launch_devices("triton") == {} and ops.launch_counts("triton") == {}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_op_launches_its_triton_kernel_on_cuda_tensors(cuda_device, case):
    make, expected = CASES[case]
    cpu = make()()  # the CPU kernels (the interpreter is off on a GPU run: no Triton route here)
    _device["name"] = "cuda"
    try:
        run = make()
        ops.reset_launch_counts()
        with ops.record_devices():
            on_cuda = run()
    finally:
        _device["name"] = "cpu"
    assert ops.launch_counts("cpu") == {} and set(ops.launch_counts("triton")) == expected
    assert ops.launch_devices("triton") == {op: [str(torch.device("cuda", torch.cuda.current_device()))]
                                            for op in expected}
    ops.reset_launch_counts()
    _assert_same(cpu, on_cuda)


@needs_interpreter
def test_the_environment_names_the_route_and_the_log_is_the_report(tmp_path, monkeypatch):
    from robustprune.sparse_ops import backend

    monkeypatch.setenv("ROBUSTPRUNE_ROUTE", "triton")
    assert backend._route_from_environment() == "triton"
    monkeypatch.setenv("ROBUSTPRUNE_ROUTE", "")
    assert backend._route_from_environment() == "cpu"
    monkeypatch.setenv("ROBUSTPRUNE_ROUTE", "gpu")
    with pytest.raises(ValueError, match=r"ROBUSTPRUNE_ROUTE must be one of \['cpu', 'triton'\], got 'gpu'"):
        backend._route_from_environment()
    ops.reset_launch_counts()
    with ops.route("triton"), ops.record_devices():
        ops.nm_mask(torch.randn(4, 8), 2, 4)
    backend._write_launch_log(str(tmp_path / "log.json"))
    ops.reset_launch_counts()
    assert json.loads((tmp_path / "log.json").read_text()) == {
        "route": "cpu", "launches": {"triton": {"robustprune::nm_mask": 1}, "cpu": {}},
        "devices": {"triton": {"robustprune::nm_mask": ["cpu"]}, "cpu": {}}}


@pytest.mark.slow
@needs_interpreter
def test_the_environment_sets_the_route_and_writes_the_launch_log(tmp_path):
    log = tmp_path / "launches.json"
    code = "import torch; from robustprune import ops; ops.nm_mask(torch.randn(4, 8), 2, 4); ops.nm_mask(torch.randn(4, 8), 2, 4)"
    env = dict(os.environ, TRITON_INTERPRET="1", ROBUSTPRUNE_ROUTE="triton", ROBUSTPRUNE_LAUNCH_LOG=str(log))
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)
    assert json.loads(log.read_text()) == {
        "route": "triton", "launches": {"triton": {"robustprune::nm_mask": 2}, "cpu": {}},
        "devices": {"triton": {"robustprune::nm_mask": ["cpu"]}, "cpu": {}}}
    # without the route variable: the CPU kernels, recorded as such
    env.pop("ROBUSTPRUNE_ROUTE")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)
    assert json.loads(log.read_text())["launches"] == {"triton": {}, "cpu": {"robustprune::nm_mask": 2}}
    bad = subprocess.run([sys.executable, "-c", "import robustprune.ops"], env=dict(env, ROBUSTPRUNE_ROUTE="gpu"),
                         capture_output=True, text=True, timeout=300, check=False)
    assert bad.returncode != 0
    assert "ROBUSTPRUNE_ROUTE must be one of ['cpu', 'triton'], got 'gpu'" in bad.stderr


def test_the_route_is_restored_and_checked():
    from robustprune.sparse_ops.backend import triton_route

    with ops.route("triton"):
        assert triton_route()
        with ops.route("cpu"):
            assert not triton_route()
        assert triton_route()
    assert not triton_route()
    with pytest.raises(ValueError, match=r"route must be one of \['cpu', 'triton'\], got 'cuda'"), ops.route("cuda"):
        pass
