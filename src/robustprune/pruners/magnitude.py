"""One-shot magnitude pruning (OMP): remove the weights with the smallest |W|.

Unstructured pruning ranks weights globally (one threshold across all targets) or per matrix;
N:M pruning keeps the N largest of every M consecutive input-dim weights. Weights are zeroed in
place and the keep-masks are returned so that training can hold them fixed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from robustprune.sparse_ops.magnitude import magnitude_mask_, magnitude_thresholds
from robustprune.sparse_ops.masks import pack_mask
from robustprune.sparse_ops.nm import check_nm_scores, nm_mask
from robustprune.sparse_ops.patterns import NMPattern, resolve_sparsity
from robustprune.sparse_ops.radix_select import NonFiniteError
from robustprune.sparse_ops.validation import check_finite
from robustprune.targets import input_dim_last, select_targets

SCOPES = ("global", "layer")


@torch.no_grad()
def magnitude_prune(
    model: nn.Module,
    sparsity: float | None = None,
    *,
    scope: str = "global",
    pattern: str | NMPattern = "unstructured",
    targets: str | Sequence[str] | None = None,
    packed_masks: bool = False,
) -> dict[str, torch.Tensor]:
    """Prune ``model`` in place by weight magnitude and return ``{parameter name: keep-mask}``.

    Args:
        model: a Hugging Face (or any) ``nn.Module``.
        sparsity: fraction of targeted weights to remove, in [0, 1). Exactly
            ``round(sparsity * n)`` weights are pruned (ties at the cut: earliest tensor, then
            row-major index). For N:M patterns leave it None (it is fixed at 1 - N/M).
        scope: ``"global"`` (one threshold over all targets) or ``"layer"`` (one per matrix).
        pattern: ``"unstructured"`` or ``"N:M"`` (N kept of every M along the input dimension).
        targets: None for the Linear layers inside the transformer blocks, or glob patterns of
            module names (see :func:`robustprune.targets.select_targets`).
        packed_masks: return bit-packed uint8 masks (8 per byte) instead of bool.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    sparsity, nm = resolve_sparsity(sparsity, pattern)
    modules = select_targets(model, targets)
    named_weights = {f"{name}.weight": module for name, module in modules.items()}
    weights = [module.weight for module in modules.values()]

    if nm is not None:
        oriented = [input_dim_last(module, weight) for module, weight in zip(modules.values(), weights)]
        for name, weight in zip(named_weights, oriented):  # validate everything before touching anything
            check_nm_scores(weight, nm.n, nm.m, name)
            check_finite(weight, name)
        masks = {}
        for (name, module), weight in zip(named_weights.items(), oriented):
            mask = nm_mask(weight, nm.n, nm.m)
            weight.mul_(mask)
            mask = input_dim_last(module, mask)
            masks[name] = pack_mask(mask) if packed_masks else mask
        return masks

    groups = [list(range(len(weights)))] if scope == "global" else [[i] for i in range(len(weights))]
    # All thresholds first: they validate every weight (finite, supported dtype) before any is zeroed.
    names = list(named_weights)
    cuts = [_named_thresholds([names[i] for i in group], [weights[i].data for i in group], [sparsity])
            for group in groups]
    masks_by_index: dict[int, torch.Tensor] = {}
    for group, (thresholds, tie_quota) in zip(groups, cuts):
        for position, i in enumerate(group):
            masks_by_index[i] = magnitude_mask_(weights[i].data, float(thresholds[0]),
                                                int(tie_quota[0, position]), packed_masks)
    return {name: masks_by_index[i] for i, name in enumerate(named_weights)}


def _named_thresholds(names: Sequence[str], weights: Sequence[torch.Tensor], sparsities: Sequence[float]
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`magnitude_thresholds`, with a NaN/Inf weight reported by its parameter name."""
    try:
        return magnitude_thresholds(weights, sparsities)
    except NonFiniteError as error:
        raise ValueError(f"{names[error.tensor_index]} contains NaN/Inf value(s); magnitude pruning needs finite "
                         "weights") from None


class MagnitudeSweep:
    """Unstructured magnitude cuts for a whole list of sparsities from ONE selection over the weights.

    :func:`robustprune.ops.magnitude_thresholds` ranks the targeted weights once for every
    sparsity; :meth:`prune` then applies one cut to a model that holds the same weights (a copy of the
    measured model), with exactly the masks :func:`magnitude_prune` would give. Masks are nested: a
    higher sparsity prunes a superset of a lower one's weights.

    Args:
        model: the dense model whose weights are ranked (not modified).
        sparsities: every sparsity the sweep will prune at, each in [0, 1).
        scope: ``"global"`` or ``"layer"``, as for :func:`magnitude_prune`.
        targets: as for :func:`magnitude_prune`.
    """

    @torch.no_grad()
    def __init__(self, model: nn.Module, sparsities: Sequence[float], *, scope: str = "global",
                 targets: str | Sequence[str] | None = None) -> None:
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
        self.sparsities = [float(s) for s in sparsities]
        self.targets = targets
        modules = select_targets(model, targets)
        self.names = [f"{name}.weight" for name in modules]
        weights = [module.weight.data for module in modules.values()]
        groups = [list(range(len(weights)))] if scope == "global" else [[i] for i in range(len(weights))]
        # cut[i] = (thresholds per sparsity, tie quota per sparsity) of weight i
        self._cuts: list[tuple[torch.Tensor, torch.Tensor]] = [None] * len(weights)  # type: ignore[list-item]
        for group in groups:
            thresholds, tie_quota = _named_thresholds([self.names[i] for i in group], [weights[i] for i in group],
                                                      self.sparsities)
            for position, i in enumerate(group):
                self._cuts[i] = (thresholds, tie_quota[:, position])

    @torch.no_grad()
    def prune(self, model: nn.Module, sparsity: float, *, packed_masks: bool = False) -> dict[str, torch.Tensor]:
        """Prune ``model`` (same weights as the ranked model) in place at ``sparsity``; keep-masks."""
        if float(sparsity) not in self.sparsities:
            raise ValueError(f"sparsity {sparsity} was not ranked; this sweep has {self.sparsities}")
        k = self.sparsities.index(float(sparsity))
        modules = select_targets(model, self.targets)
        names = [f"{name}.weight" for name in modules]
        if names != self.names:
            raise ValueError("model's targets differ from the ranked model's: "
                             f"{len(names)} vs {len(self.names)} weights")
        masks: dict[str, torch.Tensor] = {}
        for i, (name, module) in enumerate(zip(names, modules.values())):
            thresholds, quota = self._cuts[i]
            masks[name] = magnitude_mask_(module.weight.data, float(thresholds[k]), int(quota[k]), packed_masks)
        return masks


def masks_sparsity(masks: Mapping[str, torch.Tensor]) -> float:
    """Fraction of pruned entries over all (bool) keep-masks."""
    total = sum(mask.numel() for mask in masks.values())
    kept = sum(int(mask.sum()) for mask in masks.values())
    return 1.0 - kept / total if total else 0.0
