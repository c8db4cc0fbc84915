"""Fine-tuning a Hugging Face sequence classifier on a :class:`TextDataset`, optionally with fixed masks.

A small, honest trainer: AdamW (no decay on biases and LayerNorm), a linear schedule with warmup,
gradient clipping, a seeded shuffle, and length-bucketed dynamic padding. With ``masks`` the pruned
weights are zeroed before training and again after every optimizer step, so they stay exactly zero
(AdamW's moments would otherwise move them); SparseLinear layers train their kept values only by design.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from robustprune.eval.datasets import TextDataset


@dataclass
class TrainingHistory:
    """Per-step training loss and learning rate of one :func:`finetune_classifier` run."""

    losses: list[float] = field(default_factory=list)
    learning_rates: list[float] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return len(self.losses)


def _batches(dataset: TextDataset, tokenizer: Any, batch_size: int, max_length: int,
             rng: random.Random) -> list[dict[str, torch.Tensor]]:
    """Shuffled batches of similar length: shuffle, cut into chunks of 50 batches, sort each chunk by
    length, then shuffle the batches (less padding, still random order)."""
    order = list(range(len(dataset)))
    rng.shuffle(order)
    texts, pairs = dataset.texts, dataset.text_pairs
    enc = tokenizer([texts[i] for i in order], None if pairs is None else [pairs[i] for i in order],
                    truncation=True, max_length=max_length)
    rows = [{key: enc[key][j] for key in enc.keys()} | {"labels": dataset.labels[i]}
            for j, i in enumerate(order)]
    chunk = batch_size * 50
    grouped: list[list[dict[str, Any]]] = []
    for start in range(0, len(rows), chunk):
        part = sorted(rows[start:start + chunk], key=lambda row: len(row["input_ids"]))
        grouped += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(grouped)
    return [dict(tokenizer.pad(group, return_tensors="pt")) for group in grouped]


def _parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "LayerNorm" in name or "norm" in name.lower() else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _resolve_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> list[tuple[nn.Parameter, torch.Tensor]]:
    params = dict(model.named_parameters())
    pairs = []
    for name, mask in masks.items():
        if name not in params:
            raise ValueError(f"masks names {name!r}, which is not a parameter of the model")
        if tuple(mask.shape) != tuple(params[name].shape):
            raise ValueError(f"masks[{name!r}] has shape {tuple(mask.shape)}, the parameter has "
                             f"{tuple(params[name].shape)}")
        pairs.append((params[name], mask.to(device=params[name].device, dtype=torch.bool)))
    return pairs


@torch.no_grad()
def apply_masks_(pairs: list[tuple[nn.Parameter, torch.Tensor]]) -> None:
    """Zero every pruned weight in place (``mask`` True = kept)."""
    for param, mask in pairs:
        param.mul_(mask)


def finetune_classifier(
    model: nn.Module,
    tokenizer: Any,
    train: TextDataset,
    *,
    epochs: float = 1.0,
    batch_size: int = 32,
    lr: float = 5e-5,
    weight_decay: float = 0.01,
    warmup_ratio: float = 0.1,
    max_grad_norm: float = 1.0,
    max_length: int = 128,
    seed: int = 0,
    masks: Mapping[str, torch.Tensor] | None = None,
    progress: bool = True,
) -> TrainingHistory:
    """Fine-tune ``model`` (encoder and head) on ``train`` in place.

    Args:
        model: a Hugging Face sequence classifier (``model(**batch, labels=...)`` returns ``.loss``)
            with ``config.num_labels == train.num_labels``.
        tokenizer: its tokenizer.
        train: the training set.
        epochs: passes over ``train``; a fraction runs that share of the steps.
        batch_size, lr, weight_decay, warmup_ratio, max_grad_norm: AdamW and the linear schedule.
        max_length: inputs are truncated to this many tokens.
        seed: seeds the shuffle and torch (dropout), for reproducible runs.
        masks: ``{parameter name: keep-mask}`` (as the pruners return them): pruned weights stay
            exactly zero through every step.
        progress: show a progress bar with the running loss.

    Returns:
        The per-step losses and learning rates.

    Raises:
        ValueError: an empty training set, a label count that differs from the model's, bad
            hyper-parameters, or masks that do not match the model's parameters.
    """
    from transformers import get_linear_schedule_with_warmup

    if len(train) == 0:
        raise ValueError(f"training set {train.name!r} is empty")
    num_labels = getattr(getattr(model, "config", None), "num_labels", None)
    if num_labels != train.num_labels:
        raise ValueError(f"training set {train.name!r} has {train.num_labels} labels, the model predicts "
                         f"{num_labels}")
    if not epochs > 0:
        raise ValueError(f"epochs must be > 0, got {epochs}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if not 0 <= warmup_ratio < 1:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
    mask_pairs = _resolve_masks(model, masks or {})
    apply_masks_(mask_pairs)

    rng = random.Random(seed)
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total_steps = max(1, math.ceil(epochs * steps_per_epoch))
    optimizer = torch.optim.AdamW(_parameter_groups(model, weight_decay), lr=lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(warmup_ratio * total_steps), total_steps)
    history = TrainingHistory()

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, desc=f"fine-tune {train.name or 'classifier'}", unit="step")
    was_training = model.training
    model.train()
    try:
        while history.steps < total_steps:
            for batch in _batches(train, tokenizer, batch_size, max_length, rng):
                if history.steps >= total_steps:
                    break
                batch = {key: value.to(device) for key, value in batch.items()}
                loss = model(**batch).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
                history.learning_rates.append(scheduler.get_last_lr()[0])
                optimizer.step()
                scheduler.step()
                apply_masks_(mask_pairs)
                history.losses.append(float(loss.detach()))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{history.losses[-1]:.4f}")
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    return history


__all__ = ["TrainingHistory", "apply_masks_", "finetune_classifier"]
