"""Bit-packed keep-masks: 8 mask entries per byte.

Layout: the mask is flattened in row-major order; bit ``i`` (least significant first) of byte ``j``
holds element ``8 * j + i``; the last byte is zero-padded. ``True``/1 means the weight is kept.
"""

from __future__ import annotations

import math

import numpy as np
import torch

_SHIFTS = torch.arange(8, dtype=torch.uint8)


def packed_size(numel: int) -> int:
    """Number of bytes a bit-packed mask of ``numel`` entries occupies."""
    return (numel + 7) // 8


# Eight 0/1 bytes read as one int64 (little-endian, as on every CPU torch runs on), times this, hold their
# packed byte (first byte in the least significant bit) in bits 56-63.
_GATHER_BITS = 0x0102040810204080


def pack_bytes_into(keep: torch.Tensor, out: torch.Tensor, product: torch.Tensor | None = None) -> None:
    """Pack ``keep`` (bool, a multiple of 8 entries, contiguous, starting at a multiple of 8 bytes) into
    ``out`` (``keep.numel() // 8`` uint8). ``product``: an int64 scratch of ``keep.numel() // 8`` entries
    to use instead of allocating one."""
    words = keep.view(torch.uint8).view(torch.int64)
    product = torch.mul(words, _GATHER_BITS, out=product) if product is not None else words * _GATHER_BITS
    out.copy_(product.bitwise_right_shift_(56).bitwise_and_(0xFF))


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """Pack a bool mask into ``ceil(numel / 8)`` uint8 bytes (see module docstring for the layout)."""
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {mask.dtype}")
    flat = mask.reshape(-1)
    pad = (-flat.numel()) % 8
    if pad or flat.storage_offset() % 8:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    packed = torch.empty(flat.numel() // 8, dtype=torch.uint8, device=flat.device)
    pack_bytes_into(flat, packed)
    return packed


def unpack_mask(packed: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`pack_mask`: return the bool mask of the given shape."""
    if packed.dtype != torch.uint8:
        raise TypeError(f"packed mask must be uint8, got {packed.dtype}")
    numel = math.prod(int(size) for size in shape)
    if packed.numel() != packed_size(numel):
        raise ValueError(f"packed mask has {packed.numel()} bytes, a mask of shape {tuple(shape)} "
                         f"needs {packed_size(numel)}")
    if packed.device.type == "cpu":
        bits = np.unpackbits(packed.reshape(-1).numpy(), count=numel, bitorder="little")
        return torch.from_numpy(bits).view(torch.bool).reshape(shape)
    bits = (packed.reshape(-1, 1) >> _SHIFTS.to(packed.device)) & 1
    return bits.reshape(-1)[:numel].to(torch.bool).reshape(shape)


def clear_packed_bits_(packed: torch.Tensor, flat_indices: torch.Tensor) -> None:
    """Set the mask bits of the given (sorted, unique) flat element indices to 0."""
    if flat_indices.numel() == 0:
        return
    byte_index = flat_indices // 8
    bit_value = torch.ones_like(flat_indices, dtype=torch.int32) << (flat_indices % 8).to(torch.int32)
    unique_bytes, inverse = torch.unique_consecutive(byte_index, return_inverse=True)
    cleared = torch.zeros(unique_bytes.numel(), dtype=torch.int32, device=packed.device)
    cleared.index_add_(0, inverse, bit_value)
    packed[unique_bytes] &= (~cleared & 0xFF).to(torch.uint8)
