"""Compressed N:M weights: kept values plus bit-packed in-group indices.

For a weight of shape ``(out, in)`` that is N:M along ``in`` (at most N non-zeros in every group of
M consecutive columns), with ``G = in / M`` groups and ``K = G * N`` kept entries per row:

- ``values``: ``(out, K)``, the weight's dtype. Kept entry ``k = g * N + j`` is the ``j``-th kept
  weight (left to right) of group ``g``.
- ``metadata``: ``(out, ceil(K * b / 8))`` uint8 with ``b = log2(M)`` bits per index (2 for M=4,
  3 for M=8, 4 for M=16). Row ``r`` is a little-endian bit stream: bits ``[k * b, (k + 1) * b)``
  hold the column of kept entry ``k`` inside its group (0..M-1). So 2:4 stores two 2-bit indices
  per group of 4 (4 bits), 4:8 four 3-bit indices per group of 8 (12 bits), and in-group indices
  ascend. A group with fewer than N non-zeros keeps some zero-valued entries (lowest columns first).

Bytes at rest relative to dense: ``N/M + N * b / (8 * M * element_size)``: 0.5625 for 2:4 and
0.59375 for 4:8 in fp16/bf16; 0.53125 and 0.546875 in fp32.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from robustprune.sparse_ops.backend import (
    check_triton_device,
    count_launch,
    skip_dynamo_until_loaded,
    triton_route,
)
from robustprune.sparse_ops.nm import check_nm_scores, nm_mask
from robustprune.sparse_ops.patterns import check_nm
from robustprune.sparse_ops.validation import SUPPORTED_DTYPES

# Rows per CPU step: bounds temporaries (int64 sort indices) to a few MB whatever the matrix size.
_ROWS_PER_STEP = 256


def index_bits(m: int) -> int:
    """Bits per in-group index: log2(M)."""
    return m.bit_length() - 1


def kept_per_row(in_features: int, n: int, m: int) -> int:
    return in_features // m * n


def metadata_row_bytes(in_features: int, n: int, m: int) -> int:
    return (kept_per_row(in_features, n, m) * index_bits(m) + 7) // 8


def pack_indices(indices: torch.Tensor, m: int) -> torch.Tensor:
    """``(rows, K)`` in-group indices -> ``(rows, ceil(K * b / 8))`` uint8 bit streams (CPU)."""
    bits = index_bits(m)
    shifts = torch.arange(bits, dtype=torch.uint8)
    planes = (indices.to(torch.uint8).unsqueeze(-1) >> shifts) & 1  # (rows, K, b), LSB first
    packed = np.packbits(planes.reshape(indices.shape[0], -1).numpy(), axis=1, bitorder="little")
    return torch.from_numpy(packed)


def unpack_indices(metadata: torch.Tensor, kept: int, m: int) -> torch.Tensor:
    """Inverse of :func:`pack_indices`: ``(rows, K)`` int64 in-group indices (CPU).

    Fields never straddle a word of ``lcm(b, 8)`` bits (one byte for b = 2 or 4, three bytes for
    b = 3), so whole words are assembled and all their fields shifted out at once.
    """
    bits = index_bits(m)
    word_bytes = math.lcm(bits, 8) // 8
    rows, row_bytes = metadata.shape
    pad = (-row_bytes) % word_bytes
    if pad:
        metadata = torch.nn.functional.pad(metadata, (0, pad))
    grouped = metadata.view(rows, -1, word_bytes).to(torch.int32)
    words = grouped[..., 0]
    for byte in range(1, word_bytes):
        words = words | (grouped[..., byte] << (8 * byte))
    shifts = torch.arange(0, 8 * word_bytes, bits, dtype=torch.int32)
    fields = (words.unsqueeze(-1) >> shifts) & (m - 1)
    return fields.view(rows, -1)[:, :kept].to(torch.int64)


def check_compressed(values: torch.Tensor, metadata: torch.Tensor, n: int, m: int, in_features: int) -> None:
    check_nm(n, m)
    if in_features <= 0 or in_features % m:
        raise ValueError(f"in_features={in_features} must be a positive multiple of M={m}")
    if values.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"values has dtype {values.dtype}; supported are float32, float16 and bfloat16")
    kept = kept_per_row(in_features, n, m)
    if values.dim() != 2 or values.shape[1] != kept:
        raise ValueError(f"values must have shape (out, {kept}) for {n}:{m} with in_features={in_features}, "
                         f"got {tuple(values.shape)}")
    expected = (values.shape[0], metadata_row_bytes(in_features, n, m))
    if metadata.dtype != torch.uint8 or tuple(metadata.shape) != expected:
        raise ValueError(f"metadata must be uint8 of shape {expected}, got {metadata.dtype} {tuple(metadata.shape)}")
    if metadata.device != values.device:
        raise ValueError(f"metadata is on {metadata.device} but values on {values.device}")


def _check_compress_input(weight: torch.Tensor, n: int, m: int) -> None:
    check_nm_scores(weight, n, m, "weight")
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D (out, in), got shape {tuple(weight.shape)}")


def _not_nm_error(weight: torch.Tensor, dropped: torch.Tensor, n: int, m: int, row_offset: int) -> ValueError:
    row, col = (int(i) for i in torch.nonzero(dropped)[0])
    group = col // m
    return ValueError(f"weight is not {n}:{m}: row {row + row_offset}, group {group} (columns "
                      f"{group * m}..{group * m + m - 1}) has more than {n} non-zeros; prune it first "
                      f"(e.g. prune=True or robustprune.magnitude_prune(..., pattern='{n}:{m}'))")


# ---------------------------------------------------------------------------------------------- compress

def nm_compress(weight: torch.Tensor, n: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Compress an N:M weight ``(out, in)`` into ``(values, metadata)`` (layout in the module docstring).

    Raises if a group holds more than ``n`` non-zeros (the weight is not N:M).
    """
    _check_compress_input(weight, n, m)
    return _nm_compress_op(weight, int(n), int(m))


