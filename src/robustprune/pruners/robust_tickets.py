"""Robust Tickets (Zheng et al., ACL 2022): hard-concrete masks learned under an adversarial loss.

1. :class:`HardConcreteMasks` puts one learnable ``log_alpha`` per targeted weight and gates the weights
   with ``robustprune::hard_concrete_gate`` (a ``torch.nn.utils.parametrize`` parametrization of each
   target's ``weight``; one fused op per layer, forward and backward).
2. :func:`train_hard_concrete_masks` learns ``log_alpha`` with the model's weights frozen, minimising the
   adversarial loss (FreeLB by default; one gate sample per step, shared by its K passes) plus
   ``lambda_t * L0``, where L0 = mean sigmoid(log_alpha - beta * log(-gamma / zeta)) over all targeted
   weights (the expected fraction of open gates) and ``lambda_t`` rises linearly from 0 to ``l0_lambda``
   over the first ``l0_warmup_ratio`` of the steps (:class:`LambdaSchedule`); Adam, or AdamW when the
   schedule has weight decay (the paper's Table 7). Checkpointed and resumable.
3. :func:`draw_ticket` keeps the weights with the largest ``log_alpha`` globally, exactly
   ``round(sparsity * n)`` pruned (ties at the cut pruned in target order, then row-major index).
4. :func:`reset_to_pretrained` restores the pre-trained weights, and the ticket is fine-tuned with the mask
   fixed (plainly or adversarially): :func:`robust_ticket` runs the whole pipeline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from robustprune.data.datasets import TextDataset
from robustprune.sparse_ops.hard_concrete import (
    BETA,
    GAMMA,
    ZETA,
    hard_concrete_gate,
    sample_hard_concrete_noise,
)
from robustprune.sparse_ops.scores import score_keep_mask, score_thresholds
from robustprune.sparse_ops.validation import check_finite, check_float_tensor, check_sparsity
from robustprune.targets import select_targets
from robustprune.train.adversarial import Attack, FreeLB
from robustprune.train.checkpoint import TrainingHistory, run_resumable
from robustprune.train.finetune import ADVERSARIAL_SCHEDULE, adversarial_finetune, epoch_batch_fn
from robustprune.train.loop import StepHooks, check_training_arguments, training_run
from robustprune.train.schedule import TrainingSchedule

DEFAULT_ATTACK = FreeLB()  # frozen dataclass: sharing one default instance is safe


def l0_penalty(
    log_alphas: Sequence[torch.Tensor], gamma: float = GAMMA, zeta: float = ZETA, beta: float = BETA
) -> torch.Tensor:
    """Expected fraction of non-zero gates: the mean of sigmoid(log_alpha - beta * log(-gamma / zeta)) over
    every entry of every tensor (one global mean, so a large matrix weighs more than a small one)."""
    if len(log_alphas) == 0:
        raise ValueError("log_alphas is an empty list; pass at least one tensor")
    shift = beta * math.log(-gamma / zeta)
    total = sum(t.numel() for t in log_alphas)
    return sum(torch.sigmoid(t.float() - shift).sum() for t in log_alphas) / total


@dataclass(frozen=True)
class LambdaSchedule:
    """``lambda_t = final * min(1, t / warmup_steps)`` (``final`` from step 0 when ``warmup_steps == 0``)."""

    final: float
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.final) and self.final >= 0):
            raise ValueError(f"l0_lambda must be a finite number >= 0, got {self.final}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")

    def __call__(self, step: int) -> float:
        if self.warmup_steps == 0:
            return self.final
        return self.final * min(1.0, step / self.warmup_steps)


def draw_ticket(log_alphas: Mapping[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """Global keep-masks from gate scores: prune exactly ``round(sparsity * n)`` entries with the lowest
    ``log_alpha``; entries tied at the cut are pruned in mapping order, then row-major index.

    Returns ``{name: bool mask}`` (True = kept) with each tensor's shape.
    """
    sparsity = check_sparsity(sparsity)
    if len(log_alphas) == 0:
        raise ValueError("log_alphas is empty; pass {parameter name: log_alpha tensor}")
    for name, tensor in log_alphas.items():
        check_float_tensor(tensor, f"log_alphas[{name!r}]")
        check_finite(tensor, f"log_alphas[{name!r}]")
    names = list(log_alphas)
    tensors = [log_alphas[name].detach() for name in names]
    thresholds, tie_quota = score_thresholds(tensors, [sparsity])  # exact, without concatenating the scores
    return {name: score_keep_mask(tensor, float(thresholds[0]), int(tie_quota[0, i]))
            for i, (name, tensor) in enumerate(zip(names, tensors))}


class _Gate(nn.Module):
    """Parametrization of one target's weight, ``W -> W * z``, via the owning :class:`HardConcreteMasks`."""

    def __init__(self, owner: HardConcreteMasks, index: int) -> None:
        super().__init__()
        object.__setattr__(self, "_owner", owner)  # a plain reference: the masks must not become a submodule
        self.index = index

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return self._owner.gate(self.index, weight)


