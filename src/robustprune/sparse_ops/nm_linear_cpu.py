"""Compiled CPU forward of ``robustprune::nm_linear`` at small batch (decoding): LLVM IR, explicit vectors.

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
(one stream left the memory system idle between requests: 4096x11008 fp16 went 1.3x -> 2.0x dense). The
rows of one step are a quarter of the thread's piece apart, so each stream runs on through consecutive rows
(long, contiguous, what the hardware prefetcher follows); adjacent rows gave four streams that ended every
row, a 4 KiB page in fp16 (4096x4096 fp16: 1.28x -> 1.64x dense, kernel alone). Eight
accumulators of ``L`` lanes in all (two per row) take consecutive chunks and are summed pairwise at the end
of the row (of each column block), so results
differ from ``F.linear`` on the masked weight by float rounding only (fp32 accumulation in every dtype),
except that an inf or NaN input at a pruned position does not reach the output (``0 * inf`` is never
computed, as in sparse GPU kernels). At batch 1
columns run in blocks of ``BLOCK_COLUMNS`` (every row of W reads that slice of ``x`` in turn, from L1);
batch rows run one after another per weight row (whose values stay in L1 meanwhile). The kernel serves
small batches (the op's dispatch picks it up to ``SMALL_BATCH`` rows); BLAS serves larger ones.

The kernel is LLVM IR written with llvmlite, compiled once per machine and cached on disk
(:mod:`robustprune.sparse_ops.native`: later processes load it in tens of milliseconds, without numba).
Threads: rows are split over torch's OpenMP team, or Python threads, with no thread touching Python
between pieces (:func:`robustprune.sparse_ops.cpu_threads.run_split`).
"""

from __future__ import annotations

import functools

import torch
from llvmlite import ir

from robustprune.sparse_ops import native
from robustprune.sparse_ops.cpu_threads import run_split
from robustprune.sparse_ops.native import F32, I1, I8, I16, I32, I64, PTR, Target, constant_vector, splat
from robustprune.sparse_ops.nm_format import index_bits

KINDS = ("avx512", "avx2", "gather")
LANES = {"avx512": 16, "avx2": 8, "gather": 8}
# Largest batch the kernel serves, per kind (measured against the BLAS route: ``python -m bench.compare``).
SMALL_BATCH = {"avx512": 32, "avx2": 32, "gather": 4}
# Input columns per block at batch 1: every row of W reads this slice of x (fp32) in turn, from L1.
BLOCK_COLUMNS = 4096
# Independent accumulation chains per row: consecutive FMAs do not wait on each other's result.
ACCUMULATORS = 8
# Rows of W one call advances together (a quarter of the piece apart): the chunk's window of x is loaded
# once for all, and each thread keeps this many independent streams of values in flight (batch 1 is bound
# by how fast those arrive).
ROWS_TOGETHER = 4
# Dense weight elements per thread's piece at least (``cpu_threads.run_split``: one thread below twice
# this): handing work to a second thread costs ~40 us, more than it saves on a 1M-element layer (34 us on
# one thread here).
PARALLEL_MIN_ELEMENTS = 1 << 21


def kinds_for(target: Target) -> tuple[str, ...]:
    """The kinds of kernel ``target`` can run, fastest first (x86-64: by its vector instructions)."""
    if target.arch in ("x86_64", "amd64"):
        if target.has("avx512f"):
            return KINDS
        if target.has("avx2"):
            return KINDS[1:]
    return KINDS[2:]


@functools.cache
def host_kind() -> str:
    """The vector instructions this CPU offers the kernel: "avx512", "avx2" or "gather" (portable)."""
    return kinds_for(native.host())[0]


def supports(kind: str, n: int, m: int, kept: int) -> bool:
    """Whether the kernel of ``kind`` handles rows of ``kept`` values of pattern ``n:m``: whole chunks only,
    and the permutation kinds need whole groups per chunk."""
    lanes = LANES[kind]
    return kept % lanes == 0 and (kind == "gather" or lanes % n == 0)


