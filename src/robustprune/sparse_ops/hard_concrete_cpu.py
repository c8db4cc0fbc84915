"""Compiled CPU hard-concrete gate (LLVM IR): the fast CPU path of ``robustprune::hard_concrete_gate`` and
``robustprune::hard_concrete_gate_backward``.

Imported lazily by :mod:`robustprune.sparse_ops.hard_concrete` on the first CPU call; when llvmlite is not
importable, or ``ROBUSTPRUNE_HARD_CONCRETE_CPU=eager`` is set, the ops run their chunked torch path instead.
One pass per direction: the forward reads weight, log_alpha (and noise) and writes the gated weight; the
backward reads the upstream gradient, weight, log_alpha (and noise) and writes the log_alpha gradient (and
the weight's, when requested). Each is one scalar element loop written in LLVM IR (:func:`kernel`), which
LLVM's loop vectoriser turns into 16-lane fp32 code on AVX-512.

Numerics: the same fp32 operations in the same order as the eager path (each a separately rounded fp32
operation, no fused multiply-add, no ``fastmath``), and ``sigmoid`` computed the way torch's vectorised CPU
kernel does (``1 / (1 + exp(0 - x))`` with SLEEF's ``expf_u10`` algorithm, FMA included: equal to
``torch.sigmoid`` on all 2^32 fp32 inputs). So results are bit-identical to the eager path wherever torch
ran its vector kernel; torch computes the last < 32 elements of each loop (a chunk or a thread's share)
with the C library's ``expf``, where ``s`` may differ by 1 ulp (so ``out`` by ``|w| 2^-22`` at most).
fp16 and bf16 inputs are widened to fp32 exactly (fp16 by LLVM's ``fpext half``: F16C instructions on
x86-64-v3 and later), results narrowed with round-to-nearest-even (fp16: ``fptrunc``; bf16: the integer
rounding torch uses), so only NaN payloads can differ from torch. An upstream gradient expanded from a
scalar (``out.sum().backward()``) is passed as that scalar, not materialised.

Threads: large inputs are split over ``torch.get_num_threads()`` threads (torch's OpenMP team, or Python
threads), none of them touching Python between pieces
(:func:`robustprune.sparse_ops.cpu_threads.run_split`). One kernel per direction, noise or not,
and combination of dtypes, compiled on first use and cached on disk (:mod:`robustprune.sparse_ops.native`).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from llvmlite import ir

from robustprune.sparse_ops import native
from robustprune.sparse_ops.cpu_threads import run_split
from robustprune.sparse_ops.native import F32, I16, I32

# Threads share pieces of at least this many elements; below twice that one thread does it all. Measured
# on 2 cores: a second thread slows a 384 x 384 gate (147k elements, ~90 us alone) by a third (the hand-off
# costs tens of us) and gains ~10 % on 1536 x 384.
PARALLEL_MIN_ELEMENTS = 1 << 17

# How each dtype is stored: fp32 as it is; fp16 / bf16 as 16-bit patterns, widened and narrowed in the
# kernel. "scalar": an upstream gradient expanded from one value, passed as that value.
FORMATS = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}

# SLEEF's expf_u10 (sleefsimdsp.c, xexpf): Cody-Waite reduction by ln 2, degree-6 polynomial, scaling by
# 2^q in two halves; below -104 the result is 0, above 100 it is inf.
_R_LN2 = 1.442695040888963407359924681001892137426645954152985934135449406931
_L2U = 0.693145751953125
_L2L = 1.428606765330187045e-06
_EXP_POLY = (
    0.000198527617612853646278381,
    0.00139304355252534151077271,
    0.00833336077630519866943359,
    0.0416664853692054748535156,
    0.166666671633720397949219,
    0.5,
)


def _f32(value: float) -> ir.Constant:
    return ir.Constant(F32, float(np.float32(value)))


def _load(builder: ir.IRBuilder, array: ir.Value, index: ir.Value, storage: str) -> ir.Value:
    """``array[index]`` widened exactly to fp32 (``array`` is the fp32 value itself for "scalar")."""
    if storage == "scalar":
        return array
    value = builder.load(builder.gep(array, [index], inbounds=True))
    if storage == "f32":
        return value
    if storage == "f16":
        return builder.fpext(builder.bitcast(value, ir.HalfType()), F32)
    return builder.bitcast(builder.shl(builder.zext(value, I32), ir.Constant(I32, 16)), F32)


def _store(builder: ir.IRBuilder, array: ir.Value, index: ir.Value, value: ir.Value, storage: str) -> None:
    """``array[index] = value`` rounded to nearest-even into the array's storage (see :func:`_load`)."""
    if storage == "f16":
        value = builder.bitcast(builder.fptrunc(value, ir.HalfType()), I16)
    elif storage == "bf16":
        # torch's bf16 rounding: add 0x7FFF plus the lowest kept bit, keep the top half; NaN stays NaN.
        bits = builder.bitcast(value, I32)
        lowest_kept = builder.and_(builder.lshr(bits, ir.Constant(I32, 16)), ir.Constant(I32, 1))
        rounded = builder.add(bits, builder.add(lowest_kept, ir.Constant(I32, 0x7FFF)))
        narrowed = builder.trunc(builder.lshr(rounded, ir.Constant(I32, 16)), I16)
        value = builder.select(builder.fcmp_unordered("uno", value, value), ir.Constant(I16, 0xFFFF), narrowed)
    builder.store(value, builder.gep(array, [index], inbounds=True))


