"""Fine-tuning a Hugging Face sequence classifier on a :class:`TextDataset`: plain or adversarial, resumable.

One honest training loop: AdamW (no decay on biases and LayerNorm), a linear schedule with warmup,
gradient clipping, seeded per-epoch shuffles with length-bucketed dynamic padding. With ``masks`` the
pruned weights are zeroed before training and again after every optimizer step, so they stay exactly
zero (AdamW's moments would otherwise move them); SparseLinear layers train their kept values only by
design. With ``attack`` (:class:`~robustprune.train.adversarial.FreeLB` or ``PGD``) each batch's gradients
come from the adversarial loss. With ``checkpoint_dir`` the run checkpoints every ``checkpoint_every``
steps and a later call resumes it exactly (:mod:`robustprune.train.checkpoint`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustprune.data.datasets import TextDataset
from robustprune.train.adversarial import Attack
from robustprune.train.checkpoint import TrainingHistory, run_resumable
from robustprune.train.loop import apply_masks_, check_training_arguments, training_run
from robustprune.train.schedule import TrainingSchedule

# A chunk of this many batches is sorted by length before batching: little padding, still random order.
_BUCKET_BATCHES = 50


def length_bucketed_batches(dataset: TextDataset, tokenizer: Any, batch_size: int, max_length: int,
                            rng: random.Random) -> list[dict[str, torch.Tensor]]:
    """Shuffled padded batches of similar length (with ``labels``): shuffle, cut into chunks of 50 batches,
    sort each chunk by length, batch it, then shuffle the batches."""
    order = list(range(len(dataset)))
    rng.shuffle(order)
    texts, pairs = dataset.texts, dataset.text_pairs
    enc = tokenizer([texts[i] for i in order], None if pairs is None else [pairs[i] for i in order],
                    truncation=True, max_length=max_length)
    rows = [{key: enc[key][j] for key in enc} | {"labels": dataset.labels[i]} for j, i in enumerate(order)]
    chunk = batch_size * _BUCKET_BATCHES
    grouped: list[list[dict[str, Any]]] = []
    for start in range(0, len(rows), chunk):
        part = sorted(rows[start:start + chunk], key=lambda row: len(row["input_ids"]))
        grouped += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(grouped)
    return [dict(tokenizer.pad(group, return_tensors="pt")) for group in grouped]


def epoch_batch_fn(train: TextDataset, tokenizer: Any,
                   schedule: TrainingSchedule) -> Callable[[int], list[dict[str, torch.Tensor]]]:
    """Epoch -> that epoch's batches (``schedule``'s batch size and truncation), seeded per epoch from
    ``schedule.seed`` (a resumed run rebuilds exactly the same ones)."""
    return lambda epoch: length_bucketed_batches(train, tokenizer, schedule.batch_size, schedule.max_length,
                                                 random.Random(schedule.seed * 1_000_003 + epoch))


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices, none on biases and norms."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def resolve_masks(model: nn.Module,
                  masks: Mapping[str, torch.Tensor]) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """``(parameter, bool keep-mask)`` pairs; names and shapes checked against ``model``."""
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


def finetune_classifier(
    model: nn.Module,
    tokenizer: Any,
    train: TextDataset,
    schedule: TrainingSchedule = TrainingSchedule(),
    *,
    masks: Mapping[str, torch.Tensor] | None = None,
    attack: Any = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 100,
    stop_after: int | None = None,
    progress: bool = True,
) -> TrainingHistory:
    """Fine-tune ``model`` (encoder and head) on ``train`` in place.

    Args:
        model: a Hugging Face sequence classifier (``model(**batch, labels=...)`` returns ``.loss``)
            with ``config.num_labels == train.num_labels``.
        tokenizer: its tokenizer.
        train: the training set.
        schedule: epochs, batch size, AdamW and its linear schedule, clipping, truncation and seed
            (:class:`~robustprune.train.schedule.TrainingSchedule`; the seed makes runs reproducible).
        masks: ``{parameter name: keep-mask}`` (as the pruners return them): pruned weights stay
            exactly zero through every step.
        attack: None (clean loss), or :class:`~robustprune.train.adversarial.FreeLB` /
            :class:`~robustprune.train.adversarial.PGD` for adversarial training.
        checkpoint_dir: if set, a checkpoint (model, optimizer, schedule, RNG, history) is written there every
            ``checkpoint_every`` steps and at the end; a call that finds one resumes from it (with the same
            settings, else ValueError).
        stop_after: stop (after checkpointing) once this many steps are done; call again to continue.
        progress: show a progress bar with the running loss.

    Returns:
        The per-step losses and learning rates of the run so far (resumed steps included).

    Raises:
        ValueError: an empty training set, a label count that differs from the model's, or masks that do
            not match the model's parameters.
    """
    from transformers import get_linear_schedule_with_warmup

    check_training_arguments(model, train, attack)
    mask_pairs = resolve_masks(model, masks or {})
    apply_masks_(mask_pairs)

    torch.manual_seed(schedule.seed)
    steps_per_epoch, total_steps = schedule.steps(len(train))
    optimizer = torch.optim.AdamW(parameter_groups(model, schedule.weight_decay), lr=schedule.lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, schedule.warmup_steps(total_steps), total_steps)
    fingerprint = {"attack": attack, **schedule.as_dict(), "examples": len(train), "masks": sorted(masks or {})}
    run = training_run(
        model, optimizer=optimizer, scheduler=scheduler, attack=attack, max_grad_norm=schedule.max_grad_norm,
        masks=mask_pairs, total_steps=total_steps, steps_per_epoch=steps_per_epoch,
        epoch_batches=epoch_batch_fn(train, tokenizer, schedule),
        stateful={"model": model, "optimizer": optimizer, "scheduler": scheduler}, fingerprint=fingerprint,
        checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, stop_after=stop_after,
        desc=f"{'adversarial ' if attack is not None else ''}fine-tune {train.name or 'classifier'}",
        precision=schedule.precision,
    )
    was_training = model.training
    model.train()
    try:
        return run_resumable(run, progress)
    finally:
        model.train(was_training)


ADVERSARIAL_SCHEDULE = TrainingSchedule(lr=2e-5)  # the smaller learning rate of adversarial recipes


def adversarial_finetune(model: nn.Module, tokenizer: Any, train: TextDataset, attack: Attack | None,
                         schedule: TrainingSchedule = ADVERSARIAL_SCHEDULE, **options: Any) -> TrainingHistory:
    """Fine-tune ``model`` in place under FreeLB / PGD (or plainly with ``attack=None``), resumably.

    :func:`robustprune.train.finetune.finetune_classifier` with ``attack`` and, by default, the smaller
    learning rate of adversarial fine-tuning recipes (``lr=2e-5``); ``options`` are its keyword arguments
    (masks, checkpoint_dir, checkpoint_every, stop_after, progress).
    """
    return finetune_classifier(model, tokenizer, train, schedule, attack=attack, **options)


__all__ = ["ADVERSARIAL_SCHEDULE", "TrainingHistory", "TrainingSchedule", "adversarial_finetune", "epoch_batch_fn",
           "finetune_classifier", "length_bucketed_batches", "parameter_groups", "resolve_masks"]
