"""The compiled (native, LLVM IR) CPU hard-concrete gate against the eager torch path, and the switch between them.

Bit-identical where torch runs its vector kernels (element counts that are a multiple of 32: torch's loops
step two 16-lane vectors at a time; torch on one thread); elsewhere torch's ``sigmoid`` computes the last
few elements with the C library's ``expf`` and the compiled path may differ there by 1 ulp of ``s``, so
those shapes are compared with the bound that follows.
"""

import contextlib
import math

import numpy as np
import pytest
import torch
from llvmlite import ir

from robustprune.sparse_ops import cpu_threads, hard_concrete_cpu, native
from robustprune.sparse_ops import hard_concrete as hc_module
from robustprune.sparse_ops.hard_concrete import (
    BETA,
    GAMMA,
    ZETA,
    compiled_cpu_available,
    hard_concrete_gate,
    hard_concrete_gate_backward_eager,
    hard_concrete_gate_eager,
    sample_hard_concrete_noise,
)

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
NOISE_DTYPES = [None, torch.float32, torch.bfloat16]
# Element counts that are multiples of 32: torch runs its vector kernels on every element.
ALIGNED_SHAPES = [(32,), (4, 64), (3, 5, 32), (128, 256), (700, 1024)]
RAGGED_SHAPES = [(1,), (37, 53), (5, 7, 3), (1000, 777)]
INT_VIEW = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}


