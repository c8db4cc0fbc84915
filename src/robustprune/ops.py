"""The ``robustprune::`` custom ops and their helpers: the low-level tier under the pruners.

Each op has a vectorised CPU implementation, a CUDA implementation that launches a Triton kernel and a
fake implementation for ``torch.compile``; see :mod:`robustprune.sparse_ops` for the code.
"""

from robustprune.sparse_ops.hard_concrete import hard_concrete_gate, sample_hard_concrete_noise
from robustprune.sparse_ops.magnitude import magnitude_mask_, magnitude_thresholds
from robustprune.sparse_ops.masks import pack_mask, packed_size, unpack_mask
from robustprune.sparse_ops.nm import nm_mask
from robustprune.sparse_ops.nm_format import nm_compress, nm_decompress
from robustprune.sparse_ops.nm_linear import nm_linear
from robustprune.sparse_ops.obs import sparsegpt_hinv, sparsegpt_prune_
from robustprune.sparse_ops.patterns import NMPattern, parse_pattern
from robustprune.sparse_ops.scores import score_keep_mask, score_thresholds

__all__ = [
    "NMPattern",
    "hard_concrete_gate",
    "magnitude_mask_",
    "magnitude_thresholds",
    "nm_compress",
    "nm_decompress",
    "nm_linear",
    "nm_mask",
    "pack_mask",
    "packed_size",
    "parse_pattern",
    "sample_hard_concrete_noise",
    "score_keep_mask",
    "score_thresholds",
    "sparsegpt_hinv",
    "sparsegpt_prune_",
    "unpack_mask",
]
