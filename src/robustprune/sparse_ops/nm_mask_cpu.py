"""Compiled CPU N:M mask (numba): the fast CPU implementation of ``robustprune::nm_mask``.

Imported lazily by :mod:`robustprune.sparse_ops.nm` on the first CPU call (numba and its LLVM load in
~0.5 s); when numba is not importable, or ``ROBUSTPRUNE_NM_MASK_CPU=eager`` is set, the op runs its
vectorised torch path instead. The masks are bit-identical to that path: each element's magnitude is
its integer bit pattern with the sign bit cleared (``bits & 0x7FFFFFFF`` for fp32, ``& 0x7FFF`` for
fp16/bf16), compared as integers, so ``-0 == +0`` and NaNs order above inf by payload exactly as there.

Per group of ``m`` consecutive elements, lane ``i`` is kept when fewer than ``n`` lanes beat it (a
larger magnitude, or an equal one at a lower index). The bulk runs as explicit LLVM vectors of 64 bytes
(:func:`vector_block`: one load, ``m - 1`` in-register rotations within each group, compare, count, one
byte store); the last partial vector runs a scalar loop with every lane and comparison written out
(generated per ``m``, branch-free). Machine code is cached on disk (``cache=True``): later processes
load it instead of compiling.

Threads: the kernels release the GIL (``nogil``) and large inputs are split over
``torch.get_num_threads()`` threads, torch's OpenMP team or Python threads
(:mod:`robustprune.sparse_ops.cpu_threads`, which says why, and why not numba's own parallel layer).
"""

from __future__ import annotations

import functools

import numba
import numpy as np
import torch
from llvmlite import ir
from numba.core import types
from numba.core.extending import intrinsic

from robustprune.sparse_ops.cpu_threads import run_split

# Bytes of scores one explicit vector holds (16 fp32 or 32 fp16/bf16 lanes: one AVX-512 register; LLVM
# splits it where the CPU's registers are narrower).
VECTOR_BYTES = 64

# Threads share pieces of at least this many elements; below twice that one thread does the whole mask.
PARALLEL_MIN_ELEMENTS = 1 << 18

_INT_VIEW = {
    torch.float32: (torch.int32, np.int32(0x7FFFFFFF)),
    torch.float16: (torch.int16, np.int16(0x7FFF)),
    torch.bfloat16: (torch.int16, np.int16(0x7FFF)),
}


def kernel_source(m: int) -> str:
    """Python source of the kernel for group size ``m``: lanes and comparisons unrolled."""
    lines = [
        f"def _rows_m{m}(src, dst, n, magnitude, lo, hi):",
        "    for g in range(lo, hi):",
        f"        b = u64(g) * u64({m})",  # unsigned indices: no wrap-around check, so LLVM vectorises
    ]
    lines += [f"        a{i} = src[b + u64({i})] & magnitude" for i in range(m)]
    for i in range(m):
        # Lane j beats lane i: larger magnitude, or equal magnitude at a lower index.
        beats = [f"i32(a{j} >= a{i})" for j in range(i)] + [f"i32(a{j} > a{i})" for j in range(i + 1, m)]
        lines.append(f"        r{i} = " + " + ".join(beats))
    lines += [f"        dst[b + u64({i})] = u8(r{i} < n)" for i in range(m)]
    lines += [
        "",
        "",
        f"def _nm_mask_m{m}(src, dst, n, magnitude, lo, hi):",
        f"    lanes = {VECTOR_BYTES} // src.itemsize",
        f"    start = lo * {m}",
        f"    vector_end = start + (hi * {m} - start) // lanes * lanes",
        "    for element in range(start, vector_end, lanes):",
        f"        _block_m{m}(src, dst, element, n)",
        f"    _rows_m{m}(src, dst, n, magnitude, vector_end // {m}, hi)",
    ]
    return "\n".join(lines) + "\n"


