"""Statistics of what each target layer of a block receives during calibration: the one padding-aware
path of the activation-aware pruners (Wanda's input norms, SparseGPT's Hessians).

A block is replayed on its calibration inputs with forward hooks on its targets. Each hook takes the
rows of the target's input that belong to real tokens (``BlockInputs.token_masks``; padding never
counts) and feeds them to a running statistic. Targets that receive the very same input tensor in a
forward pass (attention q/k/v, Llama's gate/up projections) share one statistic, computed once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from robustprune.pruners.calibration import BlockInputs, replay


class RunningStatistic(Protocol):
    """Accumulates ``[tokens, in_features]`` rows of real-token inputs; ``tokens`` counts them."""

    tokens: int

    def add(self, rows: torch.Tensor) -> None: ...


@dataclass
class StatisticsGroup:
    """One statistic and the targets (module names) that share its input."""

    members: list[str]
    statistic: Any


def real_tokens(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``[tokens, in]`` rows of ``x`` for the real tokens (all of them when ``mask`` is None or does not
    fit ``x``'s leading dimensions, e.g. inside a module that flattened the batch differently)."""
    if mask is not None:
        mask = mask.to(x.device)
        if x.shape[:-1] == mask.shape:
            return x[mask]
        if x.dim() == 2 and x.shape[0] == mask.numel():
            return x[mask.reshape(-1)]
    return x.reshape(-1, x.shape[-1])


@dataclass
class _Collector:
    """Forward hooks of one block: group targets by identical input tensor, feed real-token rows."""

    token_masks: Sequence[torch.Tensor | None]
    new_statistic: Callable[[], RunningStatistic]
    groups: list[StatisticsGroup] = field(default_factory=list)
    group_of: dict[str, int] = field(default_factory=dict)
    batch: int = -1
    # id(input) -> (input, group) for the current block call; holding the tensor keeps its id unique.
    current: dict[int, tuple[torch.Tensor, int]] = field(default_factory=dict)

    def start_batch(self, module: nn.Module, args: tuple) -> None:
        self.batch += 1
        self.current.clear()

    def hook(self, name: str) -> Callable[..., None]:
        def on_forward(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            x = args[0] if args else kwargs.get("input")
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"{name} was called without a tensor input; cannot collect its input statistics")
            seen = self.current.get(id(x))
            group = self.group_of.get(name)
            if group is None:
                if seen is not None:  # same tensor as an earlier target in this call: share its statistic
                    self.group_of[name] = seen[1]
                    self.groups[seen[1]].members.append(name)
                    return
                group = self.group_of[name] = len(self.groups)
                self.groups.append(StatisticsGroup([name], self.new_statistic()))
            elif self.groups[group].members[0] != name:  # a member: its leader has accumulated this input
                if seen is None or seen[1] != group:
                    leader = self.groups[group].members[0]
                    raise RuntimeError(f"{name} shared its input with {leader} in the first calibration batch "
                                       f"but not in batch {self.batch}; their statistics cannot be shared")
                return
            self.current[id(x)] = (x, group)
            rows = real_tokens(x.detach(), self._mask())
            if rows.shape[0]:
                self.groups[group].statistic.add(rows)
        return on_forward

    def _mask(self) -> torch.Tensor | None:
        if not self.token_masks or self.batch < 0 or self.batch >= len(self.token_masks):
            return None
        return self.token_masks[self.batch]


def block_input_statistics(index: int, block: nn.Module, inputs: BlockInputs, targets: Mapping[str, nn.Module],
                           new_statistic: Callable[[], RunningStatistic]) -> list[StatisticsGroup]:
    """Replay ``block`` (number ``index``) on ``inputs`` and return one statistic per distinct target input,
    in first-call order.

    Raises:
        ValueError: a target received no real token (never called, or every token was padding): its
            statistic would carry no information.
    """
    collector = _Collector(inputs.token_masks, new_statistic)
    handles = [block.register_forward_pre_hook(collector.start_batch)]
    handles += [module.register_forward_hook(collector.hook(name), with_kwargs=True)
                for name, module in targets.items()]
    try:
        replay(block, inputs, keep_outputs=False)
    finally:
        for handle in handles:
            handle.remove()
    silent = [name for name in targets
              if name not in collector.group_of or collector.groups[collector.group_of[name]].statistic.tokens == 0]
    if silent:
        raise ValueError(f"target(s) {silent} received no real calibration tokens while block {index} was replayed "
                         "(never called, or every token was padding): their statistics would carry no information; "
                         "pass calibration text with real tokens, or exclude them with targets=[...]")
    return collector.groups


__all__ = ["RunningStatistic", "StatisticsGroup", "block_input_statistics", "real_tokens"]
