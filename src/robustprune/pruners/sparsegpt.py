"""SparseGPT one-shot pruning (Frantar & Alistarh, 2023): prune each Linear and let the surviving weights
absorb the error, using the inverse Hessian of the layer's calibration inputs.

Calibration is sequential (:func:`robustprune.pruners.calibration.run_blocks_sequentially`): block ``l``
is calibrated on the outputs of the already-pruned blocks ``< l``. Inside a block, forward hooks on the
targeted Linear / Conv1D layers accumulate ``H = 2 X X^T`` in fp32 as a running mean over the real
(non-padding) calibration tokens, exactly as the reference ``add_batch`` does
(``H *= n / (n + t); n += t; X = sqrt(2 / n) X; H += X X^T``; ``t`` counts real tokens here, where the
reference counts sequences of equal length, so ``H`` only differs by a constant factor, which
SparseGPT's masks and updates do not depend on). Layers that receive the very same input tensor in a
forward pass (attention q/k/v, Llama's gate/up projections) share one Hessian and one ``Hinv``. Each
target is then pruned by :func:`robustprune.sparse_ops.obs.sparsegpt_prune_`, the fast form of the
paper's layer algorithm (read it in :mod:`robustprune.sparse_ops.sparsegpt_algorithm`).

Sweeps: :func:`collect_hessians` runs the calibration once on the DENSE model (its blocks are never
pruned, so block ``l`` is calibrated on dense outputs of the blocks ``< l``) and returns every target's
Hessian; ``sparsegpt_prune(model, None, sparsity, hessians=...)`` then prunes from them without any
calibration run, as many times as wanted (the Hessians are not modified). This is not the sequential
default: there, block ``l``'s Hessians depend on the sparsity through the pruned blocks before it; only
the first block's agree. All Hessians are held at once: ``in_features^2 x 4`` bytes per distinct
Hessian (modules sharing an input share one tensor), see
:func:`robustprune.pruners.calibration.hessian_bytes`.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from robustprune.pruners.calibration import (
    BlockInputs,
    hessian_bytes,
    resolve_block_stack,
    run_blocks_sequentially,
)
from robustprune.pruners.input_statistics import block_input_statistics
from robustprune.sparse_ops.obs import DEFAULT_BLOCKSIZE, DEFAULT_DAMP, sparsegpt_hinv, sparsegpt_prune_
from robustprune.sparse_ops.patterns import NMPattern, resolve_sparsity
from robustprune.sparse_ops.validation import check_finite
from robustprune.targets import LINEAR_TYPES, input_dim_last, select_targets

logger = logging.getLogger(__name__)


class RunningHessian:
    """``H = 2 X X^T`` in fp32 as a running mean over real tokens, the reference ``add_batch`` update
    (``H *= n / (n + t); n += t; X = sqrt(2 / n) X; H += X X^T``)."""

    def __init__(self) -> None:
        self.hessian: torch.Tensor | None = None
        self.tokens = 0

    def add(self, rows: torch.Tensor) -> None:
        if self.hessian is None:
            self.hessian = torch.zeros(rows.shape[1], rows.shape[1], dtype=torch.float32, device=rows.device)
        count = rows.shape[0]
        self.hessian.mul_(self.tokens / (self.tokens + count))
        self.tokens += count
        rows = rows.float() * math.sqrt(2.0 / self.tokens)
        self.hessian.addmm_(rows.t(), rows)


def _check_arguments(blocksize: int, damp: float, nm: NMPattern | None) -> None:
    if isinstance(blocksize, bool) or not isinstance(blocksize, int) or blocksize < 1:
        raise ValueError(f"blocksize must be a positive int, got {blocksize!r}")
    if nm is not None and blocksize % nm.m:
        raise ValueError(f"blocksize={blocksize} must be a multiple of M={nm.m} for pattern {nm}")
    if isinstance(damp, bool) or not isinstance(damp, (int, float)) or not 0.0 <= damp < float("inf"):
        raise ValueError(f"damp must be a finite float >= 0 (a fraction of mean(diag H)), got {damp!r}")


def _check_targets(modules: Mapping[str, nn.Module], stack_name: str,
                   nm: NMPattern | None) -> None:
    not_linear = [name for name, module in modules.items() if not isinstance(module, LINEAR_TYPES)]
    if not_linear:
        raise ValueError(f"SparseGPT prunes Linear / Conv1D weights (it needs their input Hessian); "
                         f"these targets are not: {not_linear}")
    prefix = f"{stack_name}."
    outside = [name for name in modules if not name.startswith(prefix)]
    if outside:
        raise ValueError(f"SparseGPT calibrates the transformer blocks in {stack_name!r} one by one; targets "
                         f"outside them cannot be pruned: {outside}")
    for name, module in modules.items():
        weight = input_dim_last(module, module.weight)
        if nm is not None and weight.shape[1] % nm.m:
            raise ValueError(f"{name}.weight has in_features={weight.shape[1]}, not divisible by M={nm.m}: "
                             f"cannot form {nm} groups (N = weights kept per group of M)")
        check_finite(weight.detach(), f"{name}.weight")


def _log_hessian_budget(model: nn.Module, targets: str | Sequence[str] | None, progress: bool,
                        hold_all: bool = False) -> None:
    budget = hessian_bytes(model, targets)
    summary = budget.summary()
    if hold_all:
        summary += (f"; collect_hessians keeps all of them: at most {budget.total / 2**20:.1f} MiB "
                    "(less where modules share an input)")
    logger.info(summary)
    if progress:
        from tqdm.auto import tqdm

        tqdm.write(summary, file=sys.stderr)


def _block_targets(modules: Mapping[str, nn.Module], stack_name: str, index: int) -> dict[str, nn.Module]:
    prefix = f"{stack_name}.{index}."
    return {name: module for name, module in modules.items() if name.startswith(prefix)}


def _block_hessians(index: int, block: nn.Module, inputs: BlockInputs,
                    block_targets: Mapping[str, nn.Module]) -> list[tuple[list[str], torch.Tensor]]:
    """``(members, Hessian)`` of every distinct input of the block's targets, in first-call order."""
    groups = block_input_statistics(index, block, inputs, block_targets, RunningHessian)
    return [(group.members, group.statistic.hessian) for group in groups]