def _sleef_expf(builder, d):
    """IR of SLEEF's expf_u10 of the fp32 value ``d`` (FMA where SLEEF's AVX2/AVX-512 builds use it)."""
    rint = native.declare(builder.module, "llvm.rint.f32", F32, F32)
    # The rounded quotient comes from d clamped to [-104, 100] (NaN -> -104): the conversion to int is then
    # always defined, and d outside that range is overridden below anyway.
    low, high = _f32(-104.0), _f32(100.0)
    clamped = builder.select(builder.fcmp_ordered(">=", d, low), d, low)
    clamped = builder.select(builder.fcmp_ordered("<=", clamped, high), clamped, high)
    q = builder.fptosi(builder.call(rint, [builder.fmul(clamped, _f32(_R_LN2))]), I32)
    q_float = builder.sitofp(q, F32)
    s = builder.fma(q_float, _f32(-_L2U), d)
    s = builder.fma(q_float, _f32(-_L2L), s)
    u = _f32(_EXP_POLY[0])
    for coefficient in _EXP_POLY[1:]:
        u = builder.fma(u, s, _f32(coefficient))
    u = builder.fadd(_f32(1.0), builder.fma(builder.fmul(s, s), u, s))

    def pow2(exponent):
        shifted = builder.shl(builder.add(exponent, ir.Constant(I32, 0x7F)), ir.Constant(I32, 23))
        return builder.bitcast(shifted, F32)

    half_q = builder.ashr(q, ir.Constant(I32, 1))
    u = builder.fmul(builder.fmul(u, pow2(half_q)), pow2(builder.sub(q, half_q)))
    u = builder.select(builder.fcmp_ordered("<", d, low), _f32(0.0), u)
    return builder.select(builder.fcmp_ordered("<", high, d), _f32(float("inf")), u)