def _horizontal_sum(builder: ir.IRBuilder, vector: ir.Value, lanes: int) -> ir.Value:
    """Pairwise sum of the lanes (halves added until one lane is left)."""
    index = ir.IntType(32)
    while lanes > 1:
        half = lanes // 2
        low = builder.shuffle_vector(vector, vector, constant_vector(index, range(half)))
        high = builder.shuffle_vector(vector, vector, constant_vector(index, range(half, lanes)))
        vector, lanes = builder.fadd(low, high), half
    return builder.extract_element(vector, ir.Constant(index, 0))


def half_instructions(target: Target) -> bool:
    """Whether ``target`` converts fp16 to fp32 in an instruction (x86-64: F16C; AArch64: always). Elsewhere
    LLVM would call ``__extendhfsf2``, which a process may not have (GCC >= 12's libgcc), so the kernel
    converts in integer code (:func:`_half_to_float`)."""
    return target.arch == "aarch64" or target.has("f16c")


def _half_to_float(builder: ir.IRBuilder, bits: ir.Value, lanes: int) -> ir.Value:
    """Exact fp32 of the fp16 bit patterns ``bits`` (an i16 vector) in integer code: normals by moving the
    exponent and mantissa into place and rebiasing, subnormals as ``mantissa * 2^-24`` (exact, and not
    flushed to zero under denormals-are-zero), inf / NaN with their payload."""
    i32v, f32v = ir.VectorType(I32, lanes), ir.VectorType(F32, lanes)

    def splat_i32(value):
        return constant_vector(I32, [value] * lanes)

    wide = builder.zext(bits, i32v)
    sign = builder.shl(builder.and_(wide, splat_i32(0x8000)), splat_i32(16))
    magnitude = builder.and_(wide, splat_i32(0x7FFF))
    moved = builder.shl(magnitude, splat_i32(13))
    normal = builder.add(moved, splat_i32((127 - 15) << 23))
    subnormal = builder.bitcast(builder.fmul(builder.uitofp(magnitude, f32v),
                                             ir.Constant(f32v, [2.0 ** -24] * lanes)), i32v)
    special = builder.or_(moved, splat_i32(0x7F800000))
    result = builder.select(builder.icmp_unsigned("<", magnitude, splat_i32(0x400)), subnormal, normal)
    result = builder.select(builder.icmp_unsigned(">=", magnitude, splat_i32(0x7C00)), special, result)
    return builder.bitcast(builder.or_(result, sign), f32v)


def _widen(builder: ir.IRBuilder, loaded: ir.Value, value_format: str, lanes: int,
           native_half: bool = True) -> ir.Value:
    """fp32 vector from the loaded values: fp32 as they are, fp16 / bf16 from their 16-bit patterns
    (fp16 by ``fpext`` where ``native_half``, else :func:`_half_to_float`)."""
    f32 = ir.VectorType(ir.FloatType(), lanes)
    if value_format == "fp32":
        return loaded
    if value_format == "fp16":
        if not native_half:
            return _half_to_float(builder, loaded, lanes)
        return builder.fpext(builder.bitcast(loaded, ir.VectorType(ir.HalfType(), lanes)), f32)
    wide = builder.zext(loaded, ir.VectorType(ir.IntType(32), lanes))  # bf16: the top half of an fp32
    return builder.bitcast(builder.shl(wide, constant_vector(ir.IntType(32), [16] * lanes)), f32)


# fp16 / bf16 values are read as their 16-bit patterns and widened in registers (``_widen``).
VALUE_FORMATS = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def _value_vector_type(value_format: str, lanes: int) -> ir.VectorType:
    return ir.VectorType(ir.FloatType() if value_format == "fp32" else ir.IntType(16), lanes)


