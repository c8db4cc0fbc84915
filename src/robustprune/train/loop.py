"""The one training step, shared by every method that trains: fine-tuning (plain, adversarial, with fixed
masks), Robust Tickets' mask learning and EarlyRobust's search.

A step: move the batch, zero the gradients, let the method prepare (``before``, e.g. draw a gate sample),
back-propagate the task loss (clean, or FreeLB / PGD), back-propagate the method's extra loss
(``extra_loss``, e.g. an L0 or L1 penalty), clip, take the optimizer (and schedule) step, re-zero pruned
weights, let the method look at the result (``after``, e.g. an early-bird check). :func:`training_run`
wraps the step in a :class:`~robustprune.train.checkpoint.ResumableRun`, so every method checkpoints and
resumes the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustprune.data.datasets import TextDataset
from robustprune.devices import autocast, grad_scaler
from robustprune.train.adversarial import PGD, FreeLB, adversarial_backward
from robustprune.train.checkpoint import Batch, ResumableRun, TrainingHistory


def require_attack(attack: Any) -> None:
    """The attack argument of every training method: None (clean loss), FreeLB or PGD."""
    if attack is not None and not isinstance(attack, (FreeLB, PGD)):
        raise TypeError(f"attack must be FreeLB(...), PGD(...) or None, got {type(attack).__name__}")


def check_training_arguments(model: nn.Module, train: TextDataset, attack: Any = None) -> None:
    """Reject what no training run can use, naming the argument (the numbers are checked by
    :class:`~robustprune.train.schedule.TrainingSchedule`)."""
    require_attack(attack)
    if len(train) == 0:
        raise ValueError(f"training set {train.name!r} is empty")
    num_labels = getattr(getattr(model, "config", None), "num_labels", None)
    if num_labels != train.num_labels:
        raise ValueError(f"training set {train.name!r} has {train.num_labels} labels, the model predicts "
                         f"{num_labels}")


@torch.no_grad()
def apply_masks_(pairs: Sequence[tuple[nn.Parameter, torch.Tensor]]) -> None:
    """Zero every pruned weight in place (``mask`` True = kept)."""
    for param, mask in pairs:
        param.mul_(mask)


@dataclass(frozen=True)
class StepHooks:
    """What a method adds to the plain step; each receives the global step index.

    Attributes:
        before: runs after the gradients are zeroed, before the forward pass.
        extra_loss: a scalar added to the task loss (back-propagated; its value is part of the logged loss).
        after: runs after the optimizer step and the masks.
    """

    before: Callable[[int], None] | None = None
    extra_loss: Callable[[int], torch.Tensor] | None = None
    after: Callable[[int], None] | None = None


def training_run(
    model: nn.Module,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: Any = None,
    attack: FreeLB | PGD | None = None,
    clip: Iterable[torch.Tensor] | None = None,
    max_grad_norm: float = 0.0,
    masks: Sequence[tuple[nn.Parameter, torch.Tensor]] = (),
    hooks: StepHooks = StepHooks(),
    total_steps: int,
    steps_per_epoch: int,
    epoch_batches: Callable[[int], list[Batch]],
    stateful: Mapping[str, Any],
    fingerprint: Mapping[str, Any],
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 100,
    stop_after: int | None = None,
    desc: str = "train",
    history: TrainingHistory | None = None,
    precision: str = "fp32",
) -> ResumableRun:
    """The resumable run of the shared step (see the module docstring) for ``model``.

    ``clip`` lists the tensors whose gradient norm is clipped to ``max_grad_norm`` (default: every
    parameter of ``model``); ``scheduler`` is stepped after the optimizer (None: a constant learning rate,
    logged from the first parameter group). The remaining arguments are those of
    :class:`~robustprune.train.checkpoint.ResumableRun`. Run it with
    :func:`~robustprune.train.checkpoint.run_resumable`. Batches go to the device of the model's
    parameters; ``precision`` (``fp32``, ``bf16``, ``fp16``) runs the forward passes under autocast on that
    device, ``fp16`` with a ``torch.amp.GradScaler`` (checkpointed with the run).
    """
    require_attack(attack)
    clip_params = list(model.parameters() if clip is None else clip)
    device = next(model.parameters()).device
    scaler = grad_scaler(device, precision)
    if scaler is not None:
        stateful = {**stateful, "grad_scaler": scaler}

    def train_step(step: int, batch: Batch) -> tuple[float, float]:
        batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
        optimizer.zero_grad(set_to_none=True)
        if hooks.before is not None:
            hooks.before(step)
        scale = 1.0 if scaler is None else scaler.scale(torch.ones((), device=device))  # no host sync
        with autocast(device, precision):
            if attack is None:
                loss = model(**batch).loss
                (loss * scale).backward()
                loss_value = float(loss.detach())
            else:
                loss_value = adversarial_backward(model, batch, attack, loss_scale=scale).loss
            if hooks.extra_loss is not None:
                extra = hooks.extra_loss(step)
                (extra * scale).backward()
                loss_value += float(extra.detach())
        if scaler is not None:
            scaler.unscale_(optimizer)
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(clip_params, max_grad_norm)
        used_lr = scheduler.get_last_lr()[0] if scheduler is not None else optimizer.param_groups[0]["lr"]
        if scaler is None:
            optimizer.step()
        else:  # skips the step when the scaled gradients overflowed, and adapts the scale
            scaler.step(optimizer)
            scaler.update()
        if scheduler is not None:
            scheduler.step()
        apply_masks_(masks)
        if hooks.after is not None:
            hooks.after(step)
        return loss_value, used_lr

    return ResumableRun(total_steps, steps_per_epoch, epoch_batches, train_step, stateful, fingerprint,
                        checkpoint_dir, checkpoint_every, stop_after, desc,
                        history if history is not None else TrainingHistory())


__all__ = ["StepHooks", "apply_masks_", "check_training_arguments", "require_attack", "training_run"]
