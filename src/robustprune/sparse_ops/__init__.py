"""Torch custom ops ``robustprune::*`` (CPU implementation, CUDA implementation launching a Triton
kernel, fake implementation for ``torch.compile``), the compressed N:M format and SparseLinear.

The ops' public tier is :mod:`robustprune.ops`; this package exports the sparse layer and its model-level
conversion, save and load (N:M compressed, values + bitmask, compressed-tensors checkpoints); checkpoint
directories are :mod:`robustprune.sparse_ops.pretrained`.
"""

from robustprune.sparse_ops.convert import (
    BytesReport,
    load_compressed_tensors,
    load_sparse_model,
    save_sparse_model,
    sparse_bytes_report,
    sparsify_model,
)
from robustprune.sparse_ops.sparse_linear import SparseLinear

__all__ = ["BytesReport", "SparseLinear", "load_compressed_tensors", "load_sparse_model", "save_sparse_model",
           "sparse_bytes_report", "sparsify_model"]