def define_rows_dot(module: ir.Module, kind: str, n: int, m: int, value_format: str, rows: int,
                    native_half: bool = True) -> ir.Function:
    """Define ``dot{rows}(values, metadata, x_row, y_out, kept, row_bytes, row_stride, chunk_lo, chunk_hi,
    accumulate)`` in ``module``: ``rows`` rows of the compressed weight ``row_stride`` rows apart (row ``r``
    is row ``r * row_stride`` from ``values`` / ``metadata``; one row is ``kept`` values / ``row_bytes``
    bytes) times the input row ``x_row``, over chunks ``chunk_lo .. chunk_hi-1``, stored into
    (``accumulate``: added to) ``y_out[r * row_stride]`` for ``r`` in ``0 .. rows-1``.

    The rows advance together: each chunk's window of ``x`` is loaded once for all of them, and the
    thread reads ``rows`` independent streams of values (more memory requests in flight than one).
    ``values`` are fp32, or uint16 bit patterns of fp16 / bf16 (per ``value_format``; fp16 widened as
    :func:`_widen` with ``native_half``); ``x`` and ``y`` fp32.
    """
    lanes = LANES[kind]
    bits = index_bits(m)
    chunk_bits = lanes * bits  # a multiple of 8: lanes is 8 or 16
    window = lanes // n * m if kind != "gather" else 0  # input columns a chunk's kept values come from
    table = {"avx512": 2 * lanes, "avx2": lanes}.get(kind, 0)  # input lanes one permutation reads
    per_row = max(1, ACCUMULATORS // rows)  # accumulators of each row
    element = F32 if value_format == "fp32" else I16
    function = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR, PTR, PTR, PTR, I64, I64, I64, I64, I64, I1]),
                           f"dot{rows}")
    function.linkage = "internal"
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    values, metadata, x_row, y_out, kept, row_bytes, row_stride, lo, hi, accumulate = function.args
    f32v, i32v = ir.VectorType(F32, lanes), ir.VectorType(I32, lanes)
    word_type = I32 if chunk_bits <= 32 else I64  # lanes wide enough to shift every field out
    value_type = _value_vector_type(value_format, lanes)
    shifts = constant_vector(word_type, [lane * bits for lane in range(lanes)])
    group_start = constant_vector(I32, [lane // n * m for lane in range(lanes)])
    low_bits = constant_vector(I32, [m - 1] * lanes)
    # fmuladd: fused where the target has FMA, a multiply and an add elsewhere (llvm.fma would call fmaf there)
    fma = native.declare(module, f"llvm.fmuladd.v{lanes}f32", f32v, f32v, f32v, f32v)
    stream_rows = [builder.mul(ir.Constant(I64, r), row_stride) for r in range(rows)]
    row_values = [native.address(builder, element, values, builder.mul(r, kept)) for r in stream_rows]
    row_metadata = [native.address(builder, I8, metadata, builder.mul(r, row_bytes)) for r in stream_rows]
    accumulators = [[native.entry_variable(builder, ir.Constant(f32v, [0.0] * lanes)) for _ in range(per_row)]
                    for _ in range(rows)]

    def accumulate_chunk(chunk, slot):
        window_start = builder.mul(chunk, ir.Constant(I64, window))
        registers = None if kind == "gather" else _window_registers(builder, x_row, window_start, window, lanes)
        for r in range(rows):
            # 1. the chunk's index bits, one lane each
            source = native.address(builder, I8, row_metadata[r], builder.mul(chunk, ir.Constant(I64, chunk_bits // 8)))
            word = builder.load(source, typ=ir.IntType(chunk_bits), align=1)
            if chunk_bits < word_type.width:
                word = builder.zext(word, word_type)
            fields = builder.lshr(splat(builder, word, lanes), shifts)
            indices = builder.and_(fields if word_type == I32 else builder.trunc(fields, i32v), low_bits)
            # 2. the input element each kept value multiplies
            if kind == "gather":
                inputs = _gathered_inputs(builder, x_row, chunk, indices, n, m, lanes)
            else:
                inputs = _permuted_inputs(builder, kind, registers, builder.add(indices, group_start), table, lanes)
            # 3. times the kept values, accumulated in fp32
            kept_ptr = native.address(builder, element, row_values[r], builder.mul(chunk, ir.Constant(I64, lanes)))
            loaded = builder.load(kept_ptr, typ=value_type, align=1)
            kept_values = _widen(builder, loaded, value_format, lanes, native_half)
            accumulator = accumulators[r][slot]
            builder.store(builder.call(fma, [kept_values, inputs, builder.load(accumulator)]), accumulator)

    # Whole rounds of one chunk per accumulator slot, then the remaining chunks on the first slot.
    rounds = builder.udiv(builder.sub(hi, lo), ir.Constant(I64, per_row))
    with native.loop(builder, ir.Constant(I64, 0), rounds) as index:
        first = builder.add(lo, builder.mul(index, ir.Constant(I64, per_row)))
        for slot in range(per_row):
            accumulate_chunk(builder.add(first, ir.Constant(I64, slot)), slot)
    with native.loop(builder, builder.add(lo, builder.mul(rounds, ir.Constant(I64, per_row))), hi) as chunk:
        accumulate_chunk(chunk, 0)

    for r in range(rows):
        vectors = [builder.load(accumulator) for accumulator in accumulators[r]]
        while len(vectors) > 1:  # pairwise, like the lanes below
            vectors = [builder.fadd(a, b) for a, b in zip(vectors[::2], vectors[1::2])]
        total = _horizontal_sum(builder, vectors[0], lanes)
        target = native.address(builder, F32, y_out, stream_rows[r])
        builder.store(builder.select(accumulate, builder.fadd(builder.load(target, typ=F32), total), total), target)
    builder.ret_void()
    return function


def _window_registers(builder, x_row, window_start, window, lanes):
    """The chunk's window of ``x_row`` (``window`` elements from ``window_start``) as fp32 vectors."""
    f32v = ir.VectorType(F32, lanes)
    first = native.address(builder, F32, x_row, window_start)
    return [builder.load(native.address(builder, F32, first, r * lanes), typ=f32v, align=4)
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
        element = native.load_at(builder, F32, x_row, column)
        inputs = builder.insert_element(inputs, element, ir.Constant(i32, lane))
    return inputs


def _permuted_inputs(builder, kind, registers, columns, table, lanes):
    """``window[columns[lane]]`` per lane, from the window's vectors ``registers`` by permutation."""
    i32, f32 = ir.IntType(32), ir.FloatType()
    f32v, i32v = ir.VectorType(f32, lanes), ir.VectorType(i32, lanes)
    if kind == "avx512":  # one permutation reads two registers; the index's low 5 bits pick the lane
        permute = native.declare(builder.module, "llvm.x86.avx512.vpermi2var.ps.512", f32v, f32v, i32v, f32v)
        parts = [builder.call(permute, [registers[2 * p], columns, registers[2 * p + 1]])
                 for p in range(len(registers) // 2)]
    else:  # avx2: vpermps reads one register; the index's low 3 bits pick the lane
        permute = native.declare(builder.module, "llvm.x86.avx2.permps", f32v, f32v, i32v)
        parts = [builder.call(permute, [register, columns]) for register in registers]
    if len(parts) == 1:
        return parts[0]
    part_of_lane = builder.lshr(columns, constant_vector(i32, [table.bit_length() - 1] * lanes))
    result = parts[0]
    for p in range(1, len(parts)):
        chosen = builder.icmp_unsigned("==", part_of_lane, constant_vector(i32, [p] * lanes))
        result = builder.select(chosen, parts[p], result)
    return result


# The kernel's int64 argument block, filled by ``nm_linear_forward`` and read by the kernel's IR.
ARGUMENTS = native.Arguments("values", "metadata", "x", "y", "kept", "row_bytes", "in_features", "out_features",
                             "batch", "block_chunks")


def build(kind: str, n: int, m: int, value_format: str, target: Target | None = None) -> ir.Module:
    """IR of ``forward(arguments, row_lo, row_hi)`` for one kind, pattern and value format, for ``target``
    (default this machine): rows ``row_lo .. row_hi-1`` of ``y`` for every batch row, in column blocks of
    ``block_chunks`` chunks; ``ROWS_TOGETHER`` rows at a time, the last few one by one. ``arguments`` is an
    :data:`ARGUMENTS` block."""
    target = target or native.host()
    if kind not in kinds_for(target):
        raise ValueError(f"kind {kind!r} does not run on {target}; it runs {kinds_for(target)}")
    module = native.new_module(f"nm_linear_{kind}_{n}_{m}_{value_format}", target)
    native_half = half_instructions(target)
    together = define_rows_dot(module, kind, n, m, value_format, ROWS_TOGETHER, native_half)
    one = define_rows_dot(module, kind, n, m, value_format, 1, native_half)
    function = ir.Function(module, native.KERNEL_TYPE, "forward")
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    arguments, row_lo, row_hi = function.args
    read = ARGUMENTS.reader(builder, arguments)
    element = F32 if value_format == "fp32" else I16
    values, metadata = read("values", pointer=True), read("metadata", pointer=True)
    x, y = read("x", pointer=True), read("y", pointer=True)
    kept, row_bytes, in_features, out_features, batch, block_chunks = (
        read(name) for name in ("kept", "row_bytes", "in_features", "out_features", "batch", "block_chunks"))
    chunks = builder.udiv(kept, ir.Constant(I64, LANES[kind]))
    # The rows' streams start a quarter (for four) of the range apart: each is long and contiguous.
    stride = builder.udiv(builder.sub(row_hi, row_lo), ir.Constant(I64, ROWS_TOGETHER))
    together_hi = builder.add(row_lo, stride)
    single_lo = builder.add(row_lo, builder.mul(stride, ir.Constant(I64, ROWS_TOGETHER)))
    with native.loop(builder, ir.Constant(I64, 0), chunks, block_chunks) as chunk_lo:
        block_end = builder.add(chunk_lo, block_chunks)
        chunk_hi = builder.select(builder.icmp_signed("<", block_end, chunks), block_end, chunks)
        accumulate = builder.icmp_signed("!=", chunk_lo, ir.Constant(I64, 0))  # later blocks add to y
        for dot, start, stop in ((together, row_lo, together_hi), (one, single_lo, row_hi)):
            with native.loop(builder, start, stop) as row:
                row_values = native.address(builder, element, values, builder.mul(row, kept))
                row_metadata = native.address(builder, I8, metadata, builder.mul(row, row_bytes))
                # Batch rows one after another: the rows' values stay in L1 for the next batch row.
                with native.loop(builder, ir.Constant(I64, 0), batch) as batch_row:
                    x_row = native.address(builder, F32, x, builder.mul(batch_row, in_features))
                    y_out = native.address(builder, F32, y, builder.add(builder.mul(batch_row, out_features), row))
                    builder.call(dot, [row_values, row_metadata, x_row, y_out, kept, row_bytes, stride, chunk_lo,
                                       chunk_hi, accumulate])
    builder.ret_void()
    return module


@functools.cache
def kernel(kind: str, n: int, m: int, value_format: str) -> int:
    """Address of :func:`build`'s kernel compiled for this machine."""
    return native.load(build(kind, n, m, value_format)).address("forward")


def nm_linear_forward(x: torch.Tensor, values: torch.Tensor, metadata: torch.Tensor, n: int, m: int,
                      kind: str | None = None, target: Target | None = None) -> torch.Tensor:
    """fp32 ``(B, out)`` product of ``x`` ``(B, in)`` with the compressed weight (no bias, no cast back).

    ``kind`` forces an instruction set (tests); default :func:`host_kind`. ``target`` (tests) builds the
    kernel's IR for a target this CPU can also run (e.g. without F16C: fp16 widened in integer code), and
    compiles it for this CPU. The caller checks :func:`supports` first.
    """
    kind = kind or host_kind()
    values, metadata = values.contiguous(), metadata.contiguous()
    x32 = x.to(torch.float32).contiguous()
    out_features, kept = values.shape
    y = torch.empty(x32.shape[0], out_features, dtype=torch.float32)
    value_format = VALUE_FORMATS[values.dtype]
    run = kernel(kind, n, m, value_format) if target is None else native.load(
        build(kind, n, m, value_format, target)).address("forward")
    # Batch 1 reads x's slice in blocks; larger batches measured faster with whole rows (each batch row
    # re-reads x either way, and a row's values stay in L1 across the batch).
    whole_row = kept // LANES[kind]
    block_chunks = max(1, BLOCK_COLUMNS * n // (LANES[kind] * m)) if x32.shape[0] == 1 else whole_row
    arguments = ARGUMENTS.pack(values=values.data_ptr(), metadata=metadata.data_ptr(), x=x32.data_ptr(),
                               y=y.data_ptr(), kept=kept, row_bytes=metadata.shape[1], in_features=x32.shape[1],
                               out_features=out_features, batch=x32.shape[0], block_chunks=block_chunks)
    min_rows = -(-PARALLEL_MIN_ELEMENTS // (kept * m // n))
    run_split(run, arguments, out_features, min_rows)
    return y
