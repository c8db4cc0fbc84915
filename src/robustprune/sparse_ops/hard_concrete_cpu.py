"""Compiled CPU hard-concrete gate (numba): the fast CPU path of ``robustprune::hard_concrete_gate`` and
``robustprune::hard_concrete_gate_backward``.

Imported lazily by :mod:`robustprune.sparse_ops.hard_concrete` on the first CPU call; when numba is not
importable, or ``ROBUSTPRUNE_HARD_CONCRETE_CPU=eager`` is set, the ops run their chunked torch path instead.
One pass per direction: the forward reads weight, log_alpha (and noise) and writes the gated weight; the
backward reads the upstream gradient, weight, log_alpha (and noise) and writes the log_alpha gradient (and
the weight's, when requested). The element loops are plain numba loops that LLVM vectorises (16 fp32
lanes on AVX-512); the few operations numba cannot express are LLVM intrinsics (:func:`load_f32`,
:func:`store_f32`, :func:`sigmoid_f32`).

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

Threads: the kernels release the GIL (``nogil``) and large inputs are split over
``torch.get_num_threads()`` threads (torch's OpenMP team, or Python threads:
:mod:`robustprune.sparse_ops.cpu_threads`). Machine code is
cached on disk (``cache=True``), one specialisation per combination of dtypes, compiled on first use.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from llvmlite import ir
from numba.core import cgutils, types
from numba.core.extending import intrinsic

from robustprune.sparse_ops.cpu_threads import run_split

# Threads share pieces of at least this many elements; below twice that one thread does it all. Measured
# on 2 cores: a second thread slows a 384 x 384 gate (147k elements, ~90 us alone) by a third (the hand-off
# costs tens of us) and gains ~10 % on 1536 x 384.
PARALLEL_MIN_ELEMENTS = 1 << 17

# numpy views the kernels see: fp16 as int16 and bf16 as uint16, so that numba specialises the loads and
# stores on the storage format (it has no 16-bit float arithmetic).
_STORAGE_VIEW = {torch.float32: None, torch.float16: np.int16, torch.bfloat16: np.uint16}

_F32 = ir.FloatType()
_I32 = ir.IntType(32)
_I16 = ir.IntType(16)

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
    return ir.Constant(_F32, float(np.float32(value)))


def _element_pointer(context, builder, array_type, array_value, index):
    array = context.make_array(array_type)(context, builder, array_value)
    # In bounds by construction (the callers' loops); no wrap-around or bounds check, so LLVM vectorises.
    return builder.gep(array.data, [index], inbounds=True)


@intrinsic
def load_f32(typingctx, array, index):
    """``array[index]`` widened exactly to fp32: float32, int16 (fp16 bits) or uint16 (bf16 bits). An fp32
    scalar in place of the array is every element's value (a broadcast upstream gradient)."""
    if array == types.float32:
        return types.float32(array, types.int64), lambda context, builder, sig, args: args[0]
    if not isinstance(array, types.Array) or array.dtype not in (types.float32, types.int16, types.uint16):
        return None

    def codegen(context, builder, sig, args):
        value = builder.load(_element_pointer(context, builder, sig.args[0], args[0], args[1]))
        if sig.args[0].dtype == types.float32:
            return value
        if sig.args[0].dtype == types.int16:
            return builder.fpext(builder.bitcast(value, ir.HalfType()), _F32)
        return builder.bitcast(builder.shl(builder.zext(value, _I32), ir.Constant(_I32, 16)), _F32)

    return types.float32(array, types.int64), codegen


@intrinsic
def store_f32(typingctx, array, index, value):
    """``array[index] = value`` rounded to nearest-even into the array's format (see :func:`load_f32`)."""
    if array.dtype not in (types.float32, types.int16, types.uint16) or value != types.float32:
        return None

    def codegen(context, builder, sig, args):
        pointer = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        value = args[2]
        if sig.args[0].dtype == types.int16:
            value = builder.bitcast(builder.fptrunc(value, ir.HalfType()), _I16)
        elif sig.args[0].dtype == types.uint16:
            # torch's bf16 rounding: add 0x7FFF plus the lowest kept bit, keep the top half; NaN stays NaN.
            bits = builder.bitcast(value, _I32)
            lowest_kept = builder.and_(builder.lshr(bits, ir.Constant(_I32, 16)), ir.Constant(_I32, 1))
            rounded = builder.add(bits, builder.add(lowest_kept, ir.Constant(_I32, 0x7FFF)))
            narrowed = builder.trunc(builder.lshr(rounded, ir.Constant(_I32, 16)), _I16)
            is_nan = builder.fcmp_unordered("uno", value, value)
            value = builder.select(is_nan, ir.Constant(_I16, 0xFFFF), narrowed)
        builder.store(value, pointer)
        return context.get_dummy_value()

    return types.void(array, types.int64, types.float32), codegen


