"""robustprune: fast, exact pruning experiments on pre-trained transformers."""

from robustprune.pruners.magnitude import magnitude_prune
from robustprune.sparse_ops import (
    NMPattern,
    magnitude_mask_,
    magnitude_thresholds,
    nm_mask,
    pack_mask,
    unpack_mask,
)

__version__ = "0.1.0"

__all__ = [
    "NMPattern",
    "magnitude_mask_",
    "magnitude_prune",
    "magnitude_thresholds",
    "nm_mask",
    "pack_mask",
    "unpack_mask",
]
