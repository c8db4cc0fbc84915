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


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """Pack a bool mask into ``ceil(numel / 8)`` uint8 bytes (see module docstring for the layout)."""
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {mask.dtype}")
    flat = mask.reshape(-1)
    if flat.device.type == "cpu":
        return torch.from_numpy(np.packbits(flat.numpy(), bitorder="little"))
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return (flat.view(-1, 8).to(torch.uint8) << _SHIFTS.to(flat.device)).sum(dim=1, dtype=torch.uint8)


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