@functools.cache
def vector_block(m: int):
    """Intrinsic ``block(src, dst, start, n)``: the mask of the ``VECTOR_BYTES`` of scores from ``start``.

    One contiguous vector load; lane ``l`` is compared with the lane ``s`` places further round its own
    group for every ``s`` in ``1 .. m-1`` (a constant in-register shuffle), counting the lanes that beat
    it: ``partner > mine``, or ``partner >= mine`` (``partner > mine - 1``, magnitudes are >= 0) where
    the partner has the lower index. Lanes with rank < n are kept; one contiguous byte store.
    """

    @intrinsic
    def block(typingctx, src, dst, start, n):
        bits = src.dtype.bitwidth
        lanes = VECTOR_BYTES * 8 // bits

        def codegen(context, builder, sig, args):
            src_value, dst_value, start_value, n_value = args
            src_array = context.make_array(sig.args[0])(context, builder, src_value)
            dst_array = context.make_array(sig.args[1])(context, builder, dst_value)
            element = ir.IntType(bits)
            vector = ir.VectorType(element, lanes)
            index_vector = ir.VectorType(ir.IntType(32), lanes)
            source = builder.gep(src_array.data, [start_value], inbounds=True)
            loaded = builder.load(builder.bitcast(source, vector.as_pointer()), align=1)
            magnitude = builder.and_(loaded, ir.Constant(vector, [(1 << (bits - 1)) - 1] * lanes))
            rank = ir.Constant(vector, [0] * lanes)
            for shift in range(1, m):
                partner_lane = [(lane // m) * m + (lane % m + shift) % m for lane in range(lanes)]
                partner = builder.shuffle_vector(magnitude, magnitude, ir.Constant(index_vector, partner_lane))
                lower = ir.Constant(vector, [int(p % m < lane % m) for lane, p in enumerate(partner_lane)])
                beats = builder.icmp_signed(">", partner, builder.sub(magnitude, lower))
                rank = builder.add(rank, builder.zext(beats, vector))
            n_element = builder.trunc(n_value, element)
            n_splat = builder.shuffle_vector(
                builder.insert_element(ir.Constant(vector, ir.Undefined), n_element, ir.Constant(ir.IntType(32), 0)),
                ir.Constant(vector, ir.Undefined), ir.Constant(index_vector, [0] * lanes))
            keep = builder.zext(builder.icmp_signed("<", rank, n_splat), ir.VectorType(ir.IntType(8), lanes))
            target = builder.gep(dst_array.data, [start_value], inbounds=True)
            builder.store(keep, builder.bitcast(target, keep.type.as_pointer()), align=1)
            return context.get_dummy_value()

        return types.void(src, dst, types.int64, types.int64), codegen

    return block


@functools.cache
def kernel(m: int):
    """The compiled (lazily, per dtype) kernel ``(src, dst, n, magnitude, lo, hi)`` for group size ``m``:
    the mask of groups ``lo .. hi-1``."""
    namespace = {"__name__": __name__, "u64": numba.uint64, "i32": numba.int32, "u8": numba.uint8}
    # Compiled with this file's name so numba's on-disk cache can locate (and invalidate) it.
    exec(compile(kernel_source(m), __file__, "exec"), namespace)  # noqa: S102  (our own generated source)
    rows = numba.njit(cache=True, nogil=True)(namespace[f"_rows_m{m}"])
    namespace[f"_rows_m{m}"] = rows
    namespace[f"_block_m{m}"] = vector_block(m)
    return numba.njit(cache=True, nogil=True)(namespace[f"_nm_mask_m{m}"])


def nm_mask_into(scores: torch.Tensor, mask: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Write the N:M keep-mask of contiguous CPU ``scores`` into the bool tensor ``mask`` (same shape)."""
    int_dtype, magnitude = _INT_VIEW[scores.dtype]
    src = scores.view(int_dtype).view(-1).numpy()
    dst = mask.view(torch.uint8).view(-1).numpy()
    run = kernel(m)
    # Pieces of whole vectors: 64 groups is a multiple of any vector's groups.
    run_split(lambda lo, hi: run(src, dst, n, magnitude, lo, hi), src.size // m,
              min_items=PARALLEL_MIN_ELEMENTS // m, align=64)
    return mask