@contextlib.contextmanager
def torch_on_one_thread():
    """torch splits a tensor over its threads at bounds that need not be multiples of 32, each piece
    ending in scalar code; on one thread an aligned tensor runs the vector kernels throughout."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def bits(tensor: torch.Tensor) -> torch.Tensor:
    """Integer bit patterns with every NaN made one value (payloads may differ; NaN must stay NaN)."""
    tensor = torch.where(torch.isnan(tensor), torch.full_like(tensor, math.nan), tensor)
    return tensor.view(INT_VIEW[tensor.dtype])


def assert_bit_equal(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    different = bits(actual) != bits(expected)
    assert not bool(different.any()), (
        f"{int(different.sum())} differ, e.g. {actual[different][:4]} vs {expected[different][:4]}"
    )


def compiled_forward(weight, log_alpha, noise, gamma=GAMMA, zeta=ZETA, beta=BETA):
    out = torch.empty(weight.shape, dtype=weight.dtype)
    return hard_concrete_cpu.gate_forward_into(
        weight.contiguous(), log_alpha.contiguous(), None if noise is None else noise.contiguous(), out,
        gamma, zeta, beta,
    )


def compiled_backward(grad, weight, log_alpha, noise, weight_grad, gamma=GAMMA, zeta=ZETA, beta=BETA):
    grad_weight = torch.empty(weight.shape, dtype=weight.dtype) if weight_grad else None
    grad_log_alpha = torch.empty(log_alpha.shape, dtype=log_alpha.dtype)
    hard_concrete_cpu.gate_backward_into(
        grad, weight.contiguous(), log_alpha.contiguous(),
        None if noise is None else noise.contiguous(), grad_weight, grad_log_alpha, gamma, zeta, beta,
    )
    return grad_weight, grad_log_alpha


def problem(shape, weight_dtype=torch.float32, log_alpha_dtype=torch.float32, noise_dtype=torch.float32,
            seed=0):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(shape, generator=g).to(weight_dtype)
    log_alpha = (torch.randn(shape, generator=g) * 3).to(log_alpha_dtype)  # both clamped ends and the middle
    noise = None if noise_dtype is None else sample_hard_concrete_noise(weight, generator=g).to(noise_dtype)
    grad = torch.randn(shape, generator=g).to(weight_dtype)
    return weight, log_alpha, noise, grad


def both_paths(weight, log_alpha, noise, grad, weight_grad):
    """((out, grad_weight, grad_log_alpha) compiled, the same eager; torch on one thread)."""
    compiled = (compiled_forward(weight, log_alpha, noise),
                *compiled_backward(grad, weight, log_alpha, noise, weight_grad))
    with torch_on_one_thread():
        eager = (hard_concrete_gate_eager(weight, log_alpha, noise),
                 *hard_concrete_gate_backward_eager(grad, weight, log_alpha, noise, GAMMA, ZETA, BETA,
                                                    weight_grad))
    return compiled, eager


def test_compiled_path_is_the_default():
    assert compiled_cpu_available()


@pytest.mark.parametrize("weight_dtype", DTYPES, ids=str)
@pytest.mark.parametrize("log_alpha_dtype", DTYPES, ids=str)
@pytest.mark.parametrize("noise_dtype", NOISE_DTYPES, ids=str)
def test_compiled_equals_eager_bit_for_bit(weight_dtype, log_alpha_dtype, noise_dtype):
    for i, shape in enumerate(ALIGNED_SHAPES[:-1]):
        weight, log_alpha, noise, grad = problem(shape, weight_dtype, log_alpha_dtype, noise_dtype, seed=i)
        for weight_grad in (True, False):
            compiled, eager = both_paths(weight, log_alpha, noise, grad, weight_grad)
            assert_bit_equal(compiled[0], eager[0])
            assert_bit_equal(compiled[2], eager[2])
            if weight_grad:
                assert_bit_equal(compiled[1], eager[1])
            else:
                assert compiled[1] is None and eager[1].shape == (0,)
        assert bool((compiled[2] == 0).any()) and bool((compiled[2] != 0).any())  # clamped and open gates


@pytest.mark.parametrize("noise_dtype", [None, torch.float32], ids=str)
def test_large_inputs_split_over_threads_equal_eager_bit_for_bit(noise_dtype):
    shape = ALIGNED_SHAPES[-1]  # > 2 * PARALLEL_MIN_ELEMENTS: threads share pieces; > CPU_CHUNK eager chunks
    assert math.prod(shape) > 2 * hard_concrete_cpu.PARALLEL_MIN_ELEMENTS
    weight, log_alpha, noise, grad = problem(shape, noise_dtype=noise_dtype, seed=9)
    compiled, eager = both_paths(weight, log_alpha, noise, grad, True)
    for got, want in zip(compiled, eager):
        assert_bit_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_ragged_shapes_agree_within_one_ulp_of_the_sigmoid(dtype):
    """Where torch's scalar tail computes ``s``: ``|out - eager| <= |w| 2^-22 + ulp(out)``, the same for the
    gradients with ``|g w| (zeta - gamma) / beta`` and ``|g|`` in place of ``|w|``, and all else exact."""
    for i, shape in enumerate(RAGGED_SHAPES):
        weight, log_alpha, noise, grad = problem(shape, dtype, dtype, torch.float32, seed=20 + i)
        compiled, eager = both_paths(weight, log_alpha, noise, grad, True)
        w, g = weight.float(), grad.float()
        scales = (w.abs(), g.abs(), (g * w).abs() * (ZETA - GAMMA) / BETA)
        for got, want, scale in zip(compiled, eager, scales):
            bound = scale * 2.0**-22 + want.float().abs() * torch.finfo(dtype).eps
            assert bool(((got.float() - want.float()).abs() <= bound).all())
            assert (bits(got) != bits(want)).float().mean() < 0.01  # the tail elements only


def test_edge_values_bit_for_bit():
    """Saturated, infinite, NaN and signed-zero inputs, and gates exactly on the clamp's bounds."""
    specials = torch.tensor([0.0, -0.0, 1e-40, -1e-40, 20.0, -20.0, 88.7, -88.7, 100.0, -100.0, 103.9,
                             -103.9, 104.0, -104.0, 104.1, -104.1, 150.0, -150.0, 1e30, -1e30, math.inf,
                             -math.inf, math.nan])
    # log_alpha whose stretched gate gamma + (zeta - gamma) s is exactly 0 or 1 (the clamp's bounds, where
    # the gradient still passes), found among the fp32 neighbours of logit(-gamma / (zeta - gamma)) and
    # logit((1 - gamma) / (zeta - gamma)).
    bounds = []
    for target in (-GAMMA / (ZETA - GAMMA), (1 - GAMMA) / (ZETA - GAMMA)):
        centre = torch.tensor([math.log(target / (1 - target))]).view(torch.int32)
        candidates = (centre + torch.arange(-20000, 20000, dtype=torch.int32)).view(torch.float32)
        with torch_on_one_thread():
            stretched = torch.sigmoid(candidates).mul_(ZETA - GAMMA).add_(GAMMA)
        on_bound = candidates[(stretched == 0) | (stretched == 1)]
        assert on_bound.numel() > 0
        bounds.append(on_bound[:8])
    log_alpha = torch.cat([specials, *bounds])
    noise_values = torch.tensor([0.0, math.inf, -math.inf, math.nan, 5.0])
    n = log_alpha.numel() * noise_values.numel()
    pad = -n % 32  # aligned: torch's vector kernels throughout
    la = torch.cat([log_alpha.repeat_interleave(noise_values.numel()), torch.zeros(pad)])
    noise = torch.cat([noise_values.repeat(log_alpha.numel()), torch.zeros(pad)])
    weight = torch.linspace(-2, 2, la.numel())
    grad = torch.linspace(3, -1, la.numel())
    for noise_or_none in (None, noise):
        compiled, eager = both_paths(weight, la, noise_or_none, grad, True)
        for got, want in zip(compiled, eager):
            assert_bit_equal(got, want)
    # On the bounds the eval gate's gradient passes (torch.clamp's convention): not zero.
    on_bounds = torch.cat(bounds)
    ones = torch.ones_like(on_bounds)
    assert bool((compiled_backward(ones, ones, on_bounds, None, False)[1] != 0).all())