class HardConcreteMasks(nn.Module):
    """One hard-concrete gate per targeted weight, learnable through ``log_alpha``.

    In ``train()`` mode (the default) attached targets use the stochastic gate with the noise drawn by the
    last :meth:`resample` (one sample is shared until the next call); in ``eval()`` mode the deterministic
    gate ``sigmoid(log_alpha)``. Parameters are named ``log_alphas.<i>``; :attr:`names` holds the targeted
    parameter names (``"...query.weight"``), which are the keys of :meth:`draw_ticket`'s masks.

    Args:
        model: the model whose weights are gated (not modified until :meth:`attach`).
        targets: None for the Linear layers inside the transformer blocks, or glob patterns of module names.
        init_drop_rate: initial ``log_alpha = log(1 - p) - log(p)`` (p = 0.1: eval gate 0.98, nearly dense).
        init_std: std of the seeded normal jitter added to the initial ``log_alpha``.
        init_mask: the initial eval gate of every weight, as the authors' code sets it (its ``mask_p``,
            0.9 there): every ``log_alpha`` starts at exactly ``logit((init_mask - gamma) / (zeta - gamma))``
            (log 5 = 1.609438 for 0.9), without jitter; ``init_drop_rate`` and ``init_std`` are then unused.
            None: the drop-rate init above.
        seed: seeds the jitter.
        gamma, zeta, beta: the hard-concrete constants.
    """

    def __init__(
        self,
        model: nn.Module,
        targets: str | Sequence[str] | None = None,
        *,
        init_drop_rate: float = 0.1,
        init_std: float = 0.01,
        init_mask: float | None = None,
        seed: int = 0,
        gamma: float = GAMMA,
        zeta: float = ZETA,
        beta: float = BETA,
    ) -> None:
        super().__init__()
        if not 0 < init_drop_rate < 1:
            raise ValueError(f"init_drop_rate must lie in (0, 1), got {init_drop_rate}")
        if not init_std >= 0:
            raise ValueError(f"init_std must be >= 0, got {init_std}")
        if init_mask is not None and not gamma < init_mask < zeta:
            raise ValueError(f"init_mask must lie in (gamma, zeta) = ({gamma}, {zeta}), got {init_mask}")
        modules = select_targets(model, targets)
        self.names = [f"{name}.weight" for name in modules]
        self.gamma, self.zeta, self.beta = float(gamma), float(zeta), float(beta)
        generator = torch.Generator().manual_seed(seed)
        if init_mask is None:
            mean = math.log(1 - init_drop_rate) - math.log(init_drop_rate)
        else:  # the eval gate clamp(sigmoid(log_alpha) * (zeta - gamma) + gamma) starts at init_mask
            p = (init_mask - gamma) / (zeta - gamma)
            mean, init_std = math.log(p / (1 - p)), 0.0
        self.log_alphas = nn.ParameterList(
            nn.Parameter(
                torch.empty(m.weight.shape).normal_(mean, init_std, generator=generator).to(m.weight.device)
            )
            for m in modules.values()
        )
        object.__setattr__(self, "_modules_by_name", dict(modules))  # plain refs: not submodules
        self._noise: list[torch.Tensor | None] = [None] * len(self.names)
        self._attached = False

    def __len__(self) -> int:
        return len(self.names)

    @property
    def attached(self) -> bool:
        return self._attached

    def named_log_alphas(self) -> dict[str, torch.Tensor]:
        """``{targeted parameter name: log_alpha}``."""
        return dict(zip(self.names, self.log_alphas))

    def resample(self, generator: torch.Generator | None = None) -> None:
        """Draw fresh gate noise ``u ~ U(eps, 1 - eps)`` for every target (torch's RNG or ``generator``)."""
        self._noise = [sample_hard_concrete_noise(la, generator=generator) for la in self.log_alphas]

    def gate(self, index: int, weight: torch.Tensor) -> torch.Tensor:
        """``weight * z`` for target ``index`` (stochastic in train mode, deterministic in eval mode)."""
        u = None
        if self.training:
            if self._noise[index] is None:
                self._noise[index] = sample_hard_concrete_noise(self.log_alphas[index])
            u = self._noise[index]
        return hard_concrete_gate(
            weight, self.log_alphas[index], u, gamma=self.gamma, zeta=self.zeta, beta=self.beta
        )

    def attach(self) -> HardConcreteMasks:
        """Gate the targets' weights (a parametrization each); the original weights are left untouched."""
        if self._attached:
            raise RuntimeError("these masks are already attached")
        for index, module in enumerate(self._modules_by_name.values()):
            parametrize.register_parametrization(module, "weight", _Gate(self, index), unsafe=True)
        self._attached = True
        return self

    def detach(self) -> None:
        """Remove the gates: each target's ``weight`` is its original, ungated parameter again."""
        if not self._attached:
            return
        for module in self._modules_by_name.values():
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        self._attached = False

    def __enter__(self) -> HardConcreteMasks:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def l0_penalty(self) -> torch.Tensor:
        """The expected fraction of open gates over all targets (differentiable in ``log_alpha``)."""
        return l0_penalty(list(self.log_alphas), self.gamma, self.zeta, self.beta)

    @torch.no_grad()
    def eval_density(self) -> float:
        """Fraction of deterministic (eval) gates that are non-zero."""
        p = -self.gamma / (self.zeta - self.gamma)  # z > 0 exactly when sigmoid(log_alpha) > p
        threshold = math.log(p / (1 - p))
        total = sum(la.numel() for la in self.log_alphas)
        return sum(int((la > threshold).sum()) for la in self.log_alphas) / total

    def draw_ticket(self, sparsity: float) -> dict[str, torch.Tensor]:
        """Global keep-masks at exactly ``sparsity`` from ``log_alpha`` (see :func:`draw_ticket`)."""
        return draw_ticket(self.named_log_alphas(), sparsity)


