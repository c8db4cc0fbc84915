"""Triton kernels for the compressed N:M format (layout: robustprune.sparse_ops.nm_format).

Groups are processed flat: group ``q`` of an ``(out, in)`` weight is row ``q // G``, group ``q % G``,
and its kept entries are ``values.view(-1)[q * N : q * N + N]`` since ``K = G * N``.

Fixed launches, not autotuned: each kernel runs once per weight when it is compressed or decompressed,
so timing configs on the first call would cost more than any choice could save (and compress adds to a
counter, which timing runs would inflate).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def load_group_indices(meta_ptr, kept_entry, row, row_bytes, valid, BITS: tl.constexpr):
    """In-group column of kept entry ``kept_entry`` (index within its row) from the row's bit stream."""
    bit = kept_entry * BITS
    byte = bit >> 3
    base = meta_ptr + row * row_bytes
    low = tl.load(base + byte, mask=valid, other=0).to(tl.int32)
    high = tl.load(base + byte + 1, mask=valid & (byte + 1 < row_bytes), other=0).to(tl.int32)
    return ((low | (high << 8)) >> (bit & 7)) & ((1 << BITS) - 1)


@triton.jit
def nm_compress_kernel(w_ptr, values_ptr, indices_ptr, overfull_ptr, num_groups,
                       N: tl.constexpr, M: tl.constexpr, GROUPS_PER_PROGRAM: tl.constexpr):
    pid = tl.program_id(0)
    groups = pid * GROUPS_PER_PROGRAM + tl.arange(0, GROUPS_PER_PROGRAM)
    group_ok = groups < num_groups
    lanes = tl.arange(0, M)
    x = tl.load(w_ptr + groups[:, None] * M + lanes[None, :], mask=group_ok[:, None], other=0.0).to(tl.float32)
    bits = x.to(tl.int32, bitcast=True) & 0x7FFFFFFF
    rank = tl.zeros((GROUPS_PER_PROGRAM, M), dtype=tl.int32)
    for j in tl.static_range(M):
        lane_j = tl.sum(tl.where(lanes[None, :] == j, bits, 0), axis=1)[:, None]
        rank += ((lane_j > bits) | ((lane_j == bits) & (j < lanes[None, :]))).to(tl.int32)
    keep = rank < N
    dropped = tl.sum(tl.sum(((bits != 0) & ~keep & group_ok[:, None]).to(tl.int32), axis=1), axis=0)
    tl.atomic_add(overfull_ptr, dropped)
    # slot = how many kept lanes precede this one in its group
    slot = tl.zeros((GROUPS_PER_PROGRAM, M), dtype=tl.int32)
    for j in tl.static_range(M):
        keep_j = tl.sum(tl.where(lanes[None, :] == j, keep.to(tl.int32), 0), axis=1)[:, None]
        slot += tl.where(j < lanes[None, :], keep_j, 0)
    for j in tl.static_range(N):
        chosen = keep & (slot == j)
        value = tl.sum(tl.where(chosen, x, 0.0), axis=1)  # exactly one term: exact in fp32
        index = tl.sum(tl.where(chosen, lanes[None, :], 0), axis=1)
        tl.store(values_ptr + groups * N + j, value.to(values_ptr.dtype.element_ty), mask=group_ok)
        tl.store(indices_ptr + groups * N + j, index.to(tl.uint8), mask=group_ok)