def test_sigmoid_is_torchs_bit_for_bit():
    """Every 4099th fp32 bit pattern (all exponents, both signs) and the special values."""
    patterns = torch.arange(0, 2**32, 4099, dtype=torch.int64)
    x = torch.cat([(patterns - 2**31).to(torch.int32).view(torch.float32),
                   torch.tensor([0.0, -0.0, math.inf, -math.inf, math.nan, 104.0, -104.0, 100.0, -100.0])])
    x = torch.cat([x, torch.zeros(-x.numel() % 32)])

    out = torch.empty_like(x)
    elementwise("test_sigmoid", "f32", "f32", hard_concrete_cpu._sigmoid)(x, out)
    with torch_on_one_thread():
        assert_bit_equal(out, torch.sigmoid(x))


def elementwise(name, source, target, body=lambda builder, value: value):
    """``dst[i] = body(src[i])`` compiled from the kernel's own load / store (``source`` / ``target``
    storage) and IR ``body``; returns ``run(src, dst)`` over contiguous tensors."""
    module = native.new_module(name)
    function = ir.Function(module, native.KERNEL_TYPE, "apply")
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    arguments, lo, hi = function.args
    read = native.argument_reader(builder, arguments)
    pointer = {"f32": native.F32.as_pointer(), "f16": native.I16.as_pointer(), "bf16": native.I16.as_pointer()}
    src, dst = read(0, pointer[source]), read(1, pointer[target])
    with native.loop(builder, lo, hi) as i:
        value = hard_concrete_cpu._load(builder, src, i, source)
        hard_concrete_cpu._store(builder, dst, i, body(builder, value), target)
    builder.ret_void()
    address = native.load(module).address("apply")

    def run(src_tensor, dst_tensor):
        block = np.array([src_tensor.data_ptr(), dst_tensor.data_ptr()], dtype=np.int64)
        cpu_threads.run_split(address, block, src_tensor.numel(), 1 << 16)

    return run


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_conversions_match_torch_on_every_bit_pattern(dtype):
    """Widening: all 65536 patterns. Narrowing: every value, the midpoints to its neighbours (ties go to
    even) and the fp32 values just either side of them, including subnormals, overflow and NaN."""
    storage = hard_concrete_cpu.FORMATS[dtype]
    every = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)
    widened = torch.empty(every.shape)
    elementwise(f"test_widen_{storage}", storage, "f32")(every, widened)
    assert_bit_equal(widened, every.float())

    finite = every.float()
    finite = finite[torch.isfinite(finite)].unique()  # ascending, -0 and +0 merged
    midpoints = (finite[:-1].double() + finite[1:].double()) / 2  # exact in fp32 for fp16 and bf16
    largest = finite[-1].double()
    overflow_midpoint = largest + (largest - finite[-2].double()) / 2  # halfway to the next power of two
    midpoints = torch.cat([midpoints, torch.tensor([overflow_midpoint, -overflow_midpoint])]).float()
    near = torch.cat([midpoints, torch.nextafter(midpoints, torch.tensor(math.inf)),
                      torch.nextafter(midpoints, torch.tensor(-math.inf))])
    values = torch.cat([widened, near, torch.tensor([math.inf, -math.inf, math.nan, 1e30, -1e-30])])
    narrowed = torch.empty(values.shape, dtype=dtype)
    elementwise(f"test_narrow_{storage}", "f32", storage)(values, narrowed)
    assert_bit_equal(narrowed, values.to(dtype))