# Adam on log_alpha at a constant rate, unclipped, no weight decay (Robust Tickets' mask learning; a
# schedule with weight_decay > 0 trains them with AdamW, as the paper's Table 7 does).
MASK_SCHEDULE = TrainingSchedule(lr=0.1, weight_decay=0.0, warmup_ratio=0.0, max_grad_norm=0.0)


@dataclass
class MaskTrainingHistory(TrainingHistory):
    """Per step: total loss (adversarial + lambda * L0), learning rate, L0 penalty and lambda."""

    l0: list[float] = field(default_factory=list)
    lambdas: list[float] = field(default_factory=list)


def train_hard_concrete_masks(
    model: nn.Module,
    tokenizer: Any,
    train: TextDataset,
    masks: HardConcreteMasks,
    schedule: TrainingSchedule = MASK_SCHEDULE,
    *,
    attack: Attack | None = DEFAULT_ATTACK,
    l0_lambda: float = 1.0,
    l0_warmup_ratio: float = 0.1,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 100,
    stop_after: int | None = None,
    progress: bool = True,
) -> MaskTrainingHistory:
    """Learn ``masks.log_alphas`` on ``train`` with every model weight frozen (restored afterwards).

    Each step draws one gate sample, computes the adversarial loss (``attack``; None: clean loss) through the
    gated model, adds ``lambda_t * L0`` and takes an Adam step (constant ``schedule.lr``) on ``log_alpha``;
    with ``schedule.weight_decay > 0`` an AdamW step (decoupled decay of ``log_alpha`` toward 0).
    The masks are attached for the duration of the call (if they were not already) and left in ``train()``
    mode.

    Args:
        schedule: epochs, batch size, learning rate, weight decay (AdamW's, on every ``log_alpha``),
            clipping of ``log_alpha``'s gradient (0: none), truncation and seed; default
            :data:`MASK_SCHEDULE`. The rate is constant: a schedule with warm-up is refused.
        checkpoint_dir, checkpoint_every, stop_after: as in
            :func:`~robustprune.train.finetune.adversarial_finetune` (checkpoints hold ``log_alpha``,
            Adam's state, the RNG and the history).
        l0_lambda, l0_warmup_ratio: the L0 weight and the fraction of steps over which it rises from 0.

    Returns:
        The per-step losses, learning rates, L0 penalties and lambdas (including resumed steps).
    """
    check_training_arguments(model, train, attack)
    if schedule.warmup_ratio:
        raise ValueError(f"the masks train at a constant lr: the schedule must have warmup_ratio=0, got "
                         f"{schedule.warmup_ratio} (start from MASK_SCHEDULE.replace(...))")
    if not 0 <= l0_warmup_ratio <= 1:
        raise ValueError(f"l0_warmup_ratio must be in [0, 1], got {l0_warmup_ratio}")
    steps_per_epoch, total_steps = schedule.steps(len(train))
    lambdas = LambdaSchedule(float(l0_lambda), int(l0_warmup_ratio * total_steps))
    torch.manual_seed(schedule.seed)
    if schedule.weight_decay:
        optimizer = torch.optim.AdamW(masks.log_alphas.parameters(), lr=schedule.lr,
                                      weight_decay=schedule.weight_decay)
    else:  # plain Adam, as before weight decay was allowed (its checkpoints resume)
        optimizer = torch.optim.Adam(masks.log_alphas.parameters(), lr=schedule.lr)
    history = MaskTrainingHistory()

    def l0_term(step: int) -> torch.Tensor:
        lam = lambdas(step)
        penalty = masks.l0_penalty()
        history.l0.append(float(penalty.detach()))
        history.lambdas.append(lam)
        return lam * penalty

    fingerprint = {  # warm-up is always 0 here and weight decay 0 by default: left out, as before they existed
        "attack": attack, "epochs": schedule.epochs, "batch_size": schedule.batch_size, "lr": schedule.lr,
        "l0_lambda": l0_lambda, "l0_warmup_ratio": l0_warmup_ratio, "max_grad_norm": schedule.max_grad_norm,
        "max_length": schedule.max_length, "seed": schedule.seed, "examples": len(train), "targets": masks.names,
        "constants": (masks.gamma, masks.zeta, masks.beta),
        **({} if schedule.precision == "fp32" else {"precision": schedule.precision}),
        **({"weight_decay": schedule.weight_decay} if schedule.weight_decay else {}),
    }
    run = training_run(
        model, optimizer=optimizer, attack=attack, clip=masks.log_alphas.parameters(),
        max_grad_norm=schedule.max_grad_norm,
        hooks=StepHooks(before=lambda step: masks.resample(), extra_loss=l0_term),
        total_steps=total_steps, steps_per_epoch=steps_per_epoch,
        epoch_batches=epoch_batch_fn(train, tokenizer, schedule),
        stateful={"masks": masks, "optimizer": optimizer}, fingerprint=fingerprint,
        checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, stop_after=stop_after,
        desc="robust-ticket masks", history=history, precision=schedule.precision,
    )
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for param, _ in frozen:
        param.requires_grad_(False)
    attached_here = not masks.attached
    if attached_here:
        masks.attach()
    was_training = model.training
    model.train()
    masks.train()
    try:
        return run_resumable(run, progress)
    finally:
        model.train(was_training)
        if attached_here:
            masks.detach()
        for param, flag in frozen:
            param.requires_grad_(flag)


