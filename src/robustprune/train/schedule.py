"""How long and how fast one training phase runs: :class:`TrainingSchedule`, declared and checked once for
every method that trains (fine-tuning, IMP's retraining rounds, Robust Tickets' mask learning, EarlyRobust's
search and fine-tuning)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from robustprune.devices import PRECISIONS


@dataclass(frozen=True)
class TrainingSchedule:
    """The settings of one training phase: AdamW with linear warm-up and decay (the fine-tuning recipe).

    Methods whose phases train differently say so (Robust Tickets' masks use Adam at a constant rate,
    so their schedule must have ``weight_decay = warmup_ratio = 0``). Each method has its own default
    (e.g. ``lr=2e-5`` for adversarial fine-tuning); change one field with :meth:`replace`.

    Attributes:
        epochs: passes over the training set; a fraction runs that share of the steps.
        batch_size: examples per step.
        lr: peak learning rate.
        weight_decay: AdamW's decoupled weight decay (never applied to biases and LayerNorm weights).
        warmup_ratio: the fraction of the steps over which the learning rate rises linearly from 0.
        max_grad_norm: gradients are clipped to this global norm; 0 turns clipping off.
        max_length: inputs are truncated to this many tokens.
        seed: seeds the data order and torch (dropout, perturbations, gate samples).
        precision: ``fp32``, ``bf16`` or ``fp16``: the forward passes run under autocast at that precision
            (:func:`robustprune.devices.autocast`), fp16 with a gradient scaler; weights and optimizer
            state stay fp32.
    """

    epochs: float = 1.0
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    max_length: int = 128
    seed: int = 0
    precision: str = "fp32"

    def __post_init__(self) -> None:
        def number(name: str) -> float:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"TrainingSchedule.{name} must be a finite number, got {value!r}")
            return float(value)

        def whole(name: str, least: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"TrainingSchedule.{name} must be an int >= {least}, got {value!r}")

        if not number("epochs") > 0:
            raise ValueError(f"TrainingSchedule.epochs must be > 0, got {self.epochs}")
        if not number("lr") > 0:
            raise ValueError(f"TrainingSchedule.lr must be > 0, got {self.lr}")
        if not number("weight_decay") >= 0:
            raise ValueError(f"TrainingSchedule.weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= number("warmup_ratio") < 1:
            raise ValueError(f"TrainingSchedule.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not number("max_grad_norm") >= 0:
            raise ValueError(f"TrainingSchedule.max_grad_norm must be >= 0 (0: no clipping), got "
                             f"{self.max_grad_norm}")
        whole("batch_size", 1)
        whole("max_length", 1)
        whole("seed", 0)
        if self.precision not in PRECISIONS:
            raise ValueError(f"TrainingSchedule.precision must be one of {list(PRECISIONS)}, got {self.precision!r}")

    def replace(self, **changes: Any) -> TrainingSchedule:
        """A copy with ``changes`` (field name -> value), checked like a new schedule."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The fields in declaration order (what checkpoints fingerprint); ``precision`` only when it is not
        ``fp32``, so checkpoints written before it existed still resume."""
        fields = dataclasses.asdict(self)
        if fields["precision"] == "fp32":
            del fields["precision"]
        return fields

    def steps(self, examples: int) -> tuple[int, int]:
        """``(steps per epoch, total steps)`` over ``examples`` training examples (at least one step)."""
        steps_per_epoch = math.ceil(examples / self.batch_size)
        return steps_per_epoch, max(1, math.ceil(self.epochs * steps_per_epoch))

    def warmup_steps(self, total_steps: int) -> int:
        """Steps of linear warm-up out of ``total_steps``."""
        return int(self.warmup_ratio * total_steps)


__all__ = ["TrainingSchedule"]
