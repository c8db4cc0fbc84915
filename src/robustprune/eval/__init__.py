"""Evaluation of what pruning does: datasets, clean accuracy, attacks, distribution shifts, analysis."""

from robustprune.eval.analysis import (
    es_robust,
    essential_sparsity,
    flag_collapsed,
    hamming_distance,
    mask_cosine,
)
from robustprune.eval.attacks import AttackReport, attack, build_recipe
from robustprune.eval.classifier import ClassificationResult, TextClassifier, evaluate_classifier
from robustprune.eval.datasets import (
    TextDataset,
    load_advglue_json,
    load_csv,
    load_glue_task,
    load_glue_tsv,
    load_hf_dataset,
    load_jsonl,
)
from robustprune.eval.perplexity import file_perplexity, perplexity
from robustprune.eval.shifts import apply_shift
from robustprune.eval.zero_shot import PromptTemplate, evaluate_zero_shot, get_template

__all__ = [
    "AttackReport",
    "ClassificationResult",
    "PromptTemplate",
    "TextClassifier",
    "TextDataset",
    "apply_shift",
    "attack",
    "build_recipe",
    "es_robust",
    "essential_sparsity",
    "evaluate_classifier",
    "evaluate_zero_shot",
    "file_perplexity",
    "flag_collapsed",
    "get_template",
    "hamming_distance",
    "load_advglue_json",
    "load_csv",
    "load_glue_task",
    "load_glue_tsv",
    "load_hf_dataset",
    "load_jsonl",
    "mask_cosine",
    "perplexity",
]
