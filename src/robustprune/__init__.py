"""robustprune: fast, exact pruning experiments on pre-trained transformers.

The names here are the pipeline a researcher calls: pruners, sparse layers and their save/load,
calibration data, training, evaluation and its analysis, data loaders and model loaders. The
``robustprune::`` custom ops behind them live in :mod:`robustprune.ops`. Everything loads on first
use, so ``import robustprune`` itself imports neither torch nor transformers.
"""

from importlib import metadata as _metadata

import lazy_loader as _lazy

from robustprune import _forks  # noqa: F401  (first: notes a fork of this process from here on)

try:  # one source of truth: the version in pyproject.toml, as installed
    __version__ = _metadata.version("robustprune")
except _metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["data", "eval", "experiments", "models", "ops", "pruners", "sparse_ops", "targets", "train"],
    submod_attrs={
        # pruning
        "pruners.magnitude": ["MagnitudeSweep", "magnitude_prune"],
        "pruners.wanda": ["collect_input_norms", "wanda_prune"],
        "pruners.random_masks": ["random_prune"],
        "pruners.sparsegpt": ["collect_hessians", "sparsegpt_prune"],
        "pruners.imp": ["iterative_magnitude_prune"],
        "pruners.robust_tickets": ["robust_ticket"],
        "pruners.early_robust": ["early_robust"],
        "pruners.calibration_data": ["calibration_batches", "dataset_calibration_texts"],
        "targets": ["select_targets"],
        # sparse layers
        "sparse_ops.patterns": ["NMPattern"],
        "sparse_ops.sparse_linear": ["SparseLinear"],
        "sparse_ops.convert": ["load_compressed_tensors", "load_sparse_model", "save_sparse_model",
                               "sparse_bytes_report", "sparsify_model"],
        "sparse_ops.pretrained": ["load_pretrained", "save_pruned_model"],
        # training
        "train.finetune": ["finetune_classifier"],
        "train.schedule": ["TrainingSchedule"],
        "train.adversarial": ["FreeLB", "PGD"],
        # evaluation and analysis
        "eval.classifier": ["TextClassifier", "evaluate_classifier"],
        "eval.attacks.attack": ["attack"],
        "eval.shifts": ["apply_shift"],
        "eval.perplexity": ["perplexity"],
        "eval.zero_shot": ["evaluate_zero_shot"],
        "eval.analysis": ["es_robust", "essential_sparsity", "essential_sparsity_paired", "flag_collapsed",
                          "wilson_interval"],
        # data and models
        "data.datasets": ["TextDataset", "load_advglue_json", "load_csv", "load_glue_task", "load_glue_tsv",
                          "load_hf_dataset", "load_jsonl"],
        "data.texts": ["read_text_lines"],
        "models": ["load_causal_lm", "load_smollm2"],
    },
)
__all__ = [*__all__, "__version__"]
