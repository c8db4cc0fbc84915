"""robustprune: fast, exact pruning experiments on pre-trained transformers."""

from importlib import metadata as _metadata

from robustprune.eval import (
    TextClassifier,
    TextDataset,
    attack,
    evaluate_classifier,
    evaluate_zero_shot,
    load_advglue_json,
    load_glue_task,
    load_glue_tsv,
    perplexity,
)
from robustprune.models import load_causal_lm, load_smollm2
from robustprune.pruners import (
    MagnitudeSweep,
    calibration_batches,
    collect_hessians,
    collect_input_norms,
    dataset_calibration_texts,
    early_robust,
    iterative_magnitude_prune,
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

try:  # one source of truth: the version in pyproject.toml, as installed
    __version__ = _metadata.version("robustprune")
except _metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

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
    "dataset_calibration_texts",
    "early_robust",
    "evaluate_classifier",
    "evaluate_zero_shot",
    "finetune_classifier",
    "iterative_magnitude_prune",
    "load_advglue_json",
    "load_causal_lm",
    "load_glue_task",
    "load_glue_tsv",
    "load_smollm2",
    "load_sparse_model",
    "magnitude_mask_",
    "magnitude_prune",
    "magnitude_thresholds",
    "nm_compress",
    "nm_decompress",
    "nm_linear",
    "nm_mask",
    "pack_mask",
    "perplexity",
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
