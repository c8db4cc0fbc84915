"""Wanda (Sun et al., 2023): prune by |W_ij| * ||X_j||_2, no weight update.

The input-channel norms ``||X_j||_2`` are collected over every real (non-padding) calibration token
as a running mean of squared norms in fp32, block by block and sequentially: block ``l`` sees the
outputs of the already-pruned blocks before it. Unstructured pruning compares scores within each
output row and removes ``int(sparsity * in_features)`` per row (stable sort: among equal scores the
lower column goes first, as in the reference code); N:M keeps the N largest scores of every M
consecutive input weights (ties keep the lower index, as :func:`robustprune.ops.nm_mask`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from robustprune.pruners.calibration import BlockInputs, run_blocks_sequentially
from robustprune.pruners.input_statistics import block_input_statistics
from robustprune.sparse_ops.nm import nm_mask
from robustprune.sparse_ops.patterns import NMPattern, resolve_sparsity
from robustprune.sparse_ops.validation import check_finite
from robustprune.targets import find_block_stack, input_dim_last, select_targets

_ROWS_PER_SORT = 1024  # rows sorted at a time: bounds the int64 sort indices


class InputNorms:
    """Running mean over tokens of each input channel's squared value, fp32 (the reference's scaler_row)."""

    def __init__(self) -> None:
        self.squared: torch.Tensor | None = None
        self.tokens = 0

    def add(self, rows: torch.Tensor) -> None:
        """Accumulate ``[tokens, in_features]`` rows (any leading shape is flattened)."""
        rows = rows.reshape(-1, rows.shape[-1]).float()
        count = rows.shape[0]
        if count == 0:
            return
        if self.squared is None:
            self.squared = torch.zeros(rows.shape[1], dtype=torch.float32, device=rows.device)
        self.squared *= self.tokens / (self.tokens + count)
        self.tokens += count
        self.squared += rows.pow(2).sum(dim=0) / self.tokens

    def norms(self) -> torch.Tensor:
        if self.squared is None:
            raise ValueError("no calibration rows were added: the input norms are undefined")
        return self.squared.sqrt()


def wanda_scores(weight: torch.Tensor, input_norms: torch.Tensor) -> torch.Tensor:
    """|W| * ||X_j|| for a weight with the input dimension last."""
    return weight.detach().float().abs() * input_norms.unsqueeze(0)


def row_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask pruning the ``int(sparsity * columns)`` lowest scores of every row (stable sort)."""
    pruned_per_row = int(scores.shape[1] * sparsity)
    keep = torch.ones(scores.shape, dtype=torch.bool, device=scores.device)
    for start in range(0, scores.shape[0], _ROWS_PER_SORT):
        rows = scores[start:start + _ROWS_PER_SORT]
        lowest = torch.sort(rows, dim=1, stable=True).indices[:, :pruned_per_row]
        keep[start:start + _ROWS_PER_SORT].scatter_(1, lowest, False)
    return keep


def _check_targets(model: nn.Module, targets: str | Sequence[str] | None) -> dict[str, nn.Module]:
    modules = select_targets(model, targets)
    stack = find_block_stack(model)
    for name, module in modules.items():
        if not name.startswith(f"{stack}."):
            raise ValueError(f"target {name!r} lies outside the transformer blocks ({stack}); Wanda only "
                             "calibrates layers inside them")
        check_finite(module.weight, f"{name}.weight")
    return modules


def _in_block(modules: dict[str, nn.Module], block: nn.Module) -> dict[str, nn.Module]:
    inside = {id(m) for m in block.modules()}
    return {name: module for name, module in modules.items() if id(module) in inside}


