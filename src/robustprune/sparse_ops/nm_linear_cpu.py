"""Compiled CPU forward of ``robustprune::nm_linear`` at small batch (decoding): numba, explicit vectors.

At batch 1 a linear layer is bound by the bytes of its weight. The compressed N:M weight is about half of
dense (values + packed indices, :mod:`robustprune.sparse_ops.nm_format`), so reading it once, straight from
the compressed form, can beat dense ``F.linear``; rebuilding dense blocks for BLAS (the path for larger
batches) cannot. Per row of W and per chunk of ``L`` kept values (one vector: ``L`` = 16 fp32 lanes with
AVX-512, else 8), the kernel

1. loads the chunk's ``L * log2(M)`` index bits as one integer and shifts each lane's index out of it,
2. fetches the input element each kept value multiplies (its column in the chunk's window of ``x``)
   with an in-register permutation of the window (``vpermi2ps`` on AVX-512, ``vpermps`` on AVX2) or,
   on other CPUs or patterns, with one scalar load per lane (``gather``),
3. multiplies with the ``L`` kept values (fp16 / bf16 widened to fp32) and accumulates in fp32.

Only kept values are multiplied (half the FLOPs of dense for 2:4). Eight accumulators of ``L`` lanes
take consecutive chunks and are summed pairwise at the end of the row (of each column block), so results
differ from ``F.linear`` on the masked weight by float rounding only (fp32 accumulation in every dtype),
except that an inf or NaN input at a pruned position does not reach the output (``0 * inf`` is never
computed, as in sparse GPU kernels). At batch 1
columns run in blocks of ``BLOCK_COLUMNS`` (every row of W reads that slice of ``x`` in turn, from L1);
batch rows run one after another per weight row (whose values stay in L1 meanwhile). The kernel serves
small batches (the op's dispatch picks it up to ``SMALL_BATCH`` rows); BLAS serves larger ones.

Threads: nogil kernels on torch's OpenMP team, or Python threads
(:mod:`robustprune.sparse_ops.cpu_threads`, which says why, and why not numba's own parallel layer). Machine code is cached on disk (``cache=True``).
"""

from __future__ import annotations

import functools

import llvmlite.binding
import numba
import torch
from llvmlite import ir
from numba.core import cgutils, types
from numba.core.extending import intrinsic

from robustprune.sparse_ops.cpu_threads import run_split
from robustprune.sparse_ops.nm_format import index_bits

KINDS = ("avx512", "avx2", "gather")
LANES = {"avx512": 16, "avx2": 8, "gather": 8}
# Largest batch the kernel serves, per kind (measured against the BLAS route: ``python -m bench.compare``).
SMALL_BATCH = {"avx512": 32, "avx2": 32, "gather": 4}
# Input columns per block at batch 1: every row of W reads this slice of x (fp32) in turn, from L1.
BLOCK_COLUMNS = 4096
# Independent accumulation chains per row: consecutive FMAs do not wait on each other's result.
ACCUMULATORS = 8
# Dense weight elements per thread's piece at least (``cpu_threads.run_split``: one thread below twice
# this): handing work to a second thread costs ~40 us, more than it saves on a 1M-element layer (34 us on
# one thread here).
PARALLEL_MIN_ELEMENTS = 1 << 21


@functools.cache
def host_kind() -> str:
    """The vector instructions this CPU offers the kernel: "avx512", "avx2" or "gather" (portable)."""
    features = llvmlite.binding.get_host_cpu_features()
    if features.get("avx512f"):
        return "avx512"
    if features.get("avx2"):
        return "avx2"
    return "gather"


def supports(kind: str, n: int, m: int, kept: int) -> bool:
    """Whether the kernel of ``kind`` handles rows of ``kept`` values of pattern ``n:m``: whole chunks only,
    and the permutation kinds need whole groups per chunk."""
    lanes = LANES[kind]
    return kept % lanes == 0 and (kind == "gather" or lanes % n == 0)


def _declare(builder: ir.IRBuilder, name: str, return_type: ir.Type, *argument_types: ir.Type) -> ir.Function:
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(return_type, argument_types), name)


def _constant_vector(element: ir.Type, values) -> ir.Constant:
    return ir.Constant(ir.VectorType(element, len(values)), list(values))


