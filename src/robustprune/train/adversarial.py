"""Adversarial training in embedding space: FreeLB and K-step PGD, one batch at a time or as a resumable loop.

Both perturb the word embeddings only (``model.get_input_embeddings()(input_ids) + delta``; position and
token-type embeddings and LayerNorm follow inside the model) with one ``delta`` per example, measured in L2
over the example's whole ``(length, hidden)`` block:

- init: ``delta_0 = U(-1, 1) * attention_mask``, scaled by ``adv_init_mag / sqrt(length * hidden)``
  (zero when ``adv_init_mag == 0``);
- ascent: ``delta += adv_lr * g / max(||g||, 1e-8)``, then projected back to ``adv_max_norm`` when that is
  > 0 and ``||delta|| > adv_max_norm``.

:class:`FreeLB` (Zhu et al. 2020, its reference implementation's numerics): K forward/backward passes on
``loss / K``; parameter gradients accumulate over the K passes and the caller takes one optimizer step;
``delta`` ascends between passes (K - 1 updates). :class:`PGD` (Madry et al.): K ascent steps whose
gradients reach ``delta`` only, then one forward/backward on the final adversarial example (K + 1 passes).

:func:`adversarial_backward` does one batch; :func:`adversarial_finetune` is the training loop (AdamW, linear
schedule, fixed masks as in :func:`robustprune.train.finetune.finetune_classifier`) with periodic checkpoints
it resumes from. :func:`run_resumable` is that loop's checkpoint/resume engine, shared with Robust Tickets.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustprune.eval.datasets import TextDataset
from robustprune.train.finetune import (
    TrainingHistory,
    _batches,
    _parameter_groups,
    _resolve_masks,
    apply_masks_,
)

Batch = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class FreeLB:
    """FreeLB: ``steps`` (K) passes on loss / K with gradient accumulation, ``delta`` ascending in between.

    Defaults follow FreeLB's GLUE recipes (init magnitude 0.6, step 0.1, unbounded norm); ``adv_max_norm > 0``
    projects ``delta`` onto that L2 ball per example.
    """

    steps: int = 3
    adv_lr: float = 0.1
    adv_init_mag: float = 0.6
    adv_max_norm: float = 0.0

    def __post_init__(self) -> None:
        _check_attack(self)


@dataclass(frozen=True)
class PGD:
    """K-step PGD in embedding space: ``steps`` ascent steps on ``delta`` only, then the parameters' backward
    on the final adversarial loss. ``adv_max_norm`` (L2 per example) must be > 0: PGD needs a ball."""

    steps: int = 3
    adv_lr: float = 0.1
    adv_init_mag: float = 0.0
    adv_max_norm: float = 1.0

    def __post_init__(self) -> None:
        _check_attack(self)
        if not self.adv_max_norm > 0:
            raise ValueError(
                f"PGD adv_max_norm must be > 0 (the L2 ball delta is projected onto), got {self.adv_max_norm}"
            )


Attack = FreeLB | PGD


def _check_attack(attack: Attack) -> None:
    name = type(attack).__name__
    if isinstance(attack.steps, bool) or not isinstance(attack.steps, int) or attack.steps < 1:
        raise ValueError(f"{name} steps must be an integer >= 1, got {attack.steps!r}")
    for key in ("adv_lr", "adv_init_mag", "adv_max_norm"):
        value = getattr(attack, key)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} {key} must be a finite number >= 0, got {value!r}")


@dataclass
class AdversarialStep:
    """What :func:`adversarial_backward` did on one batch.

    Attributes:
        loss: the loss whose gradients were accumulated (FreeLB: the sum of the K ``loss / K``, i.e. the mean
            adversarial loss; PGD: the final adversarial loss).
        delta_norms: per-example L2 norms of ``delta`` before every forward pass (``[steps, batch]`` for
            FreeLB; ``[steps + 1, batch]`` for PGD, the last row being the attacked example's).
    """

    loss: float
    delta_norms: torch.Tensor


def initial_delta(embeds: torch.Tensor, attention_mask: torch.Tensor, adv_init_mag: float) -> torch.Tensor:
    """``U(-1, 1)`` on real tokens, times ``adv_init_mag / sqrt(length * hidden)`` per example (torch RNG)."""
    if adv_init_mag <= 0:
        return torch.zeros_like(embeds)
    mask = attention_mask.to(embeds.dtype).unsqueeze(2)
    delta = torch.zeros_like(embeds).uniform_(-1, 1) * mask
    dims = attention_mask.to(embeds.dtype).sum(1) * embeds.shape[-1]
    return delta * (adv_init_mag / torch.sqrt(dims)).view(-1, 1, 1)


def ascend(delta: torch.Tensor, grad: torch.Tensor, adv_lr: float, adv_max_norm: float) -> torch.Tensor:
    """One normalised L2 ascent step per example, projected to ``adv_max_norm`` when that is > 0."""
    batch = delta.shape[0]
    denorm = grad.reshape(batch, -1).norm(dim=1).clamp_min(1e-8).view(-1, 1, 1)
    delta = delta + adv_lr * grad / denorm
    if adv_max_norm > 0:
        norms = delta.reshape(batch, -1).float().norm(dim=1)
        # where(), not the reference's mask arithmetic: a zero-norm delta would give 0 * inf = NaN there.
        scale = torch.where(norms > adv_max_norm, adv_max_norm / norms, torch.ones_like(norms))
        delta = delta * scale.to(delta.dtype).view(-1, 1, 1)
    return delta


def _norms(delta: torch.Tensor) -> torch.Tensor:
    return delta.detach().reshape(delta.shape[0], -1).float().norm(dim=1)


def _check_batch(model: nn.Module, batch: Batch) -> None:
    for key in ("input_ids", "attention_mask", "labels"):
        if key not in batch:
            raise ValueError(
                f"batch needs {key!r} (got keys {sorted(batch)}); build it with the model's tokenizer"
            )
    if not callable(getattr(model, "get_input_embeddings", None)):
        raise TypeError(
            f"model ({type(model).__name__}) must expose get_input_embeddings(), as Hugging Face "
            "models do: the perturbation is added to the word embeddings"
        )


def adversarial_backward(model: nn.Module, batch: Batch, attack: Attack) -> AdversarialStep:
    """Compute the adversarial loss of one batch and accumulate its parameter gradients (``.grad``).

    Args:
        model: a Hugging Face sequence classifier (takes ``inputs_embeds`` and ``labels``, returns ``.loss``).
            Its train/eval mode is left as it is; the caller zeroes gradients and steps the optimizer.
        batch: ``input_ids``, ``attention_mask``, ``labels`` (and e.g. ``token_type_ids``) on the model's
            device.
        attack: :class:`FreeLB` or :class:`PGD`.

    Works unchanged on masked models: the perturbation lives in the inputs, masks in the weights.
    """
    if not isinstance(attack, (FreeLB, PGD)):
        raise TypeError(f"attack must be FreeLB(...) or PGD(...), got {type(attack).__name__}")
    _check_batch(model, batch)
    embedding = model.get_input_embeddings()
    input_ids = batch["input_ids"]
    rest = {key: value for key, value in batch.items() if key != "input_ids"}
    embeds = embedding(input_ids)
    delta = initial_delta(embeds.detach(), batch["attention_mask"], attack.adv_init_mag)
    norms = []
    if isinstance(attack, FreeLB):
        total = 0.0
        for step in range(attack.steps):
            if step > 0:  # the previous backward freed the embedding's graph; its weight gets gradients too
                embeds = embedding(input_ids)
            delta.requires_grad_()
            norms.append(_norms(delta))
            loss = model(inputs_embeds=embeds + delta, **rest).loss / attack.steps
            loss.backward()
            total += float(loss.detach())
            if step < attack.steps - 1:
                delta = ascend(delta.detach(), delta.grad.detach(), attack.adv_lr, attack.adv_max_norm)
        return AdversarialStep(total, torch.stack(norms))

    clean = embeds.detach()
    for _ in range(attack.steps):
        delta.requires_grad_()
        norms.append(_norms(delta))
        loss = model(inputs_embeds=clean + delta, **rest).loss
        (grad,) = torch.autograd.grad(loss, delta)
        delta = ascend(delta.detach(), grad, attack.adv_lr, attack.adv_max_norm)
    norms.append(_norms(delta))
    loss = model(inputs_embeds=embeds + delta, **rest).loss
    loss.backward()
    return AdversarialStep(float(loss.detach()), torch.stack(norms))


# ---------------------------------------------------------------------------------------- resumable loop

CHECKPOINT_FILE = "checkpoint.pt"


def save_checkpoint(directory: str | Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` to ``directory/checkpoint.pt`` atomically (a crash mid-write keeps the last one)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_FILE
    partial = path.with_suffix(".tmp")
    torch.save(dict(state), partial)
    os.replace(partial, path)
    return path


def load_checkpoint(directory: str | Path | None) -> dict[str, Any] | None:
    """The state saved by :func:`save_checkpoint` in ``directory``, or None if there is none."""
    if directory is None:
        return None
    path = Path(directory) / CHECKPOINT_FILE
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


@dataclass
class ResumableRun:
    """Everything :func:`run_resumable` needs to run, checkpoint and resume a training loop.

    Attributes:
        total_steps: optimizer steps of the whole run.
        steps_per_epoch: batches per epoch.
        epoch_batches: epoch index -> that epoch's batches (deterministic: a resumed run rebuilds them).
        train_step: (global step, batch) -> (loss, learning rate used); does backward + optimizer step.
        stateful: objects with ``state_dict()`` / ``load_state_dict()`` saved in every checkpoint.
        fingerprint: the run's settings; resuming from a checkpoint written with other settings fails.
        checkpoint_dir: where the checkpoint lives (None: no checkpoints, no resume).
        checkpoint_every: steps between checkpoints (one is also written at the end and on ``stop_after``).
        stop_after: stop once this many steps are done (checkpointed), to continue later; None: run to the
            end.
        desc: progress-bar label.
        history: filled with ``(loss, lr)`` per step; ``train_step`` may append to extra list fields of a
            TrainingHistory subclass, which checkpoints save and restore too.
    """

    total_steps: int
    steps_per_epoch: int
    epoch_batches: Callable[[int], list[Batch]]
    train_step: Callable[[int, Batch], tuple[float, float]]
    stateful: Mapping[str, Any]
    fingerprint: Mapping[str, Any]
    checkpoint_dir: str | Path | None = None
    checkpoint_every: int = 100
    stop_after: int | None = None
    desc: str = "train"
    history: TrainingHistory = field(default_factory=TrainingHistory)


def run_resumable(run: ResumableRun, progress: bool = True) -> TrainingHistory:
    """Run ``run.train_step`` over the batches until ``total_steps`` (or ``stop_after``), resuming from and
    writing checkpoints in ``run.checkpoint_dir``. A resumed run continues bit-for-bit like an uninterrupted
    one: the checkpoint holds the ``stateful`` objects, the step, the history and torch's RNG state, and
    each epoch's batches come from ``epoch_batches(epoch)``. Returns the history of all steps so far."""
    if run.checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {run.checkpoint_every}")
    if run.stop_after is not None and run.stop_after < 1:
        raise ValueError(f"stop_after must be >= 1 or None, got {run.stop_after}")
    history = run.history
    fingerprint = {key: repr(value) for key, value in run.fingerprint.items()}
    state = load_checkpoint(run.checkpoint_dir)
    if state is not None:
        if state["fingerprint"] != fingerprint:
            changed = sorted(
                k
                for k in fingerprint.keys() | state["fingerprint"].keys()
                if fingerprint.get(k) != state["fingerprint"].get(k)
            )
            raise ValueError(
                f"checkpoint in {run.checkpoint_dir} was written with other settings ({changed}); "
                "use another checkpoint_dir or the same settings"
            )
        for key, obj in run.stateful.items():
            obj.load_state_dict(state["stateful"][key])
        for name, values in state["history"].items():
            getattr(history, name)[:] = values
        torch.set_rng_state(state["torch_rng"])

    def checkpoint() -> None:
        if run.checkpoint_dir is not None:
            save_checkpoint(
                run.checkpoint_dir,
                {
                    "fingerprint": fingerprint,
                    "torch_rng": torch.get_rng_state(),
                    "history": {f.name: list(getattr(history, f.name)) for f in fields(history)},
                    "stateful": {key: obj.state_dict() for key, obj in run.stateful.items()},
                },
            )

    end = run.total_steps if run.stop_after is None else min(run.total_steps, run.stop_after)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=run.total_steps, initial=history.steps, desc=run.desc, unit="step")
    epoch, batches = -1, []
    try:
        while history.steps < end:
            step = history.steps
            if step // run.steps_per_epoch != epoch:
                epoch = step // run.steps_per_epoch
                batches = run.epoch_batches(epoch)
                if len(batches) != run.steps_per_epoch:
                    raise RuntimeError(
                        f"epoch {epoch} has {len(batches)} batches, expected {run.steps_per_epoch}"
                    )
            loss, lr = run.train_step(step, batches[step % run.steps_per_epoch])
            history.losses.append(loss)
            history.learning_rates.append(lr)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
            if history.steps % run.checkpoint_every == 0 and history.steps < end:
                checkpoint()
        if state is None or history.steps > len(state["history"]["losses"]):
            checkpoint()
    finally:
        if bar is not None:
            bar.close()
    return history


