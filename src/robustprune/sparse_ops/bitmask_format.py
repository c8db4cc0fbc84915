"""Values + bitmask: a pruned weight of any sparsity at rest, in compressed-tensors' ``sparse-bitmask`` layout.

compressed-tensors (llm-compressor's checkpoint format, read by transformers and vLLM) stored sparse
weights this way up to its release 0.14; later releases dropped the sparse compressors, so checkpoints
published in the format can no longer be opened by the library that wrote them. robustprune writes and
reads the same layout. For a 2-D weight ``W`` of shape ``(rows, cols)`` saved under the prefix ``P``
(the module's name, ``P.weight`` being the dense tensor):

- ``P.compressed``: 1-D, ``W``'s dtype, the non-zero entries in row-major order.
- ``P.bitmask``: uint8 ``(rows, ceil(cols / 8))``, bit ``c % 8`` (least significant first, numpy's
  ``packbits(..., bitorder="little")``) of byte ``c // 8`` in row ``r`` set when ``W[r, c] != 0``;
  the padding bits past ``cols`` are zero.
- ``P.shape``: int64 ``[rows, cols]``.
- ``P.row_offsets``: ``(rows,)``, the index in ``compressed`` where row ``r`` starts. compressed-tensors
  wrote int64; robustprune writes int32 (4 bytes per row instead of 8; compressed-tensors' reader never
  uses the offsets) and accepts both. They are redundant with the bitmask and checked against it on load.

``sparse-24-bitmask`` (compressed-tensors' 2:4 variant) is the same bitmask with ``compressed`` shaped
``(rows, cols / 2)``, ``shape`` shaped ``(2, 1)`` and no row offsets; :func:`bitmask_decode` reads both.

Bytes at rest relative to dense: ``(1 - s) + 1 / (8 * element_size) + 4 / (cols * element_size)`` at
sparsity ``s``: 0.5625 + 2 / cols for fp16 / bf16 at 50 %, 0.53125 + 1 / cols for fp32.

Zeros are not stored, so a signed zero (``-0.0``, which ``w * 0`` gives for negative ``w``) comes back as
``+0.0``: equal as a number, every non-zero weight comes back bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch

from robustprune.sparse_ops.validation import SUPPORTED_DTYPES

#: Suffixes of the tensors one matrix is stored as (``sparse-bitmask``).
BITMASK_KEYS = ("compressed", "bitmask", "shape", "row_offsets")


def bitmask_bytes(rows: int, cols: int, nonzeros: int, element_size: int) -> int:
    """Bytes at rest of a ``(rows, cols)`` weight with ``nonzeros`` non-zero entries, as robustprune writes it."""
    return nonzeros * element_size + rows * ((cols + 7) // 8) + 2 * 8 + rows * 4


def bitmask_encode(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"compressed", "bitmask", "shape", "row_offsets"}`` of a 2-D weight (CPU tensors, layout above).

    Raises:
        TypeError: ``weight`` is not float32, float16 or bfloat16.
        ValueError: ``weight`` is not 2-D or has more than 2**31 - 1 entries (int32 row offsets).
    """
    if not isinstance(weight, torch.Tensor) or weight.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"weight must be a float32, float16 or bfloat16 tensor, got "
                        f"{getattr(weight, 'dtype', type(weight).__name__)}")
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D (rows, cols), got shape {tuple(weight.shape)}")
    if weight.numel() >= 2**31:
        raise ValueError(f"weight has {weight.numel()} entries; the int32 row offsets address at most 2**31 - 1")
    weight = weight.detach().cpu()
    keep = weight != 0
    counts = keep.sum(dim=1, dtype=torch.int64)
    offsets = (torch.cumsum(counts, 0) - counts).to(torch.int32)
    packed = torch.from_numpy(np.packbits(keep.numpy(), axis=-1, bitorder="little"))
    return {"compressed": weight[keep].contiguous(), "bitmask": packed,
            "shape": torch.tensor(list(weight.shape), dtype=torch.int64), "row_offsets": offsets}


def _shape_of(shape: torch.Tensor, where: str) -> tuple[int, int]:
    if not isinstance(shape, torch.Tensor) or shape.dtype not in (torch.int64, torch.int32) or shape.numel() != 2:
        raise ValueError(f"{where}: 'shape' must hold two integers (rows, cols), got "
                         f"{getattr(shape, 'dtype', None)} {tuple(getattr(shape, 'shape', ()))}")
    rows, cols = (int(v) for v in shape.flatten())
    if rows < 1 or cols < 1:
        raise ValueError(f"{where}: 'shape' must be positive, got {[rows, cols]}")
    return rows, cols


