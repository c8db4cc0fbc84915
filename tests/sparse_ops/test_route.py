"""``robustprune.ops.route("triton")``: every op with a Triton kernel takes it on CPU tensors (the
interpreter), counted by the launch counters, and gives what the CPU route gives."""

from __future__ import annotations

import pytest
import torch

from robustprune import ops
from robustprune.sparse_ops.backend import triton_interpreter_active

pytestmark = pytest.mark.skipif(not triton_interpreter_active(), reason="needs TRITON_INTERPRET=1 (tests/conftest.py)")


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


def _weight(shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


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
    noise = ops.sample_hard_concrete_noise(w, generator=torch.Generator().manual_seed(4))

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


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_op_launches_its_triton_kernel_under_the_route_and_equals_the_cpu_route(case):
    make, expected = CASES[case]
    cpu, triton, counts = _both_routes(make())
    assert counts["cpu"]["triton"] == {} and set(counts["cpu"]["cpu"]) >= expected  # CPU kernels only
    # the route: no CPU kernel at all (the CPU nm_compress also calls nm_mask; the Triton one needs no mask)
    assert counts["triton"]["cpu"] == {} and set(counts["triton"]["triton"]) == expected
    cpu, triton = (cpu if isinstance(cpu, tuple) else (cpu,)), (triton if isinstance(triton, tuple) else (triton,))
    for a, b in zip(cpu, triton, strict=True):
        if a.dtype.is_floating_point:  # fp32 throughout: IEEE arithmetic, summation order may differ
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
        else:
            assert torch.equal(b, a)


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
