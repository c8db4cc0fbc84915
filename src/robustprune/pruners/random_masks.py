"""Random pruning: the control every pruning method should beat.

Each targeted weight gets an independent uniform score from one seeded generator (targets in order,
row-major); the lowest scores are pruned with exactly the rules of magnitude pruning: exactly
``round(sparsity * n)`` weights globally or per matrix, or the N largest scores of every M along the
input dimension. So the masks are uniformly random at the requested sparsity, and the same seed gives
the same masks on any model with the same target shapes.

:func:`layer_matched_random_masks` is the random control of a learned ticket (Robust Tickets' "Random"
baseline): the same number of kept weights in every matrix as the ticket, at uniformly random positions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from robustprune.pruners.magnitude import SCOPES
from robustprune.sparse_ops.nm import nm_mask
from robustprune.sparse_ops.patterns import NMPattern, resolve_sparsity
from robustprune.sparse_ops.scores import score_keep_mask, score_thresholds
from robustprune.targets import input_dim_last, select_targets


@torch.no_grad()
def random_prune(
    model: nn.Module,
    sparsity: float | None = None,
    *,
    seed: int = 0,
    scope: str = "global",
    pattern: str | NMPattern = "unstructured",
    targets: str | Sequence[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Prune ``model`` in place with uniformly random masks and return ``{parameter name: keep-mask}``.

    Args:
        model: a Hugging Face (or any) ``nn.Module``.
        sparsity: fraction of targeted weights to remove, in [0, 1); None for N:M patterns.
        seed: seeds the scores (``torch.Generator().manual_seed(seed)``); the global RNG is untouched.
        scope: ``"global"`` (exactly ``round(sparsity * n)`` over all targets, spread at random) or
            ``"layer"`` (exactly that share of every matrix).
        pattern: ``"unstructured"`` or ``"N:M"`` (N kept at random of every M along the input dimension).
        targets: as for :func:`robustprune.pruners.magnitude.magnitude_prune`.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    sparsity, nm = resolve_sparsity(sparsity, pattern)
    modules = select_targets(model, targets)
    names = [f"{name}.weight" for name in modules]
    generator = torch.Generator().manual_seed(int(seed))
    scores = [torch.rand(module.weight.shape, generator=generator) for module in modules.values()]
    if nm is not None:
        masks = {name: input_dim_last(module, nm_mask(input_dim_last(module, score), nm.n, nm.m))
                 for name, module, score in zip(names, modules.values(), scores)}
    else:
        groups = [list(range(len(scores)))] if scope == "global" else [[i] for i in range(len(scores))]
        masks_by_index: dict[int, torch.Tensor] = {}
        for group in groups:
            thresholds, tie_quota = score_thresholds([scores[i] for i in group], [sparsity])
            for position, i in enumerate(group):
                masks_by_index[i] = score_keep_mask(scores[i], float(thresholds[0]), int(tie_quota[0, position]))
        masks = {name: masks_by_index[i] for i, name in enumerate(names)}
    for module, mask in zip(modules.values(), masks.values()):
        module.weight.data.mul_(mask.to(device=module.weight.device, dtype=module.weight.dtype))
    return masks


@torch.no_grad()
def layer_matched_random_masks(masks: Mapping[str, torch.Tensor], *, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random keep-masks with ``masks``' per-tensor counts: for each tensor (in mapping order) exactly as many
    kept entries as ``masks`` keeps there, at uniformly random positions.

    Each tensor gets independent uniform scores from one ``torch.Generator().manual_seed(seed)`` (tensors in
    order, row-major) and keeps its ``k`` highest, so the same seed and shapes give the same masks, and the
    masks of one seed are nested as ``k`` grows (a lower sparsity keeps a superset). The global RNG is
    untouched.

    Args:
        masks: ``{parameter name: bool keep-mask}`` (True = kept), e.g. a ticket from
            :func:`robustprune.pruners.robust_tickets.draw_ticket`.
        seed: seeds the positions.

    Returns:
        ``{parameter name: bool keep-mask}`` with ``masks``' names, shapes and per-tensor kept counts, on the
        CPU.
    """
    if len(masks) == 0:
        raise ValueError("masks is empty; pass {parameter name: bool keep-mask}")
    generator = torch.Generator().manual_seed(int(seed))
    out = {}
    for name, mask in masks.items():
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise TypeError(f"masks[{name!r}] must be a bool tensor (True = kept), got "
                            f"{getattr(mask, 'dtype', type(mask).__name__)}")
        scores = torch.rand(mask.shape, generator=generator)
        kept = int(mask.sum())
        flat = torch.zeros(mask.numel(), dtype=torch.bool)
        flat[torch.topk(scores.flatten(), kept).indices] = True
        out[name] = flat.reshape(mask.shape)
    return out


__all__ = ["layer_matched_random_masks", "random_prune"]
