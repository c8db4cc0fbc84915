"""Pruning methods, one module each, built on the ``robustprune::`` ops (loaded on first use)."""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "calibration_data": ["calibration_batches", "dataset_calibration_texts"],
        "early_robust": ["early_robust", "early_robust_search"],
        "imp": ["iterative_magnitude_prune"],
        "magnitude": ["MagnitudeSweep", "magnitude_prune"],
        "random_masks": ["layer_matched_random_masks", "random_prune"],
        "robust_tickets": ["HardConcreteMasks", "draw_ticket", "robust_ticket"],
        "sparsegpt": ["collect_hessians", "sparsegpt_prune"],
        "wanda": ["collect_input_norms", "wanda_prune"],
    },
)