def _sleef_expf(builder, d):
    """IR of SLEEF's expf_u10 of the fp32 value ``d`` (FMA where SLEEF's AVX2/AVX-512 builds use it)."""
    module = builder.module
    rint = cgutils.get_or_insert_function(module, ir.FunctionType(_F32, [_F32]), "llvm.rint.f32")
    # The rounded quotient comes from d clamped to [-104, 100] (NaN -> -104): the conversion to int is then
    # always defined, and d outside that range is overridden below anyway.
    low, high = _f32(-104.0), _f32(100.0)
    clamped = builder.select(builder.fcmp_ordered(">=", d, low), d, low)
    clamped = builder.select(builder.fcmp_ordered("<=", clamped, high), clamped, high)
    q = builder.fptosi(builder.call(rint, [builder.fmul(clamped, _f32(_R_LN2))]), _I32)
    q_float = builder.sitofp(q, _F32)
    s = builder.fma(q_float, _f32(-_L2U), d)
    s = builder.fma(q_float, _f32(-_L2L), s)
    u = _f32(_EXP_POLY[0])
    for coefficient in _EXP_POLY[1:]:
        u = builder.fma(u, s, _f32(coefficient))
    u = builder.fadd(_f32(1.0), builder.fma(builder.fmul(s, s), u, s))

    def pow2(exponent):
        shifted = builder.shl(builder.add(exponent, ir.Constant(_I32, 0x7F)), ir.Constant(_I32, 23))
        return builder.bitcast(shifted, _F32)

    half_q = builder.ashr(q, ir.Constant(_I32, 1))
    u = builder.fmul(builder.fmul(u, pow2(half_q)), pow2(builder.sub(q, half_q)))
    u = builder.select(builder.fcmp_ordered("<", d, low), _f32(0.0), u)
    return builder.select(builder.fcmp_ordered("<", high, d), _f32(float("inf")), u)


