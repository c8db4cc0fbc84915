"""Fused mask-and-apply: zero every weight with |w| < threshold in place and write the keep-mask."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def threshold_mask_kernel(
    w_ptr,
    mask_ptr,
    numel,
    threshold_bits,
    PACKED: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    offsets = pid * BLOCK + tl.arange(0, BLOCK)
    in_bounds = offsets < numel
    w = tl.load(w_ptr + offsets, mask=in_bounds, other=0.0)
    bits = w.to(tl.float32).to(tl.int32, bitcast=True) & 0x7FFFFFFF
    keep = (bits >= threshold_bits) & in_bounds  # padding lanes stay 0 in the packed last byte
    tl.store(w_ptr + offsets, tl.where(keep, w, tl.zeros_like(w)), mask=in_bounds)
    if PACKED:
        # Bit i of byte j is element 8 * j + i (least significant bit first).
        keep_bits = tl.reshape(keep.to(tl.int32), (BLOCK // 8, 8))
        shifts = tl.arange(0, 8)[None, :]
        packed = tl.sum(keep_bits << shifts, axis=1).to(tl.uint8)
        byte_offsets = pid * (BLOCK // 8) + tl.arange(0, BLOCK // 8)
        tl.store(mask_ptr + byte_offsets, packed, mask=byte_offsets < (numel + 7) // 8)
    else:
        tl.store(mask_ptr + offsets, keep.to(tl.uint8), mask=in_bounds)


def threshold_mask_(weight: torch.Tensor, mask: torch.Tensor, threshold_bits: int, packed: bool,
                    block: int = 1024) -> None:
    """Zero ``weight`` where ``|w| < threshold`` (compared as fp32 bit patterns) and write ``mask``.

    ``mask`` is uint8: one byte per element (0/1), or ``ceil(numel / 8)`` bit-packed bytes.
    Weights equal to the threshold are kept here; the caller prunes the tie quota afterwards.
    Per launch: reads and writes ``numel * element_size`` bytes, writes ``numel`` (or ``numel / 8``) mask bytes.
    """
    numel = weight.numel()
    # Fixed launch: it runs once per tensor per pruning step, so timing configs would cost more than they save.
    grid = (triton.cdiv(numel, block),)
    threshold_mask_kernel[grid](weight, mask, numel, threshold_bits, PACKED=packed, BLOCK=block)
