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
from robustprune.eval.shifts import apply_shift

__all__ = [
    "AttackReport",
    "ClassificationResult",
    "TextClassifier",
    "TextDataset",
    "apply_shift",
    "attack",
    "build_recipe",
    "es_robust",
    "essential_sparsity",
    "evaluate_classifier",
    "flag_collapsed",
    "hamming_distance",
    "load_advglue_json",
    "load_csv",
    "load_glue_task",
    "load_glue_tsv",
    "load_hf_dataset",
    "load_jsonl",
    "mask_cosine",
]