def _block_input_norms(index: int, block: nn.Module, inputs: BlockInputs,
                       targets: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """||X_j||_2 of every target's inputs over the real tokens of all calibration batches."""
    if not targets:
        return {}
    groups = block_input_statistics(index, block, inputs, targets, InputNorms)
    return {name: group.statistic.norms() for group in groups for name in group.members}


def _check_norms(name: str, module: nn.Module, norms: torch.Tensor) -> None:
    in_features = input_dim_last(module, module.weight).shape[1]
    if norms.shape != (in_features,):
        raise ValueError(f"input norms of {name!r} have shape {tuple(norms.shape)}, expected ({in_features},)")
    if not bool(torch.isfinite(norms).all()):
        raise ValueError(f"Wanda: the input norms of target {name!r} are not finite (NaN or Inf activations in "
                         "calibration); the scores would be meaningless")


@torch.no_grad()
def _prune_module(name: str, module: nn.Module, norms: torch.Tensor, sparsity: float, nm: NMPattern | None
                  ) -> torch.Tensor:
    _check_norms(name, module, norms)
    weight = input_dim_last(module, module.weight)
    scores = wanda_scores(weight, norms.to(weight.device))
    keep = nm_mask(scores, nm.n, nm.m) if nm is not None else row_mask(scores, sparsity)
    weight.mul_(keep.to(weight.dtype))
    return input_dim_last(module, keep)


def collect_input_norms(
    model: nn.Module,
    batches: Sequence[Mapping[str, Any]],
    *,
    targets: str | Sequence[str] | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Input-channel norms of every target from the DENSE model's activations, for sparsity sweeps.

    One calibration run serves any number of :func:`wanda_prune` calls (``input_norms=``). This
    differs from the sequential default, where block ``l`` is calibrated on the outputs of the
    already-pruned blocks before it (so its statistics depend on the sparsity).
    """
    if len(batches) == 0:
        raise ValueError("empty calibration set: pass at least one calibration batch")
    modules = _check_targets(model, targets)
    norms: dict[str, torch.Tensor] = {}

    def visit(index: int, block: nn.Module, inputs: BlockInputs) -> None:
        norms.update(_block_input_norms(index, block, inputs, _in_block(modules, block)))

    run_blocks_sequentially(model, batches, visit, device=device, progress=progress)
    return norms


def wanda_prune(
    model: nn.Module,
    batches: Sequence[Mapping[str, Any]] | None,
    sparsity: float | None = None,
    *,
    pattern: str | NMPattern = "unstructured",
    targets: str | Sequence[str] | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    input_norms: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Prune ``model`` in place with Wanda and return ``{parameter name: bool keep-mask}``.

    Args:
        model: a Hugging Face transformer (BERT, Llama, OPT, GPT-2 families).
        batches: calibration batches, e.g. from
            :func:`robustprune.pruners.calibration_data.calibration_batches` (None when
            ``input_norms`` is given).
        sparsity: fraction removed per output row, in [0, 1); None for N:M patterns.
        pattern: ``"unstructured"`` or ``"N:M"`` (N kept of every M input weights).
        targets: module-name globs, default the Linear layers inside the transformer blocks.
        device: where each block runs during calibration (default: where it is).
        input_norms: statistics from :func:`collect_input_norms` (dense activations, reusable
            across a sweep); by default they are collected sequentially, block by block, on the
            already-pruned model.
    """
    sparsity, nm = resolve_sparsity(sparsity, pattern)
    modules = _check_targets(model, targets)
    if input_norms is not None:
        missing = [name for name in modules if name not in input_norms]
        if missing:
            raise ValueError(f"input_norms has no statistics for {missing[:3]}{' ...' if len(missing) > 3 else ''}; "
                             "collect them with collect_input_norms for the same targets")
        for name, module in modules.items():  # all checked before any weight changes
            _check_norms(name, module, input_norms[name])
        return {f"{name}.weight": _prune_module(name, m, input_norms[name], sparsity, nm)
                for name, m in modules.items()}
    if batches is None or len(batches) == 0:
        raise ValueError("empty calibration set: pass at least one calibration batch")
    masks: dict[str, torch.Tensor] = {}

    def visit(index: int, block: nn.Module, inputs: BlockInputs) -> None:
        block_targets = _in_block(modules, block)
        for name, norms in _block_input_norms(index, block, inputs, block_targets).items():
            masks[f"{name}.weight"] = _prune_module(name, block_targets[name], norms, sparsity, nm)

    run_blocks_sequentially(model, batches, visit, device=device, progress=progress)
    return {f"{name}.weight": masks[f"{name}.weight"] for name in modules}