@triton.jit
def pack_index_stream_kernel(indices_ptr, meta_ptr, kept_per_row, row_bytes,
                             BITS: tl.constexpr, BYTES_PER_PROGRAM: tl.constexpr):
    row = tl.program_id(0)
    byte = tl.program_id(1) * BYTES_PER_PROGRAM + tl.arange(0, BYTES_PER_PROGRAM)
    byte_ok = byte < row_bytes
    first = (byte * 8) // BITS
    packed = tl.zeros((BYTES_PER_PROGRAM,), dtype=tl.int32)
    for f in tl.static_range((8 + BITS - 1) // BITS + 1):  # fields overlapping one byte
        entry = first + f
        offset = entry * BITS - byte * 8  # field start relative to the byte, may be negative
        valid = byte_ok & (entry < kept_per_row) & (offset < 8)
        index = tl.load(indices_ptr + row * kept_per_row + entry, mask=valid, other=0).to(tl.int32)
        packed |= (index >> tl.maximum(-offset, 0)) << tl.maximum(offset, 0)
    tl.store(meta_ptr + row * row_bytes + byte, (packed & 0xFF).to(tl.uint8), mask=byte_ok)


@triton.jit
def nm_decompress_kernel(values_ptr, meta_ptr, dense_ptr, num_groups, groups_per_row, row_bytes,
                         N: tl.constexpr, M: tl.constexpr, BITS: tl.constexpr, GROUPS_PER_PROGRAM: tl.constexpr):
    pid = tl.program_id(0)
    groups = pid * GROUPS_PER_PROGRAM + tl.arange(0, GROUPS_PER_PROGRAM)
    group_ok = groups < num_groups
    row = groups // groups_per_row
    kept_per_row = groups_per_row * N
    lanes = tl.arange(0, M)
    dense = tl.zeros((GROUPS_PER_PROGRAM, M), dtype=tl.float32)
    for j in tl.static_range(N):
        entry = groups * N + j  # flat kept-entry index
        value = tl.load(values_ptr + entry, mask=group_ok, other=0.0).to(tl.float32)
        index = load_group_indices(meta_ptr, entry - row * kept_per_row, row, row_bytes, group_ok, BITS)
        dense += tl.where(index[:, None] == lanes[None, :], value[:, None], 0.0)
    tl.store(dense_ptr + groups[:, None] * M + lanes[None, :], dense.to(dense_ptr.dtype.element_ty),
             mask=group_ok[:, None])


def compress(weight: torch.Tensor, values: torch.Tensor, indices: torch.Tensor, overfull: torch.Tensor,
             n: int, m: int, groups_per_program: int = 64) -> None:
    """Write kept values and unpacked in-group indices (uint8); add to ``overfull`` the number of
    non-zeros that do not fit (> n per group). Reads numel * element_size bytes, writes numel * n/m
    * (element_size + 1) bytes."""
    num_groups = weight.numel() // m
    grid = (triton.cdiv(num_groups, groups_per_program),)
    nm_compress_kernel[grid](weight, values, indices, overfull, num_groups, N=n, M=m,
                             GROUPS_PER_PROGRAM=groups_per_program)


def pack_index_stream(indices: torch.Tensor, metadata: torch.Tensor, bits: int, bytes_per_program: int = 128) -> None:
    """Pack ``(rows, K)`` uint8 indices into ``(rows, row_bytes)`` little-endian bit streams."""
    rows, kept = indices.shape
    row_bytes = metadata.shape[1]
    grid = (rows, triton.cdiv(row_bytes, bytes_per_program))
    pack_index_stream_kernel[grid](indices, metadata, kept, row_bytes, BITS=bits, BYTES_PER_PROGRAM=bytes_per_program)


def decompress(values: torch.Tensor, metadata: torch.Tensor, dense: torch.Tensor, n: int, m: int,
               groups_per_program: int = 64) -> None:
    """Scatter compressed rows into ``dense`` (out, in). Reads out * K * (element_size + b / 8) bytes,
    writes out * in * element_size bytes."""
    groups_per_row = dense.shape[1] // m
    num_groups = dense.shape[0] * groups_per_row
    grid = (triton.cdiv(num_groups, groups_per_program),)
    nm_decompress_kernel[grid](values, metadata, dense, num_groups, groups_per_row, metadata.shape[1],
                               N=n, M=m, BITS=m.bit_length() - 1, GROUPS_PER_PROGRAM=groups_per_program,
                               num_warps=8 if m == 16 else 4)  # 4 warps spill at M=16 (bench.cuda_compile)