def _sigmoid(builder: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """fp32 ``1 / (1 + exp(0 - x))``, operation for operation as torch's vectorised CPU ``sigmoid``."""
    e = _sleef_expf(builder, builder.fsub(_f32(0.0), x))
    return builder.fdiv(_f32(1.0), builder.fadd(e, _f32(1.0)))


def _clamp01(builder: ir.IRBuilder, x: ir.Value) -> ir.Value:
    # Compare-and-select (not min/max) so that NaN stays NaN, as in torch.clamp.
    x = builder.select(builder.fcmp_ordered("<", x, _f32(0.0)), _f32(0.0), x)
    return builder.select(builder.fcmp_ordered(">", x, _f32(1.0)), _f32(1.0), x)


# Entries of a kernel's int64 argument block: arrays (addresses), then fp32 constants (their bit patterns).
FORWARD_ARGUMENTS = ("weight", "log_alpha", "noise", "out", "stretch", "gamma", "beta")
BACKWARD_ARGUMENTS = ("grad", "weight", "log_alpha", "noise", "grad_weight", "grad_log_alpha", "stretch", "gamma",
                      "beta", "scale")
_CONSTANTS = ("stretch", "gamma", "beta", "scale")


@functools.cache
def kernel(backward: bool, storage: tuple[tuple[str, str], ...]) -> int:
    """Address of the compiled element loop ``gate(arguments, lo, hi)`` over elements ``lo .. hi-1``.

    ``storage`` pairs each array of :data:`FORWARD_ARGUMENTS` / :data:`BACKWARD_ARGUMENTS` that is present
    with its storage ("f32", "f16", "bf16"; the upstream gradient also "scalar"); a missing ``noise`` is the
    deterministic (eval) gate, a missing ``grad_weight`` skips the weight's gradient. Per element, the
    same fp32 operations in the same order as the eager path:

    forward: ``s = sigmoid(log_alpha)`` (with noise: ``sigmoid((noise + log_alpha) / beta)``);
    ``out = weight * clamp01(s * stretch + gamma)``.
    backward: ``grad_log_alpha = ((g * w) * (1 - s)) * s * scale`` where ``0 <= s * stretch + gamma <= 1``,
    else 0 (torch.clamp passes gradient at the bounds, NaN passes none); ``grad_weight = clamp01(...) * g``.
    """
    names = BACKWARD_ARGUMENTS if backward else FORWARD_ARGUMENTS
    formats = dict(storage)
    tag = "_".join(f"{name}-{form}" for name, form in storage)
    module = native.new_module(f"hard_concrete_{'backward' if backward else 'forward'}_{tag}")
    function = ir.Function(module, native.KERNEL_TYPE, "gate")
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    arguments, lo, hi = function.args
    read = native.argument_reader(builder, arguments)
    values = {}
    for position, name in enumerate(names):
        if name in _CONSTANTS or formats.get(name) == "scalar":
            values[name] = builder.bitcast(builder.trunc(read(position), I32), F32)
        elif name in formats:
            values[name] = read(position, (F32 if formats[name] == "f32" else I16).as_pointer())

    def load(name, index):
        return _load(builder, values[name], index, formats[name])

    with native.loop(builder, lo, hi) as i:
        if "noise" in formats:
            s = _sigmoid(builder, builder.fdiv(builder.fadd(load("noise", i), load("log_alpha", i)), values["beta"]))
        else:
            s = _sigmoid(builder, load("log_alpha", i))
        # Two roundings, as the eager path's mul_ then add_ (LLVM fuses nothing without fast-math flags).
        stretched = builder.fadd(builder.fmul(s, values["stretch"]), values["gamma"])
        if not backward:
            _store(builder, values["out"], i, builder.fmul(load("weight", i), _clamp01(builder, stretched)),
                   formats["out"])
        else:
            g = load("grad", i)
            # torch.ops.aten.sigmoid_backward(g * w, s) = (g * w * (1 - s)) * s
            dsigmoid = builder.fmul(builder.fmul(builder.fmul(g, load("weight", i)), builder.fsub(_f32(1.0), s)), s)
            inside = builder.and_(builder.fcmp_ordered(">=", stretched, _f32(0.0)),
                                  builder.fcmp_ordered("<=", stretched, _f32(1.0)))
            _store(builder, values["grad_log_alpha"], i,
                   builder.select(inside, builder.fmul(dsigmoid, values["scale"]), _f32(0.0)),
                   formats["grad_log_alpha"])
            if "grad_weight" in formats:
                _store(builder, values["grad_weight"], i, builder.fmul(_clamp01(builder, stretched), g),
                       formats["grad_weight"])
    builder.ret_void()
    return native.load(module).address("gate")


def _float_bits(value: float) -> int:
    return int(np.float32(value).view(np.int32))


def _constants(gamma: float, zeta: float, beta: float, noise: bool) -> dict[str, int]:
    """fp32 constants (as bit patterns) as the eager path's torch ops round their Python-float operands."""
    scale = (zeta - gamma) / (beta if noise else 1.0)
    return {"stretch": _float_bits(zeta - gamma), "gamma": _float_bits(gamma), "beta": _float_bits(beta),
            "scale": _float_bits(scale)}


def _run(backward: bool, arrays: dict[str, torch.Tensor | float | None], constants: dict[str, int],
         elements: int) -> None:
    """Fill the argument block for the present ``arrays`` (a float: a scalar upstream gradient) and run."""
    names = BACKWARD_ARGUMENTS if backward else FORWARD_ARGUMENTS
    storage, block = [], []
    for name in names:
        array = arrays.get(name)
        if name in _CONSTANTS:
            block.append(constants[name])
        elif array is None:
            block.append(0)
        elif isinstance(array, float):
            storage.append((name, "scalar"))
            block.append(_float_bits(array))
        else:
            storage.append((name, FORMATS[array.dtype]))
            block.append(array.data_ptr())
    run_split(kernel(backward, tuple(storage)), np.array(block, dtype=np.int64), elements,
                     PARALLEL_MIN_ELEMENTS)


def upstream_gradient(grad: torch.Tensor) -> torch.Tensor | float:
    """The one value of a gradient expanded from a scalar (all strides 0: what ``out.sum().backward()``
    hands the backward), which the kernel then reads from a register instead of memory; any other
    gradient as a contiguous tensor."""
    if grad.numel() > 0 and not any(grad.stride()):
        return float(grad.reshape(-1)[0].float().item())  # fp16/bf16 widen exactly
    return grad.contiguous()


def gate_forward_into(
    weight: torch.Tensor,
    log_alpha: torch.Tensor,
    noise: torch.Tensor | None,
    out: torch.Tensor,
    gamma: float,
    zeta: float,
    beta: float,
) -> torch.Tensor:
    """Write ``weight * z`` into ``out`` (contiguous CPU tensors of one shape; ``out`` has the weight's
    dtype) and return it. Same formulas as :func:`robustprune.sparse_ops.hard_concrete.hard_concrete_gate`."""
    arrays = {"weight": weight, "log_alpha": log_alpha, "noise": noise, "out": out}
    _run(False, arrays, _constants(gamma, zeta, beta, noise is not None), weight.numel())
    return out


def gate_backward_into(
    grad: torch.Tensor,
    weight: torch.Tensor,
    log_alpha: torch.Tensor,
    noise: torch.Tensor | None,
    grad_weight: torch.Tensor | None,
    grad_log_alpha: torch.Tensor,
    gamma: float,
    zeta: float,
    beta: float,
) -> None:
    """Write the gradients of the gate for the upstream ``grad`` into ``grad_log_alpha`` (log_alpha's
    dtype) and, unless it is None, ``grad_weight`` (the weight's dtype). All contiguous CPU tensors of one
    shape, except ``grad``, which may have any strides (see :func:`upstream_gradient`)."""
    arrays = {"grad": upstream_gradient(grad), "weight": weight, "log_alpha": log_alpha, "noise": noise,
              "grad_weight": grad_weight, "grad_log_alpha": grad_log_alpha}
    _run(True, arrays, _constants(gamma, zeta, beta, noise is not None), weight.numel())
