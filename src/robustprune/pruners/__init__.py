"""Pruning methods, one module each, built on the ``robustprune::`` ops."""

from robustprune.pruners.magnitude import magnitude_prune
from robustprune.pruners.targets import select_targets

__all__ = ["magnitude_prune", "select_targets"]