@torch.library.custom_op("robustprune::nm_compress", mutates_args=(), device_types="cpu")
def _nm_compress_op(weight: torch.Tensor, n: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    if triton_route():  # route("triton"): the CUDA implementation on these CPU tensors
        return _nm_compress_triton(weight, n, m)
    count_launch("robustprune::nm_compress", "cpu", (weight,))
    _check_compress_input(weight, n, m)
    out, in_features = weight.shape
    kept = kept_per_row(in_features, n, m)
    values = torch.empty(out, kept, dtype=weight.dtype)
    metadata = torch.empty(out, metadata_row_bytes(in_features, n, m), dtype=torch.uint8)
    for start in range(0, out, _ROWS_PER_STEP):
        rows = weight[start:start + _ROWS_PER_STEP]
        keep = nm_mask(rows, n, m)  # the n largest |w|: every non-zero of an N:M group is among them
        dropped = (rows != 0) & ~keep
        if bool(dropped.any()):
            raise _not_nm_error(weight, dropped, n, m, start)
        groups = keep.view(rows.shape[0], -1, m)
        # Stable sort puts each group's kept lanes first, in ascending column order.
        lanes = torch.sort(groups.logical_not().to(torch.uint8), dim=-1, stable=True).indices[..., :n]
        values[start:start + rows.shape[0]] = torch.gather(rows.reshape(groups.shape), -1, lanes).flatten(1)
        metadata[start:start + rows.shape[0]] = pack_indices(lanes.flatten(1), m)
    return values, metadata


@_nm_compress_op.register_kernel("cuda")
def _nm_compress_triton(weight: torch.Tensor, n: int, m: int):
    count_launch("robustprune::nm_compress", "triton", (weight,))
    _check_compress_input(weight, n, m)
    check_triton_device(weight, "weight")
    from robustprune.kernels.nm_format import compress, pack_index_stream

    out, in_features = weight.shape
    weight = weight.contiguous()
    values = torch.empty(out, kept_per_row(in_features, n, m), dtype=weight.dtype, device=weight.device)
    indices = torch.empty(values.shape, dtype=torch.uint8, device=weight.device)
    overfull = torch.zeros(1, dtype=torch.int32, device=weight.device)
    compress(weight, values, indices, overfull, n, m)
    if int(overfull):
        keep = nm_mask(weight.cpu(), n, m)
        raise _not_nm_error(weight, (weight.cpu() != 0) & ~keep, n, m, 0)
    metadata = torch.empty(out, metadata_row_bytes(in_features, n, m), dtype=torch.uint8, device=weight.device)
    pack_index_stream(indices, metadata, index_bits(m))
    return values, metadata


@_nm_compress_op.register_fake
def _nm_compress_fake(weight: torch.Tensor, n: int, m: int):
    _check_compress_input(weight, n, m)
    out, in_features = weight.shape
    return (weight.new_empty(out, kept_per_row(in_features, n, m)),
            weight.new_empty(out, metadata_row_bytes(in_features, n, m), dtype=torch.uint8))


# -------------------------------------------------------------------------------------------- decompress

def nm_decompress(values: torch.Tensor, metadata: torch.Tensor, n: int, m: int, in_features: int) -> torch.Tensor:
    """Rebuild the dense ``(out, in_features)`` weight from ``(values, metadata)`` (exact)."""
    check_compressed(values, metadata, n, m, in_features)
    return _nm_decompress_op(values, metadata, int(n), int(m), int(in_features))


def decompress_rows(values: torch.Tensor, metadata: torch.Tensor, n: int, m: int, in_features: int,
                    out: torch.Tensor | None = None) -> torch.Tensor:
    """CPU: dense rows from a slice of compressed rows, written into ``out`` if given."""
    rows = values.shape[0]
    dense = torch.zeros(rows, in_features, dtype=values.dtype) if out is None else out.zero_()
    lanes = unpack_indices(metadata, values.shape[1], m).view(rows, -1, n)
    dense.view(rows, -1, m).scatter_(2, lanes, values.view(rows, -1, n))
    return dense


@torch.library.custom_op("robustprune::nm_decompress", mutates_args=(), device_types="cpu")
def _nm_decompress_op(values: torch.Tensor, metadata: torch.Tensor, n: int, m: int, in_features: int) -> torch.Tensor:
    if triton_route():  # route("triton"): the CUDA implementation on these CPU tensors
        return _nm_decompress_triton(values, metadata, n, m, in_features)
    count_launch("robustprune::nm_decompress", "cpu", (values, metadata))
    check_compressed(values, metadata, n, m, in_features)
    dense = torch.empty(values.shape[0], in_features, dtype=values.dtype)
    for start in range(0, values.shape[0], _ROWS_PER_STEP):
        stop = start + _ROWS_PER_STEP
        decompress_rows(values[start:stop], metadata[start:stop], n, m, in_features, out=dense[start:stop])
    return dense


@_nm_decompress_op.register_kernel("cuda")
def _nm_decompress_triton(values: torch.Tensor, metadata: torch.Tensor, n: int, m: int, in_features: int):
    count_launch("robustprune::nm_decompress", "triton", (values, metadata))
    check_compressed(values, metadata, n, m, in_features)
    check_triton_device(values, "values")
    from robustprune.kernels.nm_format import decompress

    dense = torch.empty(values.shape[0], in_features, dtype=values.dtype, device=values.device)
    decompress(values.contiguous(), metadata.contiguous(), dense, n, m)
    return dense


@_nm_decompress_op.register_fake
def _nm_decompress_fake(values: torch.Tensor, metadata: torch.Tensor, n: int, m: int, in_features: int):
    check_compressed(values, metadata, n, m, in_features)
    return values.new_empty(values.shape[0], in_features)


skip_dynamo_until_loaded(_nm_compress_op)
skip_dynamo_until_loaded(_nm_decompress_op)
