"""Compiled CPU N:M mask (LLVM IR): the fast CPU implementation of ``robustprune::nm_mask``.

Imported lazily by :mod:`robustprune.sparse_ops.nm` on the first CPU call (through
:mod:`robustprune.sparse_ops.compiled`); when llvmlite is not importable, a kernel fails to build, or
``ROBUSTPRUNE_NM_MASK_CPU=eager`` is set, the op runs its vectorised torch path instead. The masks are bit-identical to that path: each element's magnitude is
its integer bit pattern with the sign bit cleared (``bits & 0x7FFFFFFF`` for fp32, ``& 0x7FFF`` for
fp16/bf16), compared as integers, so ``-0 == +0`` and NaNs order above inf by payload exactly as there.

Per group of ``m`` consecutive elements, lane ``i`` is kept when fewer than ``n`` lanes beat it (a
larger magnitude, or an equal one at a lower index). The bulk runs as explicit LLVM vectors of 64 bytes
(:func:`vector_block`: one load, ``m - 1`` in-register rotations within each group, compare, count, one
byte store); the last partial vector runs a scalar loop with every lane and comparison written out
(generated per ``m``, branch-free). Compiled once per machine and cached on disk
(:mod:`robustprune.sparse_ops.native`); later processes load it in milliseconds.

Threads: large inputs are split over ``torch.get_num_threads()`` threads, torch's OpenMP team or Python
threads, none of them touching Python between pieces
(:func:`robustprune.sparse_ops.cpu_threads.run_split`).
"""

from __future__ import annotations

import functools

import torch
from llvmlite import ir

from robustprune.sparse_ops import native
from robustprune.sparse_ops.cpu_threads import run_split
from robustprune.sparse_ops.native import I8, I32, I64, Target, constant_vector, splat

# Bytes of scores one explicit vector holds (16 fp32 or 32 fp16/bf16 lanes: one AVX-512 register; LLVM
# splits it where the CPU's registers are narrower).
VECTOR_BYTES = 64

# Threads share pieces of at least this many elements; below twice that one thread does the whole mask.
PARALLEL_MIN_ELEMENTS = 1 << 18

# Scores are compared as the integers of their bit patterns: fp32 as 32-bit, fp16 / bf16 as 16-bit.
_INT_VIEW = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}


