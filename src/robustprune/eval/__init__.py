"""Evaluation of what pruning does: clean accuracy, attacks, distribution shifts, perplexity, zero-shot
prompting and the analysis of sparsity curves (the data they read comes from :mod:`robustprune.data`).

Names load on first use: ``import robustprune.eval`` imports neither the attack engine, the shifts nor
transformers until one of their names is used.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["attacks", "shifts"],
    submod_attrs={
        "analysis": ["McNemarResult", "PairedEssentialSparsity", "es_robust", "essential_sparsity",
                     "essential_sparsity_paired", "flag_collapsed", "hamming_distance", "holm", "mask_cosine",
                     "mcnemar_exact", "spearman", "spearman_test", "wilson_interval"],
        "attacks": ["AttackReport", "attack", "build_recipe"],
        "classifier": ["ClassificationResult", "TextClassifier", "evaluate_classifier"],
        "perplexity": ["file_perplexity", "perplexity"],
        "shifts": ["apply_shift"],
        "zero_shot": ["PromptTemplate", "evaluate_zero_shot", "get_template"],
    },
)