@torch.no_grad()
def reset_to_pretrained(model: nn.Module, pretrained_state: Mapping[str, torch.Tensor]) -> list[str]:
    """Copy ``pretrained_state`` into ``model``'s parameters and buffers of the same names, in place.

    Returns the names of the model's parameters the state did not hold (left as they are, e.g. a
    classification head that the pre-trained checkpoint lacks). Raises on a shape mismatch, or if no
    parameter matched at all.
    """
    own = dict(model.named_parameters()) | dict(model.named_buffers())
    matched = []
    for name, value in pretrained_state.items():
        if name not in own:
            continue
        if tuple(value.shape) != tuple(own[name].shape):
            raise ValueError(
                f"pretrained_state[{name!r}] has shape {tuple(value.shape)}, the model's is "
                f"{tuple(own[name].shape)}"
            )
        own[name].copy_(value)
        matched.append(name)
    if not matched:
        raise ValueError(
            "pretrained_state shares no parameter name with the model (expected a state_dict of "
            f"the same architecture, e.g. names like {next(iter(own), '?')!r})"
        )
    return [name for name, _ in model.named_parameters() if name not in pretrained_state]


@dataclass
class RobustTicket:
    """Result of :func:`robust_ticket`: the keep-masks, and both stages' histories."""

    masks: dict[str, torch.Tensor]
    mask_history: MaskTrainingHistory
    finetune_history: TrainingHistory
    not_reset: list[str]


