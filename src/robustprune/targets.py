"""Which weights a pruner touches.

Default: the Linear weights inside the transformer blocks (attention q/k/v/out and FFN in/out),
found as the ``nn.ModuleList`` that holds the most Linear layers (``bert.encoder.layer``,
``model.layers``, ``transformer.h``, ...). Embeddings, LayerNorm, biases, the pooler and the
classifier / lm_head stay dense unless named in ``targets``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

import torch
from torch import nn

try:  # GPT-2 style models use a transposed Linear
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover - transformers is a runtime dependency
    Conv1D = ()

LINEAR_TYPES = (nn.Linear,) + ((Conv1D,) if isinstance(Conv1D, type) else ())
NAMEABLE_TYPES = LINEAR_TYPES + (nn.Embedding,)


def _linears_under(module: nn.Module) -> int:
    return sum(isinstance(m, LINEAR_TYPES) for m in module.modules())


def find_block_stack(model: nn.Module) -> str:
    """Qualified name of the ModuleList of transformer blocks (the one holding most Linear layers)."""
    best_name, best_count = None, 0
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList):
            count = _linears_under(module)
            if count > best_count:
                best_name, best_count = name, count
    if best_name is None:
        raise ValueError(f"{type(model).__name__} has no nn.ModuleList of blocks holding Linear layers; "
                         "pass targets=[...] naming the modules to prune")
    return best_name


def select_targets(model: nn.Module, targets: str | Sequence[str] | None = None) -> dict[str, nn.Module]:
    """Map qualified module name -> module whose ``weight`` will be pruned.

    ``targets``: None for the default (Linear layers inside the transformer blocks), or glob
    patterns matched against qualified module names (``"*.attention.*"``, ``"classifier"``). Every
    pattern must match at least one Linear, Conv1D or Embedding module.
    """
    if targets is None:
        stack = find_block_stack(model)
        prefix = f"{stack}." if stack else ""
        return {name: m for name, m in model.named_modules()
                if name.startswith(prefix) and isinstance(m, LINEAR_TYPES)}
    patterns = [targets] if isinstance(targets, str) else list(targets)
    if not patterns:
        raise ValueError("targets is an empty list; pass None for the default targets or name modules")
    candidates = {name: m for name, m in model.named_modules() if isinstance(m, NAMEABLE_TYPES)}
    selected: dict[str, nn.Module] = {}
    for pattern in patterns:
        matched = [name for name in candidates if fnmatch.fnmatchcase(name, pattern)]
        if not matched:
            examples = ", ".join(list(candidates)[:6])
            raise ValueError(f"targets pattern {pattern!r} matches no Linear/Conv1D/Embedding module of "
                             f"{type(model).__name__} (names look like: {examples})")
        selected.update((name, candidates[name]) for name in matched)
    return {name: candidates[name] for name in candidates if name in selected}


def input_dim_last(module: nn.Module, weight: torch.Tensor) -> torch.Tensor:
    """``weight`` viewed with the input dimension last (GPT-2's Conv1D stores it first)."""
    return weight.t() if isinstance(module, LINEAR_TYPES) and not isinstance(module, nn.Linear) else weight


@torch.no_grad()
def weight_sparsity(model: nn.Module, targets: str | Sequence[str] | None = None) -> float:
    """Fraction of exactly-zero entries in the targeted weights of ``model`` (default targets as for the
    pruners), counted on the weights themselves rather than taken from a pruner's masks."""
    zeros = total = 0
    for module in select_targets(model, targets).values():
        zeros += int((module.weight == 0).sum())
        total += module.weight.numel()
    return zeros / total