def _require_finite(hessian: torch.Tensor, members: Sequence[str]) -> None:
    if not bool(torch.isfinite(hessian).all()):
        raise ValueError(f"SparseGPT: the input Hessian of target(s) {list(members)} is not finite (NaN or Inf "
                         "activations in calibration); the update would be meaningless")


def _group_hinv(hessian: torch.Tensor, device: torch.device, damp: float, *,
                consume: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Hinv, dead)`` of one (possibly shared) Hessian on ``device``.

    ``consume``: the Hessian is ours to overwrite (the sequential path); otherwise it is left unchanged
    (a copy is damped and factorised).
    """
    local = hessian.to(device)
    return sparsegpt_hinv(local, damp, inplace=consume or local is not hessian)


def _prune_members(hinv: torch.Tensor, dead: torch.Tensor, members: Mapping[str, nn.Module], sparsity: float,
                   nm: NMPattern | None, blocksize: int) -> dict[str, torch.Tensor]:
    """Prune the modules sharing one ``Hinv``; keep-masks in each weight's own orientation."""
    any_dead = bool(dead.any())
    masks: dict[str, torch.Tensor] = {}
    for name, module in members.items():
        weight = input_dim_last(module, module.weight.data)
        if any_dead:
            weight[:, dead] = 0
        mask = sparsegpt_prune_(weight, hinv, sparsity, pattern=nm, blocksize=blocksize)
        masks[f"{name}.weight"] = input_dim_last(module, mask)
    return masks


def _prepare(model: nn.Module, targets: str | Sequence[str] | None,
             nm: NMPattern | None) -> tuple[str, dict[str, nn.Module]]:
    stack_name, _ = resolve_block_stack(model)
    modules = select_targets(model, targets)
    _check_targets(modules, stack_name, nm)
    return stack_name, modules