def robust_ticket(
    model: nn.Module,
    tokenizer: Any,
    train: TextDataset,
    pretrained_state: Mapping[str, torch.Tensor],
    sparsity: float,
    *,
    targets: str | Sequence[str] | None = None,
    attack: Attack | None = DEFAULT_ATTACK,
    l0_lambda: float = 1.0,
    l0_warmup_ratio: float = 0.1,
    mask_schedule: TrainingSchedule = MASK_SCHEDULE,
    finetune_schedule: TrainingSchedule = ADVERSARIAL_SCHEDULE,
    finetune_attack: Attack | None = None,
    init_mask: float | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 100,
    progress: bool = True,
) -> RobustTicket:
    """The Robust Tickets pipeline on a fine-tuned ``model``, in place.

    Learns hard-concrete masks under ``attack`` (weights frozen), draws the ticket globally at ``sparsity``
    from ``log_alpha``, resets the weights to ``pretrained_state`` (e.g. the state the fine-tuning started
    from), and fine-tunes the ticket with the mask fixed (adversarially when ``finetune_attack`` is set).
    ``mask_schedule`` and ``finetune_schedule`` are the two phases' settings (the gates are initialised
    from ``mask_schedule.seed``; ``init_mask``: their initial value, see :class:`HardConcreteMasks`). With
    ``checkpoint_dir`` both stages checkpoint into sub-directories and a repeated call resumes.
    """
    sparsity = check_sparsity(sparsity)
    sub = (lambda name: None) if checkpoint_dir is None else (lambda name: Path(checkpoint_dir) / name)
    masks = HardConcreteMasks(model, targets, seed=mask_schedule.seed, init_mask=init_mask)
    mask_history = train_hard_concrete_masks(
        model, tokenizer, train, masks, mask_schedule, attack=attack, l0_lambda=l0_lambda,
        l0_warmup_ratio=l0_warmup_ratio, checkpoint_dir=sub("masks"), checkpoint_every=checkpoint_every,
        progress=progress)
    ticket = masks.draw_ticket(sparsity)
    not_reset = reset_to_pretrained(model, pretrained_state)
    finetune_history = adversarial_finetune(
        model, tokenizer, train, finetune_attack, finetune_schedule, masks=ticket,
        checkpoint_dir=sub("finetune"), checkpoint_every=checkpoint_every, progress=progress)
    return RobustTicket(ticket, mask_history, finetune_history, not_reset)


__all__ = [
    "MASK_SCHEDULE",
    "HardConcreteMasks",
    "LambdaSchedule",
    "MaskTrainingHistory",
    "RobustTicket",
    "draw_ticket",
    "l0_penalty",
    "reset_to_pretrained",
    "robust_ticket",
    "train_hard_concrete_masks",
]