def epoch_batch_fn(
    train: TextDataset, tokenizer: Any, batch_size: int, max_length: int, seed: int
) -> Callable[[int], list[dict[str, torch.Tensor]]]:
    """Epoch -> shuffled, length-bucketed padded batches (the fine-tuning recipe), seeded per epoch."""
    return lambda epoch: _batches(
        train, tokenizer, batch_size, max_length, random.Random(seed * 1_000_003 + epoch)
    )


def _to(batch: Batch, device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in batch.items()}


def adversarial_finetune(
    model: nn.Module,
    tokenizer: Any,
    train: TextDataset,
    attack: Attack | None,
    *,
    epochs: float = 1.0,
    batch_size: int = 32,
    lr: float = 2e-5,
    weight_decay: float = 0.01,
    warmup_ratio: float = 0.1,
    max_grad_norm: float = 1.0,
    max_length: int = 128,
    seed: int = 0,
    masks: Mapping[str, torch.Tensor] | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 100,
    stop_after: int | None = None,
    progress: bool = True,
) -> TrainingHistory:
    """Fine-tune ``model`` in place under FreeLB / PGD (or plainly with ``attack=None``), resumably.

    The recipe of :func:`~robustprune.train.finetune.finetune_classifier` (AdamW without decay on biases and
    LayerNorm, linear schedule with warmup, gradient clipping, length-bucketed batches, ``masks`` keeping
    pruned weights exactly zero), with each batch's gradients from :func:`adversarial_backward`.

    Args:
        attack: :class:`FreeLB`, :class:`PGD` or None (clean loss).
        checkpoint_dir: if set, a checkpoint (model, optimizer, schedule, RNG, history) is written there every
            ``checkpoint_every`` steps and at the end, and a call finding one resumes from it.
        stop_after: stop (after checkpointing) once this many steps are done; call again to continue.
        The other arguments are :func:`finetune_classifier`'s.

    Returns:
        The per-step losses and learning rates of the run so far (including resumed steps).
    """
    from transformers import get_linear_schedule_with_warmup

    if attack is not None and not isinstance(attack, (FreeLB, PGD)):
        raise TypeError(f"attack must be FreeLB(...), PGD(...) or None, got {type(attack).__name__}")
    if len(train) == 0:
        raise ValueError(f"training set {train.name!r} is empty")
    num_labels = getattr(getattr(model, "config", None), "num_labels", None)
    if num_labels != train.num_labels:
        raise ValueError(
            f"training set {train.name!r} has {train.num_labels} labels, the model predicts {num_labels}"
        )
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

    torch.manual_seed(seed)
    device = next(model.parameters()).device
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total_steps = max(1, math.ceil(epochs * steps_per_epoch))
    optimizer = torch.optim.AdamW(_parameter_groups(model, weight_decay), lr=lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(warmup_ratio * total_steps), total_steps)

    def train_step(step: int, batch: Batch) -> tuple[float, float]:
        batch = _to(batch, device)
        optimizer.zero_grad(set_to_none=True)
        if attack is None:
            loss = model(**batch).loss
            loss.backward()
            loss_value = float(loss.detach())
        else:
            loss_value = adversarial_backward(model, batch, attack).loss
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        used_lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        apply_masks_(mask_pairs)
        return loss_value, used_lr

    fingerprint = {
        "attack": attack,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "warmup_ratio": warmup_ratio,
        "max_grad_norm": max_grad_norm,
        "max_length": max_length,
        "seed": seed,
        "examples": len(train),
        "masks": sorted(masks or {}),
    }
    run = ResumableRun(
        total_steps,
        steps_per_epoch,
        epoch_batch_fn(train, tokenizer, batch_size, max_length, seed),
        train_step,
        {"model": model, "optimizer": optimizer, "scheduler": scheduler},
        fingerprint,
        checkpoint_dir,
        checkpoint_every,
        stop_after,
        desc=f"{'adversarial ' if attack else ''}fine-tune {train.name or 'classifier'}",
    )
    was_training = model.training
    model.train()
    try:
        return run_resumable(run, progress)
    finally:
        model.train(was_training)


__all__ = [
    "PGD",
    "AdversarialStep",
    "FreeLB",
    "ResumableRun",
    "adversarial_backward",
    "adversarial_finetune",
    "ascend",
    "initial_delta",
    "load_checkpoint",
    "run_resumable",
    "save_checkpoint",
]