def bitmask_decode(compressed: torch.Tensor, bitmask: torch.Tensor, shape: torch.Tensor | tuple[int, int],
                   row_offsets: torch.Tensor | None = None, where: str = "weight") -> torch.Tensor:
    """The dense ``(rows, cols)`` weight from its values + bitmask form (``sparse-bitmask`` or
    ``sparse-24-bitmask``), exact. Every part is checked first.

    Raises:
        ValueError: a part has the wrong dtype or shape, the number of values differs from the bits set,
            padding bits are set, or the row offsets disagree with the bitmask; ``where`` names the matrix.
    """
    rows, cols = _shape_of(shape if isinstance(shape, torch.Tensor) else torch.tensor(list(shape)), where)
    row_bytes = (cols + 7) // 8
    if not isinstance(bitmask, torch.Tensor) or bitmask.dtype != torch.uint8 \
            or tuple(bitmask.shape) != (rows, row_bytes):
        raise ValueError(f"{where}: 'bitmask' must be uint8 of shape {(rows, row_bytes)} for a {rows}x{cols} "
                         f"weight, got {getattr(bitmask, 'dtype', None)} {tuple(getattr(bitmask, 'shape', ()))}")
    if not isinstance(compressed, torch.Tensor) or compressed.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"{where}: 'compressed' must be float32, float16 or bfloat16 values, got "
                         f"{getattr(compressed, 'dtype', None)}")
    bits = np.unpackbits(bitmask.cpu().numpy(), axis=-1, bitorder="little")
    if bits[:, cols:].any():
        raise ValueError(f"{where}: 'bitmask' has bits set past column {cols} (damaged file?)")
    keep = torch.from_numpy(bits[:, :cols].astype(bool))
    counts = keep.sum(dim=1, dtype=torch.int64)
    if compressed.numel() != int(counts.sum()):
        raise ValueError(f"{where}: 'compressed' holds {compressed.numel()} values but the bitmask marks "
                         f"{int(counts.sum())} non-zeros (damaged or mismatched file?)")
    if row_offsets is not None:
        expected = torch.cumsum(counts, 0) - counts
        if row_offsets.dtype not in (torch.int32, torch.int64) or tuple(row_offsets.shape) != (rows,) \
                or not torch.equal(row_offsets.cpu().to(torch.int64), expected):
            raise ValueError(f"{where}: 'row_offsets' disagree with the bitmask (damaged or mismatched file?)")
    dense = torch.zeros(rows, cols, dtype=compressed.dtype)
    dense[keep] = compressed.detach().cpu().reshape(-1)
    return dense


def decode_bitmask_state(tensors: dict[str, torch.Tensor], prefixes: list[str] | None = None,
                         source: str = "file") -> dict[str, torch.Tensor]:
    """A state dict with every values + bitmask group ``P.{compressed,bitmask,shape[,row_offsets]}`` replaced
    by the dense ``P.weight``; other tensors pass through unchanged.

    Args:
        tensors: the file's tensors by name (not modified).
        prefixes: the groups to decode; None finds every prefix that has a ``.bitmask`` tensor.
        source: names the file in errors.

    Raises:
        ValueError: a group lacks a part or fails :func:`bitmask_decode`'s checks, or its ``P.weight`` is
            also present.
    """
    if prefixes is None:
        prefixes = sorted(key[: -len(".bitmask")] for key in tensors if key.endswith(".bitmask"))
    out = dict(tensors)
    for prefix in prefixes:
        parts = {suffix: out.pop(f"{prefix}.{suffix}", None) for suffix in BITMASK_KEYS}
        missing = [s for s in ("compressed", "bitmask", "shape") if parts[s] is None]
        if missing:
            raise ValueError(f"{source}: the values + bitmask weight {prefix!r} lacks {missing}")
        if f"{prefix}.weight" in out:
            raise ValueError(f"{source}: {prefix!r} is stored both dense and as values + bitmask")
        out[f"{prefix}.weight"] = bitmask_decode(parts["compressed"], parts["bitmask"], parts["shape"],
                                                 parts["row_offsets"], where=f"{source}: {prefix}")
    return out


__all__ = ["BITMASK_KEYS", "bitmask_bytes", "bitmask_decode", "bitmask_encode", "decode_bitmask_state"]
