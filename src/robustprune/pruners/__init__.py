"""Pruning methods, one module each, built on the ``robustprune::`` ops."""

from robustprune.pruners.calibration_data import calibration_batches, read_text_lines
from robustprune.pruners.magnitude import magnitude_prune
from robustprune.pruners.sparsegpt import collect_hessians, sparsegpt_prune
from robustprune.pruners.wanda import collect_input_norms, wanda_prune

__all__ = ["calibration_batches", "collect_hessians", "collect_input_norms", "magnitude_prune", "read_text_lines",
           "sparsegpt_prune", "wanda_prune"]
