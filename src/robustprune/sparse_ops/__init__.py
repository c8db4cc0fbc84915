"""Torch custom ops ``robustprune::*`` (CPU implementation, CUDA implementation launching a Triton
kernel, fake implementation for ``torch.compile``) and the formats around them."""

from robustprune.sparse_ops.magnitude import magnitude_mask_, magnitude_thresholds
from robustprune.sparse_ops.masks import pack_mask, packed_size, unpack_mask
from robustprune.sparse_ops.nm import nm_mask
from robustprune.sparse_ops.patterns import NMPattern, parse_pattern

__all__ = [
    "NMPattern",
    "magnitude_mask_",
    "magnitude_thresholds",
    "nm_mask",
    "pack_mask",
    "packed_size",
    "parse_pattern",
    "unpack_mask",
]
