"""Early, explicit checks on user input shared by every op and pruner.

Each check raises with the argument's name and what was expected, before any work is done.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_sparsity(sparsity: float, name: str = "sparsity") -> float:
    """Return ``sparsity`` as a float after checking it lies in [0, 1)."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise TypeError(f"{name} must be a float in [0, 1), got {type(sparsity).__name__}")
    value = float(sparsity)
    if not (0.0 <= value < 1.0) or math.isnan(value):
        raise ValueError(f"{name} must lie in [0, 1) (the fraction of weights removed), got {value!r}")
    return value


def check_sparsities(sparsities: Sequence[float], name: str = "sparsities") -> list[float]:
    if len(sparsities) == 0:
        raise ValueError(f"{name} must hold at least one sparsity in [0, 1), got an empty list")
    return [check_sparsity(s, f"{name}[{i}]") for i, s in enumerate(sparsities)]


def check_float_tensor(tensor: torch.Tensor, name: str) -> None:
    """Require a non-empty fp32/fp16/bf16 tensor."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} has dtype {tensor.dtype}; supported dtypes are float32, float16 and bfloat16")
    if tensor.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(tensor.shape)}); nothing to prune")


def check_tensor_list(tensors: Sequence[torch.Tensor], name: str = "tensors") -> None:
    """Require a non-empty list of float tensors that all live on one device."""
    if len(tensors) == 0:
        raise ValueError(f"{name} is an empty list; pass at least one tensor")
    for i, t in enumerate(tensors):
        check_float_tensor(t, f"{name}[{i}]")
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        raise ValueError(f"{name} must all be on one device, got {sorted(map(str, devices))}")


def check_finite(tensor: torch.Tensor, name: str) -> None:
    """Reject NaN or Inf entries.

    A single fp32 sum is a cheap read-only pass: it is finite whenever every entry is, so the exact
    (and slower) ``isfinite`` scan only runs when the sum says something may be wrong.
    """
    total = tensor.sum(dtype=torch.float32)
    if bool(torch.isfinite(total)):
        return
    bad = ~torch.isfinite(tensor)
    count = int(bad.sum())
    if count:
        first = tuple(int(i) for i in torch.nonzero(bad)[0])
        raise ValueError(f"{name} contains {count} NaN/Inf value(s) (first at index {first}); "
                         "prune only finite weights and scores")
