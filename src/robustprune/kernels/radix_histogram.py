"""Histograms of one radix digit of |x|'s fp32 bit pattern, for exact selection without sorting.

For non-negative floats the IEEE-754 bit pattern, read as an integer, orders like the value, so the
k-th smallest magnitude can be found digit by digit: histogram the top digit, pick the bucket that
holds rank k, then histogram the next digit of only the elements in that bucket, and so on. Several
ranks (one per target sparsity) may sit in different buckets: one launch counts the next digit for
up to ``PREFIX_SLOTS`` buckets (prefixes) at once, so a tensor is read once per digit for every
``PREFIX_SLOTS`` prefixes, not once per (digit, prefix). An element's high bits equal at most one prefix, so each element lands in at most
one row of the ``[prefixes, bins]`` histogram.

Each program counts ``BLOCKS_PER_PROGRAM`` blocks of ``BLOCK`` elements into one histogram in registers
and flushes it with one atomic add per bin, so the atomics are ``bins x prefixes`` per
``BLOCK x BLOCKS_PER_PROGRAM`` elements rather than per ``BLOCK``.

Per launch over a tensor of ``n`` elements of ``s`` bytes, ``p`` prefixes, ``b`` bins, ``P`` programs:
  bytes read    = n * s  (+ p * 4 for the prefixes)
  bytes written = P * p * b * 4  (atomic adds into the int32 histogram)
  operations    = integer compares and one histogram update per element; no floating-point FLOPs
(:func:`radix_histogram_bytes`). Why one launch per tensor, not one for all tensors: the tensors of a
model differ in dtype and size, and a launch per tensor already reads each tensor once per digit.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAGNITUDE_MASK = 0x7FFFFFFF  # clears the sign bit: |x| without computing it
PREFIX_SLOTS = 4  # prefixes per launch: 4 x 1,024 int32 bins stay in registers without spilling
BLOCK = 1024
BLOCKS_PER_PROGRAM = 8


@triton.jit
def radix_histogram_kernel(
    x_ptr,
    prefixes_ptr,
    hist_ptr,
    numel,
    num_prefixes,
    PREFIX_SHIFT: tl.constexpr,
    DIGIT_SHIFT: tl.constexpr,
    NUM_BINS: tl.constexpr,
    SLOTS: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCKS_PER_PROGRAM: tl.constexpr,
):
    pid = tl.program_id(0)
    slots = tl.arange(0, SLOTS)
    prefixes = tl.load(prefixes_ptr + slots, mask=slots < num_prefixes, other=-1)  # -1 matches nothing
    counts = tl.zeros((SLOTS * NUM_BINS,), dtype=tl.int32)
    for block in range(BLOCKS_PER_PROGRAM):
        offsets = (pid * BLOCKS_PER_PROGRAM + block) * BLOCK + tl.arange(0, BLOCK)
        in_bounds = offsets < numel
        # fp16/bf16 widen exactly to fp32, so one bit layout serves every dtype.
        x = tl.load(x_ptr + offsets, mask=in_bounds, other=0.0).to(tl.float32)
        bits = x.to(tl.int32, bitcast=True) & 0x7FFFFFFF
        hit = (bits >> PREFIX_SHIFT)[:, None] == prefixes[None, :]
        slot = tl.sum(tl.where(hit, slots[None, :], 0), axis=1)
        matched = in_bounds & (tl.sum(hit.to(tl.int32), axis=1) > 0)
        digit = (bits >> DIGIT_SHIFT) & (NUM_BINS - 1)
        counts += tl.histogram(slot * NUM_BINS + digit, SLOTS * NUM_BINS, mask=matched)
    bins = tl.arange(0, SLOTS * NUM_BINS)
    tl.atomic_add(hist_ptr + bins, counts, mask=bins < num_prefixes * NUM_BINS)


def radix_histogram_bytes(numel: int, element_size: int, prefixes: int, bins: int,
                          blocks_per_program: int = BLOCKS_PER_PROGRAM, block: int = BLOCK) -> tuple[int, int]:
    """``(bytes read, bytes written)`` of one :func:`radix_histogram` launch (the module docstring's model)."""
    programs = triton.cdiv(numel, block * blocks_per_program)
    return numel * element_size + prefixes * 4, programs * prefixes * bins * 4


def radix_histogram(
    x: torch.Tensor,
    hist: torch.Tensor,
    prefixes: torch.Tensor,
    prefix_shift: int,
    digit_shift: int,
    blocks_per_program: int = BLOCKS_PER_PROGRAM,
) -> None:
    """Add to ``hist`` (int32 ``[len(prefixes), bins]``, power-of-two bins, contiguous) the digit counts of
    the elements whose high bits match each prefix.

    Row ``r`` counts the elements of ``x`` with ``(bits >> prefix_shift) == prefixes[r]`` by
    ``(bits >> digit_shift)`` masked to ``bins``, where ``bits`` is the fp32 bit pattern of ``|x|``;
    ``prefix_shift=31`` with prefix 0 selects every element. ``prefixes`` (int32, distinct, at most
    :data:`PREFIX_SLOTS` of them) live on ``x``'s device.
    """
    x = x.reshape(-1)
    numel = x.numel()
    count, bins = hist.shape
    if count != prefixes.numel() or not 1 <= count <= PREFIX_SLOTS:
        raise ValueError(f"hist has {count} rows for {prefixes.numel()} prefixes (1 to {PREFIX_SLOTS} per launch)")
    # Fixed launch: it adds into hist (timing runs would count again); BLOCK x blocks_per_program is the flush unit.
    grid = (triton.cdiv(numel, BLOCK * blocks_per_program),)
    radix_histogram_kernel[grid](
        x, prefixes, hist, numel, count,
        PREFIX_SHIFT=prefix_shift, DIGIT_SHIFT=digit_shift, NUM_BINS=bins,
        SLOTS=1 if count == 1 else PREFIX_SLOTS, BLOCK=BLOCK, BLOCKS_PER_PROGRAM=blocks_per_program,
    )