@intrinsic
def sigmoid_f32(typingctx, x):
    """fp32 ``1 / (1 + exp(0 - x))``, operation for operation as torch's vectorised CPU ``sigmoid``."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        e = _sleef_expf(builder, builder.fsub(_f32(0.0), args[0]))
        return builder.fdiv(_f32(1.0), builder.fadd(e, _f32(1.0)))

    return types.float32(x), codegen


_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)


@numba.njit(cache=True, nogil=True, inline="always")
def _stretched(s, stretch, gamma):
    return s * stretch + gamma  # two roundings, as the eager path's mul_ then add_


@numba.njit(cache=True, nogil=True, inline="always")
def _clamp01(x):
    # Written out (not min/max) so that NaN stays NaN, as in torch.clamp, whatever numba's min/max do.
    x = _ZERO if x < _ZERO else x  # noqa: FURB136
    return _ONE if x > _ONE else x  # noqa: FURB136


@numba.njit(cache=True, nogil=True)
def _forward_eval(weight, log_alpha, out, stretch, gamma, lo, hi):
    for i in range(lo, hi):
        s = sigmoid_f32(load_f32(log_alpha, i))
        store_f32(out, i, load_f32(weight, i) * _clamp01(_stretched(s, stretch, gamma)))


@numba.njit(cache=True, nogil=True)
def _forward_noise(weight, log_alpha, noise, out, stretch, gamma, beta, lo, hi):
    for i in range(lo, hi):
        s = sigmoid_f32((load_f32(noise, i) + load_f32(log_alpha, i)) / beta)
        store_f32(out, i, load_f32(weight, i) * _clamp01(_stretched(s, stretch, gamma)))


@numba.njit(cache=True, nogil=True, inline="always")
def _backward_element(grad, weight, grad_weight, grad_log_alpha, s, stretch, gamma, scale, with_weight, i):
    g = load_f32(grad, i)
    # torch.ops.aten.sigmoid_backward(g * w, s) = (g * w * (1 - s)) * s
    dsigmoid = g * load_f32(weight, i) * (_ONE - s) * s
    stretched = _stretched(s, stretch, gamma)
    # The clamp passes gradient inside [0, 1], bounds included (torch.clamp's convention); NaN passes none.
    inside = (stretched >= _ZERO) & (stretched <= _ONE)
    store_f32(grad_log_alpha, i, dsigmoid * scale if inside else _ZERO)
    if with_weight:
        store_f32(grad_weight, i, _clamp01(stretched) * g)


@numba.njit(cache=True, nogil=True)
def _backward_eval(grad, weight, log_alpha, grad_weight, grad_log_alpha, stretch, gamma, scale,
                   with_weight, lo, hi):
    if with_weight:  # two loops, so that neither tests the flag per element
        for i in range(lo, hi):
            s = sigmoid_f32(load_f32(log_alpha, i))
            _backward_element(grad, weight, grad_weight, grad_log_alpha, s, stretch, gamma, scale, True, i)
    else:
        for i in range(lo, hi):
            s = sigmoid_f32(load_f32(log_alpha, i))
            _backward_element(grad, weight, grad_weight, grad_log_alpha, s, stretch, gamma, scale, False, i)


@numba.njit(cache=True, nogil=True)
def _backward_noise(grad, weight, log_alpha, noise, grad_weight, grad_log_alpha, stretch, gamma, beta, scale,
                    with_weight, lo, hi):
    if with_weight:
        for i in range(lo, hi):
            s = sigmoid_f32((load_f32(noise, i) + load_f32(log_alpha, i)) / beta)
            _backward_element(grad, weight, grad_weight, grad_log_alpha, s, stretch, gamma, scale, True, i)
    else:
        for i in range(lo, hi):
            s = sigmoid_f32((load_f32(noise, i) + load_f32(log_alpha, i)) / beta)
            _backward_element(grad, weight, grad_weight, grad_log_alpha, s, stretch, gamma, scale, False, i)


def _storage(tensor: torch.Tensor) -> np.ndarray:
    """The flat numpy view of a contiguous CPU tensor, fp16/bf16 as their integer storage."""
    view = _STORAGE_VIEW[tensor.dtype]
    flat = tensor.view(-1)
    if view is None:
        return flat.numpy()
    return flat.view(torch.int16).numpy().view(view)


def _broadcast_value(grad: torch.Tensor) -> np.ndarray | np.float32:
    """The one value of a gradient expanded from a scalar (all strides 0: what ``out.sum().backward()``
    hands the backward), which the kernels then read from a register instead of memory; any other
    non-contiguous gradient as a contiguous copy."""
    if grad.numel() > 0 and not any(grad.stride()):
        return np.float32(grad.reshape(-1)[0].item())  # fp16/bf16 widen exactly
    return _storage(grad.contiguous())


def _constants(gamma: float, zeta: float, beta: float, noise: bool):
    """fp32 constants as the eager path's torch ops round their Python-float operands."""
    scale = (zeta - gamma) / (beta if noise else 1.0)
    return np.float32(zeta - gamma), np.float32(gamma), np.float32(beta), np.float32(scale)


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
    stretch, gamma32, beta32, _ = _constants(gamma, zeta, beta, noise is not None)
    w, la, o = _storage(weight), _storage(log_alpha), _storage(out)
    if noise is None:
        run_split(lambda lo, hi: _forward_eval(w, la, o, stretch, gamma32, lo, hi), w.size, PARALLEL_MIN_ELEMENTS)
    else:
        n = _storage(noise)
        run_split(lambda lo, hi: _forward_noise(w, la, n, o, stretch, gamma32, beta32, lo, hi), w.size,
                  PARALLEL_MIN_ELEMENTS)
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
    shape, except ``grad``, which may have any strides."""
    stretch, gamma32, beta32, scale = _constants(gamma, zeta, beta, noise is not None)
    g = _storage(grad) if grad.is_contiguous() else _broadcast_value(grad)
    w, la, gla = _storage(weight), _storage(log_alpha), _storage(grad_log_alpha)
    with_weight = grad_weight is not None
    gw = _storage(grad_weight) if with_weight else gla  # a placeholder of a compiled type, never written
    if noise is None:
        def run(lo, hi):
            _backward_eval(g, w, la, gw, gla, stretch, gamma32, scale, with_weight, lo, hi)
    else:
        n = _storage(noise)

        def run(lo, hi):
            _backward_noise(g, w, la, n, gw, gla, stretch, gamma32, beta32, scale, with_weight, lo, hi)
    run_split(run, w.size, PARALLEL_MIN_ELEMENTS)
