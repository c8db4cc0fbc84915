"""robustprune: fast, exact pruning experiments on pre-trained transformers."""

from robustprune.pruners import (
    calibration_batches,
    collect_hessians,
    collect_input_norms,
    magnitude_prune,
    read_text_lines,
    sparsegpt_prune,
    wanda_prune,
)
from robustprune.sparse_ops import (
    NMPattern,
    SparseLinear,
    load_sparse_model,
    magnitude_mask_,
    magnitude_thresholds,
    nm_compress,
    nm_decompress,
    nm_linear,
    nm_mask,
    pack_mask,
    save_sparse_model,
    sparse_bytes_report,
    sparsify_model,
    unpack_mask,
)
from robustprune.targets import select_targets

__version__ = "0.1.0"

__all__ = [
    "NMPattern",
    "SparseLinear",
    "calibration_batches",
    "collect_hessians",
    "collect_input_norms",
    "load_sparse_model",
    "magnitude_mask_",
    "magnitude_prune",
    "magnitude_thresholds",
    "nm_compress",
    "nm_decompress",
    "nm_linear",
    "nm_mask",
    "pack_mask",
    "read_text_lines",
    "save_sparse_model",
    "select_targets",
    "sparse_bytes_report",
    "sparsegpt_prune",
    "sparsify_model",
    "unpack_mask",
    "wanda_prune",
]
