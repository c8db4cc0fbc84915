"""Histogram of one radix digit of |x|'s fp32 bit pattern, for exact selection without sorting.

For non-negative floats the IEEE-754 bit pattern, read as an integer, orders like the value, so the
k-th smallest magnitude can be found digit by digit: histogram the top digit, pick the bucket that
holds rank k, then histogram the next digit of only the elements in that bucket, and so on.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAGNITUDE_MASK = 0x7FFFFFFF  # clears the sign bit: |x| without computing it


@triton.jit
def radix_histogram_kernel(
    x_ptr,
    hist_ptr,
    numel,
    prefix,
    PREFIX_SHIFT: tl.constexpr,
    DIGIT_SHIFT: tl.constexpr,
    NUM_BINS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    offsets = pid * BLOCK + tl.arange(0, BLOCK)
    in_bounds = offsets < numel
    # fp16/bf16 widen exactly to fp32, so one bit layout serves every dtype.
    x = tl.load(x_ptr + offsets, mask=in_bounds, other=0.0).to(tl.float32)
    bits = x.to(tl.int32, bitcast=True) & 0x7FFFFFFF
    matches = in_bounds & ((bits >> PREFIX_SHIFT) == prefix)
    digit = (bits >> DIGIT_SHIFT) & (NUM_BINS - 1)
    counts = tl.histogram(digit, NUM_BINS, mask=matches)
    tl.atomic_add(hist_ptr + tl.arange(0, NUM_BINS), counts.to(tl.int32))


def radix_histogram(
    x: torch.Tensor,
    hist: torch.Tensor,
    prefix: int,
    prefix_shift: int,
    digit_shift: int,
    block: int = 1024,
) -> None:
    """Add to ``hist`` (int32, power-of-two length) the digit counts of elements whose high bits match.

    Counts elements of ``x`` with ``(bits >> prefix_shift) == prefix`` by ``(bits >> digit_shift)``
    masked to ``len(hist)`` bins, where ``bits`` is the fp32 bit pattern of ``|x|``.
    ``prefix_shift=31`` selects every element. Per launch: reads ``x.numel() * x.element_size()`` bytes,
    writes ``len(hist) * 4`` bytes per program (atomics); no FLOPs beyond integer compares.
    """
    x = x.reshape(-1)
    numel = x.numel()
    grid = (triton.cdiv(numel, block),)
    radix_histogram_kernel[grid](
        x, hist, numel, prefix,
        PREFIX_SHIFT=prefix_shift, DIGIT_SHIFT=digit_shift, NUM_BINS=hist.numel(), BLOCK=block,
    )
