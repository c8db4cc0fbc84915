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

:func:`adversarial_backward` does one batch; the adversarial fine-tuning loop is
:func:`robustprune.train.finetune.adversarial_finetune` (the one training loop with an attack; this module
holds the maths only, so the loop imports it and not the other way round).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from robustprune.train.checkpoint import (
    Batch,
    ResumableRun,
    load_checkpoint,
    run_resumable,
    save_checkpoint,
)


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


def adversarial_backward(model: nn.Module, batch: Batch, attack: Attack, *,
                         loss_scale: float | torch.Tensor = 1.0) -> AdversarialStep:
    """Compute the adversarial loss of one batch and accumulate its parameter gradients (``.grad``).

    Args:
        model: a Hugging Face sequence classifier (takes ``inputs_embeds`` and ``labels``, returns ``.loss``).
            Its train/eval mode is left as it is; the caller zeroes gradients and steps the optimizer.
        batch: ``input_ids``, ``attention_mask``, ``labels`` (and e.g. ``token_type_ids``) on the model's
            device.
        attack: :class:`FreeLB` or :class:`PGD`.
        loss_scale: every back-propagated loss is multiplied by it (fp16 training's gradient scaler); the
            ascent steps normalise the perturbation's gradient, so they do not depend on it.

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
            (loss * loss_scale).backward()
            total += float(loss.detach())
            if step < attack.steps - 1:
                delta = ascend(delta.detach(), delta.grad.detach(), attack.adv_lr, attack.adv_max_norm)
        return AdversarialStep(total, torch.stack(norms))

    clean = embeds.detach()
    for _ in range(attack.steps):
        delta.requires_grad_()
        norms.append(_norms(delta))
        loss = model(inputs_embeds=clean + delta, **rest).loss
        (grad,) = torch.autograd.grad(loss * loss_scale, delta)
        delta = ascend(delta.detach(), grad, attack.adv_lr, attack.adv_max_norm)
    norms.append(_norms(delta))
    loss = model(inputs_embeds=embeds + delta, **rest).loss
    (loss * loss_scale).backward()
    return AdversarialStep(float(loss.detach()), torch.stack(norms))


# ---------------------------------------------------------------------------------------- resumable loop


__all__ = [
    "PGD",
    "AdversarialStep",
    "FreeLB",
    "ResumableRun",
    "adversarial_backward",
    "ascend",
    "initial_delta",
    "load_checkpoint",
    "run_resumable",
    "save_checkpoint",
]