def _vector_block(builder: ir.IRBuilder, src, dst, start, n, m: int, bits: int) -> None:
    """The mask of the ``VECTOR_BYTES`` of scores from element ``start``.

    One contiguous vector load; lane ``l`` is compared with the lane ``s`` places further round its own
    group for every ``s`` in ``1 .. m/2`` (a constant in-register shuffle), counting the lanes that beat
    it: ``partner > mine``, or ``partner >= mine`` (``partner > mine - 1``, magnitudes are >= 0) where
    the partner has the lower index. Shift ``m - s`` pairs the same lanes as shift ``s`` the other way
    round, and of two lanes exactly one beats the other, so its counts are ``1 -`` shift ``s``'s results,
    shuffled back: one shuffle and a subtraction instead of a comparison (a fifth fewer operations for
    m = 8). Lanes with rank < n are kept; one contiguous byte store.
    """
    lanes = VECTOR_BYTES * 8 // bits
    element = ir.IntType(bits)
    vector = ir.VectorType(element, lanes)
    loaded = builder.load(native.address(builder, element, src, start), typ=vector, align=1)
    magnitude = builder.and_(loaded, ir.Constant(vector, [(1 << (bits - 1)) - 1] * lanes))
    mirrored = [shift for shift in range(1, m) if shift > m // 2]  # shifts counted from shift m - s
    rank = ir.Constant(vector, [len(mirrored)] * lanes)  # the 1 of each "1 - beaten"
    beaten = {}  # shift -> 1 where the lane's partner at that shift beats it
    for shift in range(1, m):
        partner_lane = constant_vector(I32, [(lane // m) * m + (lane % m + shift) % m for lane in range(lanes)])
        if shift in mirrored:
            rank = builder.sub(rank, builder.shuffle_vector(beaten[m - shift], beaten[m - shift], partner_lane))
            continue
        partner = builder.shuffle_vector(magnitude, magnitude, partner_lane)
        lower = ir.Constant(vector, [int((lane % m + shift) % m < lane % m) for lane in range(lanes)])
        beaten[shift] = builder.zext(builder.icmp_signed(">", partner, builder.sub(magnitude, lower)), vector)
        rank = builder.add(rank, beaten[shift])
    keep = builder.icmp_signed("<", rank, splat(builder, builder.trunc(n, element), lanes))
    builder.store(builder.zext(keep, ir.VectorType(I8, lanes)), native.address(builder, I8, dst, start), align=1)


def _scalar_group(builder: ir.IRBuilder, src, dst, group, n, m: int, bits: int) -> None:
    """The mask of group ``group``, every lane and comparison written out (branch-free)."""
    element = ir.IntType(bits)
    first = builder.mul(group, ir.Constant(I64, m))
    magnitude = ir.Constant(element, (1 << (bits - 1)) - 1)
    scores = [builder.and_(native.load_at(builder, element, src, builder.add(first, ir.Constant(I64, i))), magnitude)
              for i in range(m)]
    for i in range(m):
        # Lane j beats lane i: larger magnitude, or equal magnitude at a lower index.
        beats = [builder.icmp_signed(">=" if j < i else ">", scores[j], scores[i]) for j in range(m) if j != i]
        rank = ir.Constant(I64, 0)
        for beat in beats:
            rank = builder.add(rank, builder.zext(beat, I64))
        target = native.address(builder, I8, dst, builder.add(first, ir.Constant(I64, i)))
        builder.store(builder.zext(builder.icmp_signed("<", rank, n), I8), target)


# The kernel's argument block: the scores' and the mask's addresses, then n.
ARGUMENTS = native.Arguments("scores", "mask", "n")
# Group sizes and score widths the kernel is built for (every m the op accepts; fp32, and fp16 / bf16).
GROUP_SIZES, SCORE_BITS = (4, 8, 16), (32, 16)


def build(m: int, bits: int, target: Target | None = None) -> ir.Module:
    """IR of ``mask(arguments, lo, hi)`` for group size ``m`` and ``bits``-bit scores, for ``target``
    (default this machine): the mask of groups ``lo .. hi-1``; ``arguments`` is an :data:`ARGUMENTS` block."""
    module = native.new_module(f"nm_mask_m{m}_i{bits}", target)
    function = ir.Function(module, native.KERNEL_TYPE, "mask")
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    arguments, lo, hi = function.args
    read = ARGUMENTS.reader(builder, arguments)
    src, dst, n = read("scores", pointer=True), read("mask", pointer=True), read("n")
    lanes = ir.Constant(I64, VECTOR_BYTES * 8 // bits)
    start = builder.mul(lo, ir.Constant(I64, m))
    whole = builder.mul(builder.udiv(builder.sub(builder.mul(hi, ir.Constant(I64, m)), start), lanes), lanes)
    vector_end = builder.add(start, whole)
    with native.loop(builder, start, vector_end, lanes) as element:
        _vector_block(builder, src, dst, element, n, m, bits)
    with native.loop(builder, builder.udiv(vector_end, ir.Constant(I64, m)), hi) as group:
        _scalar_group(builder, src, dst, group, n, m, bits)
    builder.ret_void()
    return module


@functools.cache
def kernel(m: int, bits: int) -> int:
    """Address of :func:`build`'s kernel compiled for this machine."""
    return native.load(build(m, bits)).address("mask")


def nm_mask_into(scores: torch.Tensor, mask: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Write the N:M keep-mask of contiguous CPU ``scores`` into the bool tensor ``mask`` (same shape)."""
    int_dtype = _INT_VIEW[scores.dtype]
    arguments = ARGUMENTS.pack(scores=scores.data_ptr(), mask=mask.data_ptr(), n=n)
    # Pieces of whole vectors: 64 groups is a multiple of any vector's groups.
    run_split(kernel(m, int_dtype.itemsize * 8), arguments, scores.numel() // m,
                     min_items=PARALLEL_MIN_ELEMENTS // m, align=64)
    return mask