def _splat(builder: ir.IRBuilder, value: ir.Value, lanes: int) -> ir.Value:
    vector = ir.VectorType(value.type, lanes)
    first = builder.insert_element(ir.Constant(vector, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(first, ir.Constant(vector, ir.Undefined), _constant_vector(ir.IntType(32),
                                                                                            [0] * lanes))


def _horizontal_sum(builder: ir.IRBuilder, vector: ir.Value, lanes: int) -> ir.Value:
    """Pairwise sum of the lanes (halves added until one lane is left)."""
    index = ir.IntType(32)
    while lanes > 1:
        half = lanes // 2
        low = builder.shuffle_vector(vector, vector, _constant_vector(index, range(half)))
        high = builder.shuffle_vector(vector, vector, _constant_vector(index, range(half, lanes)))
        vector, lanes = builder.fadd(low, high), half
    return builder.extract_element(vector, ir.Constant(index, 0))


def _widen(builder: ir.IRBuilder, loaded: ir.Value, value_format: str, lanes: int) -> ir.Value:
    """fp32 vector from the loaded values: fp32 as they are, fp16 / bf16 from their 16-bit patterns."""
    f32 = ir.VectorType(ir.FloatType(), lanes)
    if value_format == "fp32":
        return loaded
    if value_format == "fp16":
        return builder.fpext(builder.bitcast(loaded, ir.VectorType(ir.HalfType(), lanes)), f32)
    wide = builder.zext(loaded, ir.VectorType(ir.IntType(32), lanes))  # bf16: the top half of an fp32
    return builder.bitcast(builder.shl(wide, _constant_vector(ir.IntType(32), [16] * lanes)), f32)


# numba has no 16-bit float arrays: fp16 / bf16 values arrive as their uint16 bit patterns.
VALUE_FORMATS = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def _value_vector_type(value_format: str, lanes: int) -> ir.VectorType:
    return ir.VectorType(ir.FloatType() if value_format == "fp32" else ir.IntType(16), lanes)


@functools.cache
def row_dot(kind: str, n: int, m: int, value_format: str):
    """Intrinsic ``dot(values, metadata, x, row, batch_row, chunk_lo, chunk_hi) -> float32``: row ``row``
    of the compressed weight times row ``batch_row`` of ``x``, over chunks ``chunk_lo .. chunk_hi-1``.

    Arrays are C-contiguous: ``values`` (out, K) fp32 or uint16 (fp16 / bf16 bits, per ``value_format``),
    ``metadata`` (out, row bytes) uint8, ``x`` (B, in) fp32.
    """
    lanes = LANES[kind]
    bits = index_bits(m)
    chunk_bits = lanes * bits  # a multiple of 8: lanes is 8 or 16
    window = lanes // n * m if kind != "gather" else 0  # input columns a chunk's kept values come from
    table = {"avx512": 2 * lanes, "avx2": lanes}.get(kind, 0)  # input lanes one permutation reads

    @intrinsic
    def dot(typingctx, values, metadata, x, row, batch_row, chunk_lo, chunk_hi):
        def codegen(context, builder, sig, args):
            values_a, metadata_a, x_a = (context.make_array(ty)(context, builder, value)
                                         for ty, value in zip(sig.args[:3], args[:3]))
            row_v, batch_v, lo_v, hi_v = args[3:]
            i64, i32, f32 = ir.IntType(64), ir.IntType(32), ir.FloatType()
            f32v, i32v = ir.VectorType(f32, lanes), ir.VectorType(i32, lanes)
            word_type = i32 if chunk_bits <= 32 else i64  # lanes wide enough to shift every field out
            kept = cgutils.unpack_tuple(builder, values_a.shape, 2)[1]
            row_bytes = cgutils.unpack_tuple(builder, metadata_a.shape, 2)[1]
            in_features = cgutils.unpack_tuple(builder, x_a.shape, 2)[1]
            value_type = _value_vector_type(value_format, lanes)
            shifts = _constant_vector(word_type, [lane * bits for lane in range(lanes)])
            group_start = _constant_vector(i32, [lane // n * m for lane in range(lanes)])
            low_bits = _constant_vector(i32, [m - 1] * lanes)
            fma = _declare(builder, f"llvm.fma.v{lanes}f32", f32v, f32v, f32v, f32v)
            x_row = builder.gep(x_a.data, [builder.mul(batch_v, in_features)], inbounds=True)
            row_values = builder.gep(values_a.data, [builder.mul(row_v, kept)], inbounds=True)
            row_metadata = builder.gep(metadata_a.data, [builder.mul(row_v, row_bytes)], inbounds=True)
            accumulators = [cgutils.alloca_once_value(builder, ir.Constant(f32v, [0.0] * lanes))
                            for _ in range(ACCUMULATORS)]

            def accumulate_chunk(chunk, accumulator):
                # 1. the chunk's index bits, one lane each
                source = builder.gep(row_metadata, [builder.mul(chunk, ir.Constant(i64, chunk_bits // 8))])
                word = builder.load(builder.bitcast(source, ir.IntType(chunk_bits).as_pointer()), align=1)
                if chunk_bits < word_type.width:
                    word = builder.zext(word, word_type)
                fields = builder.lshr(_splat(builder, word, lanes), shifts)
                indices = builder.and_(fields if word_type == i32 else builder.trunc(fields, i32v), low_bits)
                # 2. the input element each kept value multiplies
                if kind == "gather":
                    first_kept = builder.mul(chunk, ir.Constant(i64, lanes))
                    inputs = ir.Constant(f32v, ir.Undefined)
                    for lane in range(lanes):
                        group = builder.udiv(builder.add(first_kept, ir.Constant(i64, lane)), ir.Constant(i64, n))
                        index = builder.zext(builder.extract_element(indices, ir.Constant(i32, lane)), i64)
                        column = builder.add(builder.mul(group, ir.Constant(i64, m)), index)
                        element = builder.load(builder.gep(x_row, [column], inbounds=True))
                        inputs = builder.insert_element(inputs, element, ir.Constant(i32, lane))
                else:
                    window_start = builder.mul(chunk, ir.Constant(i64, window))
                    inputs = _permuted_inputs(builder, kind, x_row, window_start, builder.add(indices, group_start),
                                              window, table, lanes)
                # 3. times the kept values, accumulated in fp32
                kept_ptr = builder.gep(row_values, [builder.mul(chunk, ir.Constant(i64, lanes))], inbounds=True)
                loaded = builder.load(builder.bitcast(kept_ptr, value_type.as_pointer()), align=1)
                kept_values = _widen(builder, loaded, value_format, lanes)
                builder.store(builder.call(fma, [kept_values, inputs, builder.load(accumulator)]), accumulator)

            # Whole rounds of one chunk per accumulator, then the remaining chunks on the first one.
            rounds = builder.udiv(builder.sub(hi_v, lo_v), ir.Constant(i64, ACCUMULATORS))
            with cgutils.for_range(builder, rounds, intp=i64) as loop:
                first = builder.add(lo_v, builder.mul(loop.index, ir.Constant(i64, ACCUMULATORS)))
                for slot, accumulator in enumerate(accumulators):
                    accumulate_chunk(builder.add(first, ir.Constant(i64, slot)), accumulator)
            rest = builder.add(lo_v, builder.mul(rounds, ir.Constant(i64, ACCUMULATORS)))
            with cgutils.for_range_slice(builder, rest, hi_v, ir.Constant(i64, 1), intp=i64) as (chunk, _):
                accumulate_chunk(chunk, accumulators[0])

            vectors = [builder.load(accumulator) for accumulator in accumulators]
            while len(vectors) > 1:  # pairwise, like the lanes below
                vectors = [builder.fadd(a, b) for a, b in zip(vectors[::2], vectors[1::2])]
            return _horizontal_sum(builder, vectors[0], lanes)

        signature = types.float32(values, metadata, x, types.int64, types.int64, types.int64, types.int64)
        return signature, codegen

    return dot


def _permuted_inputs(builder, kind, x_row, window_start, columns, window, table, lanes):
    """``x_row[window_start + columns[lane]]`` per lane, from the window's vectors by permutation."""
    i32, f32 = ir.IntType(32), ir.FloatType()
    f32v, i32v = ir.VectorType(f32, lanes), ir.VectorType(i32, lanes)
    first = builder.gep(x_row, [window_start], inbounds=True)
    registers = [builder.load(builder.bitcast(builder.gep(first, [ir.Constant(ir.IntType(64), r * lanes)],
                                                          inbounds=True), f32v.as_pointer()), align=4)
                 for r in range(window // lanes)]
    if kind == "avx512":  # one permutation reads two registers; the index's low 5 bits pick the lane
        permute = _declare(builder, "llvm.x86.avx512.vpermi2var.ps.512", f32v, f32v, i32v, f32v)
        parts = [builder.call(permute, [registers[2 * p], columns, registers[2 * p + 1]])
                 for p in range(len(registers) // 2)]
    else:  # avx2: vpermps reads one register; the index's low 3 bits pick the lane
        permute = _declare(builder, "llvm.x86.avx2.permps", f32v, f32v, i32v)
        parts = [builder.call(permute, [register, columns]) for register in registers]
    if len(parts) == 1:
        return parts[0]
    part_of_lane = builder.lshr(columns, _constant_vector(i32, [table.bit_length() - 1] * lanes))
    result = parts[0]
    for p in range(1, len(parts)):
        chosen = builder.icmp_unsigned("==", part_of_lane, _constant_vector(i32, [p] * lanes))
        result = builder.select(chosen, parts[p], result)
    return result


def kernel_source(kind: str, n: int, m: int, value_format: str) -> str:
    """Python source of the loop over rows ``row_lo .. row_hi-1`` (and every batch row) for one variant."""
    return f"""
def _forward_{kind}_{n}_{m}_{value_format}(values, metadata, x, y, row_lo, row_hi, block_chunks):
    chunks = values.shape[1] // {LANES[kind]}
    for chunk_lo in range(0, chunks, block_chunks):
        chunk_hi = min(chunk_lo + block_chunks, chunks)
        for row in range(row_lo, row_hi):
            for batch_row in range(x.shape[0]):  # the row's values stay in L1 for the next batch row
                part = _dot(values, metadata, x, row, batch_row, chunk_lo, chunk_hi)
                y[batch_row, row] = part if chunk_lo == 0 else y[batch_row, row] + part
"""


@functools.cache
def kernel(kind: str, n: int, m: int, value_format: str):
    """The compiled ``(values, metadata, x, y, row_lo, row_hi, block_chunks)`` for one kind, pattern and
    value format."""
    namespace = {"__name__": __name__, "_dot": row_dot(kind, n, m, value_format)}
    # Compiled with this file's name so numba's on-disk cache can locate (and invalidate) it.
    exec(compile(kernel_source(kind, n, m, value_format), __file__, "exec"), namespace)  # noqa: S102
    return numba.njit(cache=True, nogil=True)(namespace[f"_forward_{kind}_{n}_{m}_{value_format}"])


def nm_linear_forward(x: torch.Tensor, values: torch.Tensor, metadata: torch.Tensor, n: int, m: int,
                      kind: str | None = None) -> torch.Tensor:
    """fp32 ``(B, out)`` product of ``x`` ``(B, in)`` with the compressed weight (no bias, no cast back).

    ``kind`` forces an instruction set (tests); default :func:`host_kind`. The caller checks
    :func:`supports` first.
    """
    kind = kind or host_kind()
    values, metadata = values.contiguous(), metadata.contiguous()
    x32 = x.to(torch.float32).contiguous()
    out_features, kept = values.shape
    y = torch.empty(x32.shape[0], out_features, dtype=torch.float32)
    value_format = VALUE_FORMATS[values.dtype]
    bits = values if value_format == "fp32" else values.view(torch.uint16)
    arrays = (bits.numpy(), metadata.numpy(), x32.numpy(), y.numpy())
    run = kernel(kind, n, m, value_format)
    # Batch 1 reads x's slice in blocks; larger batches measured faster with whole rows (each batch row
    # re-reads x either way, and a row's values stay in L1 across the batch).
    whole_row = kept // LANES[kind]
    block_chunks = max(1, BLOCK_COLUMNS * n // (LANES[kind] * m)) if x32.shape[0] == 1 else whole_row
    min_rows = -(-PARALLEL_MIN_ELEMENTS // (kept * m // n))
    run_split(lambda lo, hi: run(*arrays, lo, hi, block_chunks), out_features, min_rows)
    return y
