"""Pruning methods, one module each, built on the ``robustprune::`` ops."""

from robustprune.pruners.magnitude import magnitude_prune

__all__ = ["magnitude_prune"]