def test_noise_none_weight_grad_false_and_non_contiguous_inputs():
    weight, log_alpha, noise, grad = problem((64, 48), seed=4)
    t_weight, t_log_alpha, t_noise, t_grad = (x.t() for x in (weight, log_alpha, noise, grad))
    assert not t_weight.is_contiguous()
    for noise_or_none in (None, t_noise):
        out = torch.ops.robustprune.hard_concrete_gate(t_weight, t_log_alpha, noise_or_none, GAMMA, ZETA, BETA)
        contiguous_noise = None if noise_or_none is None else noise_or_none.contiguous()
        with torch_on_one_thread():
            expected = hard_concrete_gate_eager(t_weight.contiguous(), t_log_alpha.contiguous(), contiguous_noise)
        assert_bit_equal(out, expected)
        for weight_grad in (True, False):
            got = torch.ops.robustprune.hard_concrete_gate_backward(
                t_grad, t_weight, t_log_alpha, noise_or_none, GAMMA, ZETA, BETA, weight_grad)
            with torch_on_one_thread():
                want = hard_concrete_gate_backward_eager(
                    t_grad.contiguous(), t_weight.contiguous(), t_log_alpha.contiguous(), contiguous_noise,
                    GAMMA, ZETA, BETA, weight_grad)
            for a, b in zip(got, want):
                assert_bit_equal(a, b)
            assert got[0].shape == ((48, 64) if weight_grad else (0,))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_expanded_scalar_gradient_is_read_without_materialising(dtype):
    """``out.sum().backward()`` hands the backward a scalar expanded to the weight's shape (strides 0)."""
    weight, log_alpha, noise, _ = problem((64, 96), dtype, dtype, seed=10)
    for value in (1.0, -0.3):
        expanded = torch.tensor(value, dtype=dtype).expand(weight.shape)
        assert isinstance(hard_concrete_cpu.upstream_gradient(expanded), float)  # the register path
        for noise_or_none in (None, noise):
            for weight_grad in (True, False):
                got = compiled_backward(expanded, weight, log_alpha, noise_or_none, weight_grad)
                with torch_on_one_thread():
                    want = hard_concrete_gate_backward_eager(expanded.contiguous(), weight, log_alpha,
                                                             noise_or_none, GAMMA, ZETA, BETA, weight_grad)
                assert_bit_equal(got[1], want[1])
                if weight_grad:
                    assert_bit_equal(got[0], want[0])
    partly_expanded = torch.randn(1, 96).to(dtype).expand(64, 96)  # not a scalar: made contiguous
    got = compiled_backward(partly_expanded, weight, log_alpha, noise, False)[1]
    with torch_on_one_thread():
        want = hard_concrete_gate_backward_eager(partly_expanded.contiguous(), weight, log_alpha, noise,
                                                 GAMMA, ZETA, BETA, False)[1]
    assert_bit_equal(got, want)
    la = log_alpha.float().requires_grad_()
    hard_concrete_gate(weight, la, noise).sum().backward()  # through autograd
    with torch_on_one_thread():
        want = hard_concrete_gate_backward_eager(torch.ones_like(weight), weight, log_alpha.float(), noise,
                                                 GAMMA, ZETA, BETA, False)[1]
    assert_bit_equal(la.grad, want)


def test_other_constants_reach_the_kernels():
    weight, log_alpha, noise, grad = problem((8, 32), seed=5)
    constants = (-0.3, 1.05, 0.4)
    out = compiled_forward(weight, log_alpha, noise, *constants)
    grads = compiled_backward(grad, weight, log_alpha, noise, True, *constants)
    assert not torch.equal(out, compiled_forward(weight, log_alpha, noise))
    with torch_on_one_thread():
        assert_bit_equal(out, hard_concrete_gate_eager(weight, log_alpha, noise, *constants))
        expected = hard_concrete_gate_backward_eager(grad, weight, log_alpha, noise, *constants, True)
    for a, b in zip(grads, expected):
        assert_bit_equal(a, b)