def _check_batches(batches: Sequence[Mapping[str, Any]] | None) -> None:
    if batches is None or len(batches) == 0:
        raise ValueError("empty calibration set: SparseGPT needs calibration batches (e.g. 128 samples from "
                         "calibration_batches), or Hessians from collect_hessians (hessians=...)")


@torch.no_grad()
def collect_hessians(
    model: nn.Module,
    batches: Sequence[Mapping[str, Any]],
    *,
    targets: str | Sequence[str] | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """The fp32 Hessian ``H = 2 X X^T`` of every target from the DENSE model's activations, for sweeps.

    One calibration run serves any number of :func:`sparsegpt_prune` calls (``hessians=``); the model
    is not modified. This differs from the sequential default, where block ``l`` is calibrated on the
    outputs of the already-pruned blocks before it (so its Hessians depend on the sparsity); the first
    block's Hessians are the same either way.

    Modules that receive the same input (q/k/v, gate/up) map to one shared tensor object. Every
    Hessian is held at once: ``in_features^2 x 4`` bytes per distinct Hessian (logged up front from
    :func:`robustprune.pruners.calibration.hessian_bytes`, an upper bound that ignores the sharing).
    The tensors stay on the device the blocks were calibrated on (``device``, else the block's own).

    Args:
        model, batches, targets, device, progress: as for :func:`sparsegpt_prune`.

    Returns:
        ``{module name: [in, in] float32 Hessian}`` in target order.
    """
    _check_batches(batches)
    stack_name, modules = _prepare(model, targets, None)
    _log_hessian_budget(model, targets, progress, hold_all=True)
    hessians: dict[str, torch.Tensor] = {}

    def visit(index: int, block: nn.Module, inputs: BlockInputs) -> None:
        block_targets = _block_targets(modules, stack_name, index)
        if not block_targets:
            return
        for members, hessian in _block_hessians(index, block, inputs, block_targets):
            for name in members:
                hessians[name] = hessian

    run_blocks_sequentially(model, batches, visit, device=device, progress=progress)
    return {name: hessians[name] for name in modules}


def _shared_groups(modules: Mapping[str, nn.Module],
                   hessians: Mapping[str, torch.Tensor]) -> list[tuple[torch.Tensor, dict[str, nn.Module]]]:
    """Targets grouped by identical Hessian tensor object, in target order."""
    missing = [name for name in modules if name not in hessians]
    if missing:
        raise ValueError(f"hessians has no Hessian for {len(missing)} target(s): {missing[:3]}"
                         f"{' ...' if len(missing) > 3 else ''}; collect them with collect_hessians for the "
                         "same targets")
    groups: dict[int, tuple[torch.Tensor, dict[str, nn.Module]]] = {}
    for name, module in modules.items():
        hessian = hessians[name]
        columns = input_dim_last(module, module.weight).shape[1]
        if not isinstance(hessian, torch.Tensor) or tuple(hessian.shape) != (columns, columns):
            shape = tuple(hessian.shape) if isinstance(hessian, torch.Tensor) else type(hessian).__name__
            raise ValueError(f"hessians[{name!r}] has shape {shape}, expected ({columns}, {columns})")
        groups.setdefault(id(hessian), (hessian, {}))[1][name] = module
    return list(groups.values())


@torch.no_grad()
def sparsegpt_prune(
    model: nn.Module,
    batches: Sequence[Mapping[str, Any]] | None,
    sparsity: float | None = None,
    *,
    pattern: str | NMPattern = "unstructured",
    targets: str | Sequence[str] | None = None,
    blocksize: int = DEFAULT_BLOCKSIZE,
    damp: float = DEFAULT_DAMP,
    device: torch.device | str | None = None,
    progress: bool = True,
    hessians: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Prune ``model`` in place with SparseGPT and return ``{parameter name: bool keep-mask}``.

    Args:
        model: a Hugging Face encoder or decoder (BERT family, OPT, Llama, GPT-2, ...).
        batches: calibration batches, dicts to call ``model(**batch)`` with (see
            :func:`robustprune.pruners.calibration_data.calibration_batches`; SparseGPT uses 128
            samples). Padding tokens (``attention_mask == 0``) do not enter the Hessians. None (ignored)
            when ``hessians`` is given.
        sparsity: unstructured: fraction removed from every target, in [0, 1); per block of
            ``blocksize`` input columns exactly ``int(out * width * sparsity)`` weights are pruned (the
            scores are compared over all rows of the block jointly, as in the reference). For N:M
            patterns leave it None (it is fixed at 1 - N/M).
        pattern: ``"unstructured"`` or ``"N:M"`` (N KEPT of every M along the input dimension).
        targets: None for the Linear layers inside the transformer blocks, or glob patterns of
            module names (see :func:`robustprune.targets.select_targets`); all must lie inside the
            block stack.
        blocksize: columns per lazy-update block (128 as in the reference).
        damp: fraction of ``mean(diag H)`` added to the Hessian's diagonal (retried 10x larger, with a
            warning, when the Hessian is not positive definite).
        device: where each block is calibrated and pruned (the model stays where it is); None: in place.
            Unused with ``hessians`` (each target is pruned where its weight is).
        progress: show a progress bar over blocks and print the Hessian memory estimate.
        hessians: Hessians from :func:`collect_hessians` (dense activations, reusable across a sweep:
            they are not modified; one ``Hinv`` per shared tensor). No calibration run happens. By
            default the Hessians are collected sequentially, block by block, on the already-pruned
            model, so the masks of every block after the first differ between the two.

    Returns:
        Keep-masks in each parameter's own orientation (GPT-2's Conv1D weights are ``[in, out]``).

    Raises:
        ValueError: an empty calibration set (without ``hessians``), a target missing from
            ``hessians`` or with a Hessian of the wrong shape, ``sparsity`` missing or conflicting
            with an N:M ``pattern``, an input dimension not divisible by M, targets outside the block
            stack or not Linear, NaN/Inf weights, an unsupported architecture.
            A target saw no real calibration tokens, or NaN/Inf activations gave it a non-finite Hessian.
        RuntimeError: :class:`~robustprune.sparse_ops.obs.HessianNotPositiveDefiniteError` when damping
            fails.
    """
    if hessians is None:
        _check_batches(batches)
    sparsity, nm = resolve_sparsity(sparsity, pattern)
    _check_arguments(blocksize, damp, nm)
    stack_name, modules = _prepare(model, targets, nm)
    masks: dict[str, torch.Tensor] = {}

    if hessians is not None:
        groups = list(_shared_groups(modules, hessians))
        for hessian, members in groups:  # all checked before any weight changes
            _require_finite(hessian, list(members))
        for hessian, members in groups:
            device = next(iter(members.values())).weight.device
            hinv, dead = _group_hinv(hessian, device, damp, consume=False)
            masks.update(_prune_members(hinv, dead, members, sparsity, nm, blocksize))
            del hinv
        return {f"{name}.weight": masks[f"{name}.weight"] for name in modules}

    _log_hessian_budget(model, targets, progress)

    def visit(index: int, block: nn.Module, inputs: BlockInputs) -> None:
        block_targets = _block_targets(modules, stack_name, index)
        if not block_targets:
            return
        groups = _block_hessians(index, block, inputs, block_targets)
        while groups:
            names, hessian = groups.pop(0)  # dropped from the list: freed as soon as its Hinv exists
            members = {name: block_targets[name] for name in names}
            _require_finite(hessian, names)
            hinv, dead = _group_hinv(hessian, hessian.device, damp, consume=True)
            del hessian
            masks.update(_prune_members(hinv, dead, members, sparsity, nm, blocksize))
            del hinv

    run_blocks_sequentially(model, batches, visit, device=device, progress=progress)
    # Masks live with the weights (a block calibrated on `device` has been moved back).
    return {f"{name}.weight": masks[f"{name}.weight"].to(module.weight.device) for name, module in modules.items()}


__all__ = ["collect_hessians", "sparsegpt_prune"]
