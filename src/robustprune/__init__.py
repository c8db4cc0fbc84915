"""robustprune: fast, exact pruning experiments on pre-trained transformers."""

from robustprune.eval import (
    TextClassifier,
    TextDataset,
    attack,
    evaluate_classifier,
    load_advglue_json,
    load_glue_task,
    load_glue_tsv,
)
from robustprune.pruners import (
    MagnitudeSweep,
    calibration_batches,
    collect_hessians,
    collect_input_norms,
    magnitude_prune,
    read_text_lines,
    robust_ticket,
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
from robustprune.train import PGD, FreeLB, finetune_classifier

__version__ = "0.1.0"

__all__ = [
    "FreeLB",
    "MagnitudeSweep",
    "NMPattern",
    "PGD",
    "SparseLinear",
    "TextClassifier",
    "TextDataset",
    "attack",
    "calibration_batches",
    "collect_hessians",
    "collect_input_norms",
    "evaluate_classifier",
    "finetune_classifier",
    "load_advglue_json",
    "load_glue_task",
    "load_glue_tsv",
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
    "robust_ticket",
    "save_sparse_model",
    "select_targets",
    "sparse_bytes_report",
    "sparsegpt_prune",
    "sparsify_model",
    "unpack_mask",
    "wanda_prune",
]