def test_empty_tensors():
    empty = torch.empty(0, 8)
    assert compiled_forward(empty, empty, empty).shape == (0, 8)
    grad_weight, grad_log_alpha = compiled_backward(empty, empty, empty, None, True)
    assert grad_weight.shape == grad_log_alpha.shape == (0, 8)
    for path in ("compiled", "eager"):
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("ROBUSTPRUNE_HARD_CONCRETE_CPU", path)
            with pytest.raises(ValueError, match="weight is empty"):
                hard_concrete_gate(empty, empty)


def test_forced_eager_path_never_calls_the_kernels(monkeypatch):
    monkeypatch.setenv("ROBUSTPRUNE_HARD_CONCRETE_CPU", "eager")
    assert not compiled_cpu_available()

    def refuse(*args):
        raise AssertionError("a compiled kernel ran although ROBUSTPRUNE_HARD_CONCRETE_CPU=eager")

    monkeypatch.setattr(hard_concrete_cpu, "gate_forward_into", refuse)
    monkeypatch.setattr(hard_concrete_cpu, "gate_backward_into", refuse)
    weight, log_alpha, noise, _ = problem((9, 16), seed=6)
    la = log_alpha.clone().requires_grad_()
    out = hard_concrete_gate(weight, la, noise)
    out.sum().backward()
    assert_bit_equal(out, hard_concrete_gate_eager(weight, log_alpha, noise))
    assert la.grad is not None and bool((la.grad != 0).any())


def test_without_the_compiled_module_the_eager_path_runs(monkeypatch):
    monkeypatch.setattr(hc_module, "_compiled_cpu_module", lambda: None)
    assert not compiled_cpu_available()
    monkeypatch.setattr(hard_concrete_cpu, "gate_forward_into", None)  # would fail if called
    weight, log_alpha, noise, _ = problem((5, 16), seed=7)
    assert_bit_equal(hard_concrete_gate(weight, log_alpha, noise), hard_concrete_gate_eager(weight, log_alpha, noise))


def test_unknown_switch_value_is_refused(monkeypatch):
    monkeypatch.setenv("ROBUSTPRUNE_HARD_CONCRETE_CPU", "fast")
    with pytest.raises(ValueError, match="ROBUSTPRUNE_HARD_CONCRETE_CPU must be 'eager' or 'compiled'"):
        hard_concrete_gate(torch.ones(2, 8), torch.zeros(2, 8))
    monkeypatch.setenv("ROBUSTPRUNE_HARD_CONCRETE_CPU", " Compiled ")
    assert compiled_cpu_available()
    assert torch.equal(hard_concrete_gate(torch.ones(2, 8), torch.zeros(2, 8)), torch.full((2, 8), 0.5))


def test_threads_and_forked_children():
    """Large inputs split over threads; concurrent calls and a forked child after a call still work."""
    import multiprocessing
    from concurrent.futures import ThreadPoolExecutor

    weight, log_alpha, noise, grad = problem((600, 1024), seed=8)
    expected = compiled_forward(weight, log_alpha, noise)
    with torch_on_one_thread():
        assert_bit_equal(expected, hard_concrete_gate_eager(weight, log_alpha, noise))
    expected_grad = compiled_backward(grad, weight, log_alpha, noise, False)[1]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: compiled_forward(weight, log_alpha, noise), range(6)))
    assert all(torch.equal(out, expected) for out in results)

    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_gate_matches, args=(weight, log_alpha, noise, grad, expected,
                                                              expected_grad, queue))
    child.start()
    child.join(120)
    assert child.exitcode == 0
    assert queue.get(timeout=10)


def _child_gate_matches(weight, log_alpha, noise, grad, expected, expected_grad, queue):
    # Only the compiled kernels and numpy here: torch's own GNU OpenMP ops can hang in a forked child of a
    # process that already ran them in parallel, whatever robustprune does.
    out = torch.ops.robustprune.hard_concrete_gate(weight, log_alpha, noise, GAMMA, ZETA, BETA)
    grads = torch.ops.robustprune.hard_concrete_gate_backward(grad, weight, log_alpha, noise, GAMMA, ZETA, BETA,
                                                              False)
    queue.put(bool(np.array_equal(out.numpy(), expected.numpy()))
              and bool(np.array_equal(grads[1].numpy(), expected_grad.numpy())))
