"""Pruning methods, one module each, built on the ``robustprune::`` ops."""

from robustprune.pruners.calibration_data import (
    calibration_batches,
    dataset_calibration_texts,
    read_text_lines,
)
from robustprune.pruners.early_robust import early_robust, early_robust_search
from robustprune.pruners.imp import iterative_magnitude_prune
from robustprune.pruners.magnitude import MagnitudeSweep, magnitude_prune
from robustprune.pruners.robust_tickets import HardConcreteMasks, draw_ticket, robust_ticket
from robustprune.pruners.sparsegpt import collect_hessians, sparsegpt_prune
from robustprune.pruners.wanda import collect_input_norms, wanda_prune

__all__ = [
    "HardConcreteMasks",
    "MagnitudeSweep",
    "calibration_batches",
    "collect_hessians",
    "collect_input_norms",
    "dataset_calibration_texts",
    "draw_ticket",
    "early_robust",
    "early_robust_search",
    "iterative_magnitude_prune",
    "magnitude_prune",
    "read_text_lines",
    "robust_ticket",
    "sparsegpt_prune",
    "wanda_prune",
]
