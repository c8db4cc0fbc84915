"""Torch custom ops ``robustprune::*`` (CPU implementation, CUDA implementation launching a Triton
kernel, fake implementation for ``torch.compile``), the compressed N:M format and SparseLinear."""

from robustprune.sparse_ops.convert import (
    BytesReport,
    load_sparse_model,
    save_sparse_model,
    sparse_bytes_report,
    sparsify_model,
)
from robustprune.sparse_ops.hard_concrete import hard_concrete_gate, sample_hard_concrete_noise
from robustprune.sparse_ops.magnitude import magnitude_mask_, magnitude_thresholds
from robustprune.sparse_ops.masks import pack_mask, packed_size, unpack_mask
from robustprune.sparse_ops.nm import nm_mask
from robustprune.sparse_ops.nm_format import nm_compress, nm_decompress
from robustprune.sparse_ops.nm_linear import nm_linear
from robustprune.sparse_ops.obs import sparsegpt_hinv, sparsegpt_prune_
from robustprune.sparse_ops.patterns import NMPattern, parse_pattern
from robustprune.sparse_ops.sparse_linear import SparseLinear

__all__ = [
    "BytesReport",
    "NMPattern",
    "SparseLinear",
    "hard_concrete_gate",
    "load_sparse_model",
    "magnitude_mask_",
    "magnitude_thresholds",
    "nm_compress",
    "nm_decompress",
    "nm_linear",
    "nm_mask",
    "pack_mask",
    "sample_hard_concrete_noise",
    "packed_size",
    "parse_pattern",
    "save_sparse_model",
    "sparse_bytes_report",
    "sparsegpt_hinv",
    "sparsegpt_prune_",
    "sparsify_model",
    "unpack_mask",
]
