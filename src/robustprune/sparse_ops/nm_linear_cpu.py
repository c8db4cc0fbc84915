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

Only kept values are multiplied (half the FLOPs of dense for 2:4). ``ROWS_TOGETHER`` rows advance
together, sharing each chunk's window of ``x`` and keeping that many streams of values in flight per thread
(one stream left the memory system idle between requests: 4096x11008 fp16 went 1.3x -> 2.0x dense). Eight
accumulators of ``L`` lanes in all (two per row) take consecutive chunks and are summed pairwise at the end
of the row (of each column block), so results
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
# Rows of W one call advances together: the chunk's window of x is loaded once for all, and each thread
# keeps this many independent streams of values in flight (batch 1 is bound by how fast those arrive).
ROWS_TOGETHER = 4
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
def rows_dot(kind: str, n: int, m: int, value_format: str, rows: int):
    """Intrinsic ``dot(values, metadata, x, y, row, batch_row, chunk_lo, chunk_hi, accumulate)``: rows
    ``row .. row+rows-1`` of the compressed weight times row ``batch_row`` of ``x``, over chunks
    ``chunk_lo .. chunk_hi-1``, stored into (``accumulate``: added to) ``y[batch_row, row ..]``.

    The rows advance together: each chunk's window of ``x`` is loaded once for all of them, and the
    thread reads ``rows`` independent streams of values (more memory requests in flight than one).
    Arrays are C-contiguous: ``values`` (out, K) fp32 or uint16 (fp16 / bf16 bits, per ``value_format``),
    ``metadata`` (out, row bytes) uint8, ``x`` (B, in) fp32, ``y`` (B, out) fp32.
    """
    lanes = LANES[kind]
    bits = index_bits(m)
    chunk_bits = lanes * bits  # a multiple of 8: lanes is 8 or 16
    window = lanes // n * m if kind != "gather" else 0  # input columns a chunk's kept values come from
    table = {"avx512": 2 * lanes, "avx2": lanes}.get(kind, 0)  # input lanes one permutation reads
    per_row = max(1, ACCUMULATORS // rows)  # accumulators of each row

    @intrinsic
    def dot(typingctx, values, metadata, x, y, row, batch_row, chunk_lo, chunk_hi, accumulate):
        def codegen(context, builder, sig, args):
            values_a, metadata_a, x_a, y_a = (context.make_array(ty)(context, builder, value)
                                              for ty, value in zip(sig.args[:4], args[:4]))
            row_v, batch_v, lo_v, hi_v, accumulate_v = args[4:]
            i64, i32, f32 = ir.IntType(64), ir.IntType(32), ir.FloatType()
            f32v, i32v = ir.VectorType(f32, lanes), ir.VectorType(i32, lanes)
            word_type = i32 if chunk_bits <= 32 else i64  # lanes wide enough to shift every field out
            kept = cgutils.unpack_tuple(builder, values_a.shape, 2)[1]
            row_bytes = cgutils.unpack_tuple(builder, metadata_a.shape, 2)[1]
            in_features = cgutils.unpack_tuple(builder, x_a.shape, 2)[1]
            out_features = cgutils.unpack_tuple(builder, y_a.shape, 2)[1]
            value_type = _value_vector_type(value_format, lanes)
            shifts = _constant_vector(word_type, [lane * bits for lane in range(lanes)])
            group_start = _constant_vector(i32, [lane // n * m for lane in range(lanes)])
            low_bits = _constant_vector(i32, [m - 1] * lanes)
            fma = _declare(builder, f"llvm.fma.v{lanes}f32", f32v, f32v, f32v, f32v)
            x_row = builder.gep(x_a.data, [builder.mul(batch_v, in_features)], inbounds=True)
            first_rows = [builder.add(row_v, ir.Constant(i64, r)) for r in range(rows)]
            row_values = [builder.gep(values_a.data, [builder.mul(r, kept)], inbounds=True) for r in first_rows]
            row_metadata = [builder.gep(metadata_a.data, [builder.mul(r, row_bytes)], inbounds=True)
                            for r in first_rows]
            accumulators = [[cgutils.alloca_once_value(builder, ir.Constant(f32v, [0.0] * lanes))
                             for _ in range(per_row)] for _ in range(rows)]

            def accumulate_chunk(chunk, slot):
                window_start = builder.mul(chunk, ir.Constant(i64, window))
                registers = None if kind == "gather" else _window_registers(builder, x_row, window_start, window,
                                                                            lanes)
                for r in range(rows):
                    # 1. the chunk's index bits, one lane each
                    source = builder.gep(row_metadata[r], [builder.mul(chunk, ir.Constant(i64, chunk_bits // 8))])
                    word = builder.load(builder.bitcast(source, ir.IntType(chunk_bits).as_pointer()), align=1)
                    if chunk_bits < word_type.width:
                        word = builder.zext(word, word_type)
                    fields = builder.lshr(_splat(builder, word, lanes), shifts)
                    indices = builder.and_(fields if word_type == i32 else builder.trunc(fields, i32v), low_bits)
                    # 2. the input element each kept value multiplies
                    if kind == "gather":
                        inputs = _gathered_inputs(builder, x_row, chunk, indices, n, m, lanes)
                    else:
                        inputs = _permuted_inputs(builder, kind, registers, builder.add(indices, group_start), table,
                                                  lanes)
                    # 3. times the kept values, accumulated in fp32
                    kept_ptr = builder.gep(row_values[r], [builder.mul(chunk, ir.Constant(i64, lanes))], inbounds=True)
                    loaded = builder.load(builder.bitcast(kept_ptr, value_type.as_pointer()), align=1)
                    kept_values = _widen(builder, loaded, value_format, lanes)
                    accumulator = accumulators[r][slot]
                    builder.store(builder.call(fma, [kept_values, inputs, builder.load(accumulator)]), accumulator)

            # Whole rounds of one chunk per accumulator slot, then the remaining chunks on the first slot.
            rounds = builder.udiv(builder.sub(hi_v, lo_v), ir.Constant(i64, per_row))
            with cgutils.for_range(builder, rounds, intp=i64) as loop:
                first = builder.add(lo_v, builder.mul(loop.index, ir.Constant(i64, per_row)))
                for slot in range(per_row):
                    accumulate_chunk(builder.add(first, ir.Constant(i64, slot)), slot)
            rest = builder.add(lo_v, builder.mul(rounds, ir.Constant(i64, per_row)))
            with cgutils.for_range_slice(builder, rest, hi_v, ir.Constant(i64, 1), intp=i64) as (chunk, _):
                accumulate_chunk(chunk, 0)

            y_row = builder.gep(y_a.data, [builder.add(builder.mul(batch_v, out_features), row_v)], inbounds=True)
            adding = builder.icmp_signed("!=", accumulate_v, ir.Constant(accumulate_v.type, 0))
            for r in range(rows):
                vectors = [builder.load(accumulator) for accumulator in accumulators[r]]
                while len(vectors) > 1:  # pairwise, like the lanes below
                    vectors = [builder.fadd(a, b) for a, b in zip(vectors[::2], vectors[1::2])]
                total = _horizontal_sum(builder, vectors[0], lanes)
                target = builder.gep(y_row, [ir.Constant(i64, r)], inbounds=True)
                builder.store(builder.select(adding, builder.fadd(builder.load(target), total), total), target)
            return context.get_dummy_value()

        signature = types.none(values, metadata, x, y, types.int64, types.int64, types.int64, types.int64,
                               types.int64)
        return signature, codegen

    return dot


def _window_registers(builder, x_row, window_start, window, lanes):
    """The chunk's window of ``x_row`` (``window`` elements from ``window_start``) as fp32 vectors."""
    f32v = ir.VectorType(ir.FloatType(), lanes)
    first = builder.gep(x_row, [window_start], inbounds=True)
    return [builder.load(builder.bitcast(builder.gep(first, [ir.Constant(ir.IntType(64), r * lanes)], inbounds=True),
                                         f32v.as_pointer()), align=4)
            for r in range(window // lanes)]


def _gathered_inputs(builder, x_row, chunk, indices, n, m, lanes):
    """``x_row[column]`` per lane with one scalar load each (portable; any pattern)."""
    i64, i32 = ir.IntType(64), ir.IntType(32)
    first_kept = builder.mul(chunk, ir.Constant(i64, lanes))
    inputs = ir.Constant(ir.VectorType(ir.FloatType(), lanes), ir.Undefined)
    for lane in range(lanes):
        group = builder.udiv(builder.add(first_kept, ir.Constant(i64, lane)), ir.Constant(i64, n))
        index = builder.zext(builder.extract_element(indices, ir.Constant(i32, lane)), i64)
        column = builder.add(builder.mul(group, ir.Constant(i64, m)), index)
        element = builder.load(builder.gep(x_row, [column], inbounds=True))
        inputs = builder.insert_element(inputs, element, ir.Constant(i32, lane))
    return inputs


def _permuted_inputs(builder, kind, registers, columns, table, lanes):
    """``window[columns[lane]]`` per lane, from the window's vectors ``registers`` by permutation."""
    i32, f32 = ir.IntType(32), ir.FloatType()
    f32v, i32v = ir.VectorType(f32, lanes), ir.VectorType(i32, lanes)
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
    """Python source of the loop over rows ``row_lo .. row_hi-1`` (and every batch row) for one variant:
    ``ROWS_TOGETHER`` rows at a time, the last few one by one."""
    return f"""
def _forward_{kind}_{n}_{m}_{value_format}(values, metadata, x, y, row_lo, row_hi, block_chunks):
    chunks = values.shape[1] // {LANES[kind]}
    together_hi = row_lo + (row_hi - row_lo) // {ROWS_TOGETHER} * {ROWS_TOGETHER}
    for chunk_lo in range(0, chunks, block_chunks):
        chunk_hi = min(chunk_lo + block_chunks, chunks)
        for row in range(row_lo, together_hi, {ROWS_TOGETHER}):
            for batch_row in range(x.shape[0]):  # the rows' values stay in L1 for the next batch row
                _dot_together(values, metadata, x, y, row, batch_row, chunk_lo, chunk_hi, chunk_lo)
        for row in range(together_hi, row_hi):
            for batch_row in range(x.shape[0]):
                _dot_one(values, metadata, x, y, row, batch_row, chunk_lo, chunk_hi, chunk_lo)
"""


@functools.cache
def kernel(kind: str, n: int, m: int, value_format: str):
    """The compiled ``(values, metadata, x, y, row_lo, row_hi, block_chunks)`` for one kind, pattern and
    value format."""
    namespace = {"__name__": __name__, "_dot_together": rows_dot(kind, n, m, value_format, ROWS_TOGETHER),
                 "_dot_one": rows_dot(kind, n, m, value_format, 1)}
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
