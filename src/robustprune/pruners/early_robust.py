"""EarlyRobust (Xi et al., 2022): robust early-bird tickets of attention heads and FFN neurons.

1. :class:`StructureCoefficients` puts a learnable coefficient, initialised to 1, on every attention head
   (scaling the head's output before the attention output projection: a forward pre-hook on
   ``attention.output.dense``) and on every FFN neuron (scaling the intermediate activation: a forward hook
   on ``intermediate``). Hooks only: no model code is copied.
2. :func:`early_robust_search` trains the coefficients jointly with the weights under the adversarial loss
   (FreeLB by default) plus ``lambda_heads * sum|c_head| + lambda_neurons * sum|c_neuron|``. Every
   ``check_every`` steps (or ``check_every_epochs`` of an epoch) it draws masks from the coefficients
   (:func:`select_heads`: global, at least one head kept per block; :func:`select_neurons`: global) and the
   :class:`EarlyBird` tracker compares them with the previous check's masks: once the normalised Hamming
   distance is below ``gamma`` for heads AND neurons ``patience`` times in a row the ticket has emerged and
   the search stops. Checkpointed and resumable.
3. :func:`early_robust` runs the pipeline: search, reset every weight to the pre-trained state (including
   the classification head, back to its initial values), remove the pruned heads and neurons physically
   (:mod:`robustprune.pruners.structured`), then fine-tune plainly (clean loss), and reports parameter
   counts and wall-clock times, optionally against a full adversarial fine-tuning of the dense model.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from typing_extensions import Self  # typing.Self needs Python 3.11; torch depends on this

from robustprune.data.datasets import TextDataset
from robustprune.eval.analysis import hamming_distance
from robustprune.pruners.robust_tickets import draw_ticket, reset_to_pretrained
from robustprune.pruners.structured import bert_layers, count_parameters, prune_heads_, prune_neurons_
from robustprune.sparse_ops.validation import check_sparsity
from robustprune.train.adversarial import Attack, FreeLB
from robustprune.train.checkpoint import TrainingHistory, run_resumable
from robustprune.train.finetune import (
    ADVERSARIAL_SCHEDULE,
    adversarial_finetune,
    epoch_batch_fn,
    parameter_groups,
)
from robustprune.train.loop import StepHooks, check_training_arguments, training_run
from robustprune.train.schedule import TrainingSchedule

DEFAULT_ATTACK = FreeLB()  # frozen dataclass: sharing one default instance is safe


class StructureCoefficients(nn.Module):
    """Learnable scales on the heads (``heads``: ``(layers, heads)``) and FFN neurons (``neurons``:
    ``(layers, intermediate)``) of a BERT-family model, all initialised to 1.

    :meth:`attach` registers the hooks (the model then computes with the scales), :meth:`detach` removes
    them; also usable as a context manager. The model must not have been pruned structurally yet (every block
    the same shape).

    Raises:
        TypeError: ``model`` is not a BERT-family encoder.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        layers = bert_layers(model)
        heads = {layer.attention.self.num_attention_heads for layer in layers}
        neurons = {layer.intermediate.dense.out_features for layer in layers}
        if len(heads) != 1 or len(neurons) != 1:
            raise ValueError(f"every block must have the same shape (got heads {sorted(heads)}, neurons "
                             f"{sorted(neurons)}); build the coefficients before any structured pruning")
        weight = layers[0].intermediate.dense.weight
        self.heads = nn.Parameter(torch.ones(len(layers), heads.pop(), device=weight.device))
        self.neurons = nn.Parameter(torch.ones(len(layers), neurons.pop(), device=weight.device))
        object.__setattr__(self, "_layers", layers)  # plain refs: the model must not become a submodule
        self._handles: list[Any] = []

    @classmethod
    def from_masks(cls, model: nn.Module, head_keep: torch.Tensor, neuron_keep: torch.Tensor
                   ) -> StructureCoefficients:
        """Fixed 0/1 coefficients from keep-masks: the *masked* model that physical pruning must reproduce."""
        coefficients = cls(model)
        for name, mask, target in (("head_keep", head_keep, coefficients.heads),
                                   ("neuron_keep", neuron_keep, coefficients.neurons)):
            if mask.dtype != torch.bool or mask.shape != target.shape:
                raise ValueError(f"{name} must be a bool tensor of shape {tuple(target.shape)}, got "
                                 f"{mask.dtype} {tuple(mask.shape)}")
            with torch.no_grad():
                target.copy_(mask)
            target.requires_grad_(False)
        return coefficients

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def attach(self) -> Self:
        """Scale every head's output and every neuron's activation by its coefficient (hooks)."""
        if self._handles:
            raise RuntimeError("these coefficients are already attached")
        for index, layer in enumerate(self._layers):
            head_size = layer.attention.self.attention_head_size
            self._handles.append(layer.attention.output.dense.register_forward_pre_hook(
                self._head_hook(index, head_size)))
            self._handles.append(layer.intermediate.register_forward_hook(self._neuron_hook(index)))
        return self

    def _head_hook(self, index: int, head_size: int):
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            context = args[0]  # (..., heads * head_size): the heads' outputs, concatenated
            scale = self.heads[index].to(context.dtype).repeat_interleave(head_size)
            return (context * scale, *args[1:])

        return hook

    def _neuron_hook(self, index: int):
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
            return output * self.neurons[index].to(output.dtype)

        return hook

    def detach(self) -> None:
        """Remove the hooks: the model computes without the scales again."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> Self:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def l1(self, lambda_heads: float, lambda_neurons: float) -> torch.Tensor:
        """``lambda_heads * sum|heads| + lambda_neurons * sum|neurons|``."""
        return lambda_heads * self.heads.abs().sum() + lambda_neurons * self.neurons.abs().sum()

    def masks(self, head_ratio: float, neuron_ratio: float, scope: str = "global"
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep-masks ``(heads, neurons)`` pruning these fractions (see :func:`select_heads`,
        :func:`select_neurons`), globally or per block (``scope``)."""
        return (select_heads(self.heads.detach(), head_ratio, scope),
                select_neurons(self.neurons.detach(), neuron_ratio, scope))


SCOPES = ("global", "layer")


def _check_scope(scope: str) -> None:
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {list(SCOPES)} (global: one ranking over every block; layer: the "
                         f"same share of each block), got {scope!r}")


def select_heads(scores: torch.Tensor, prune_ratio: float, scope: str = "global") -> torch.Tensor:
    """Keep-mask ``(layers, heads)`` pruning the heads of smallest ``|score|``.

    ``global`` (Xi et al.'s modified global pruning): exactly ``round(prune_ratio * layers * heads)`` heads
    over all blocks, never the last head of a block: a head whose block has only one left is skipped and the
    next smallest is taken. Ties go in (block, head) order. ``layer``: ``round(prune_ratio * heads)`` in every
    block (ties in head order).

    Raises:
        ValueError: not a finite 2-D score tensor, an unknown scope, or the ratio would need a block to lose
            every head.
    """
    prune_ratio = check_sparsity(prune_ratio, "head prune_ratio")
    _check_scope(scope)
    if scores.ndim != 2 or not scores.is_floating_point() or not bool(torch.isfinite(scores).all()):
        raise ValueError(f"scores must be a finite float tensor (layers, heads), got {scores.dtype} "
                         f"{tuple(scores.shape)}")
    layers, heads = scores.shape
    if scope == "layer":
        per_block = round(prune_ratio * heads)
        if per_block > heads - 1:
            raise ValueError(f"head prune_ratio {prune_ratio} prunes {per_block} of each block's {heads} heads, but "
                             "at least one per block must stay")
        keep = torch.ones(layers, heads, dtype=torch.bool)
        for layer, row in enumerate(scores.detach().abs().float().cpu()):
            keep[layer, torch.sort(row, stable=True).indices[:per_block]] = False
        return keep.to(scores.device)
    to_prune = round(prune_ratio * layers * heads)
    if to_prune > layers * (heads - 1):
        raise ValueError(f"head prune_ratio {prune_ratio} prunes {to_prune} of {layers * heads} heads, but at "
                         f"least one per block must stay (at most {layers * (heads - 1)} can go)")
    keep = torch.ones(layers, heads, dtype=torch.bool)
    left = [heads] * layers
    order = torch.sort(scores.detach().abs().float().cpu().reshape(-1), stable=True).indices.tolist()
    pruned = 0
    for flat in order:  # at most layers * heads entries: a Python loop is fine
        if pruned == to_prune:
            break
        layer, head = divmod(flat, heads)
        if left[layer] > 1:
            keep[layer, head] = False
            left[layer] -= 1
            pruned += 1
    return keep.to(scores.device)


def select_neurons(scores: torch.Tensor, prune_ratio: float, scope: str = "global") -> torch.Tensor:
    """Keep-mask ``(layers, neurons)`` pruning the neurons of smallest ``|score|``: exactly
    ``round(prune_ratio * n)`` of all ``n`` (``global``, ties in row-major order) or ``round(prune_ratio *
    neurons)`` in every block (``layer``)."""
    prune_ratio = check_sparsity(prune_ratio, "neuron prune_ratio")
    _check_scope(scope)
    magnitudes = scores.detach().abs()
    if scope == "layer":
        return torch.stack([draw_ticket({"neurons": row}, prune_ratio)["neurons"] for row in magnitudes])
    return draw_ticket({"neurons": magnitudes}, prune_ratio)["neurons"]


class EarlyBird:
    """The early-bird stop: ``update`` with each checkpoint's masks; :attr:`found` once the normalised Hamming
    distance to the previous checkpoint's masks was below ``gamma`` for heads and for neurons ``patience``
    checkpoints in a row. Keeps the distances; ``state_dict`` / ``load_state_dict`` for checkpoints."""

    def __init__(self, gamma: float = 0.1, patience: int = 5) -> None:
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma must lie in (0, 1] (a normalised Hamming distance), got {gamma}")
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.gamma, self.patience = float(gamma), int(patience)
        self.previous: dict[str, torch.Tensor] | None = None
        self.streak = 0
        self.found_at: int | None = None
        self.distances: list[tuple[int, float, float]] = []  # (step, heads, neurons)

    @property
    def found(self) -> bool:
        return self.found_at is not None

    def update(self, step: int, head_keep: torch.Tensor, neuron_keep: torch.Tensor) -> bool:
        """Record the masks drawn at ``step``; returns :attr:`found`."""
        current = {"heads": head_keep.detach().cpu(), "neurons": neuron_keep.detach().cpu()}
        if self.previous is not None and not self.found:
            heads = hamming_distance({"m": self.previous["heads"]}, {"m": current["heads"]})
            neurons = hamming_distance({"m": self.previous["neurons"]}, {"m": current["neurons"]})
            self.distances.append((step, heads, neurons))
            self.streak = self.streak + 1 if heads < self.gamma and neurons < self.gamma else 0
            if self.streak >= self.patience:
                self.found_at = step
        self.previous = current
        return self.found

    def state_dict(self) -> dict[str, Any]:
        return {"previous": self.previous, "streak": self.streak, "found_at": self.found_at,
                "distances": [list(d) for d in self.distances]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.previous, self.streak, self.found_at = state["previous"], state["streak"], state["found_at"]
        self.distances = [tuple(d) for d in state["distances"]]  # type: ignore[misc]


@dataclass(frozen=True)
class SearchSettings:
    """What EarlyRobust's search adds to its training schedule.

    Attributes:
        lambda_heads, lambda_neurons: weights of the L1 penalties on the head and neuron coefficients.
        coef_lr: the coefficients' learning rate (None: the schedule's ``lr``); no weight decay on them.
        check_every: steps between early-bird checks (masks drawn and compared), unless ``check_every_epochs``
            is set.
        check_every_epochs: the interval between checks as a fraction of an epoch (Xi et al.'s "miniepoch" of
            0.05 epochs), converted by :meth:`check_steps`; None: ``check_every`` steps.
        gamma, patience: the early bird is found once the normalised Hamming distance between consecutive
            checks' masks stayed strictly below ``gamma`` (heads and neurons) ``patience`` checks in a row.
        scope: how masks are drawn from the coefficients: ``global`` (one ranking of all heads, keeping one
            per block, and one of all neurons) or ``layer`` (the same share of every block).
    """

    lambda_heads: float = 1e-4
    lambda_neurons: float = 1e-4
    coef_lr: float | None = None
    check_every: int = 50
    gamma: float = 0.1
    patience: int = 5
    check_every_epochs: float | None = None
    scope: str = "global"

    def __post_init__(self) -> None:
        for name in ("lambda_heads", "lambda_neurons"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if self.coef_lr is not None and not self.coef_lr > 0:
            raise ValueError(f"coef_lr must be > 0, got {self.coef_lr}")
        if self.check_every < 1:
            raise ValueError(f"check_every must be >= 1, got {self.check_every}")
        if self.check_every_epochs is not None and not (math.isfinite(self.check_every_epochs)
                                                        and self.check_every_epochs > 0):
            raise ValueError(f"check_every_epochs must be a finite number > 0 or None, got {self.check_every_epochs}")
        _check_scope(self.scope)
        EarlyBird(self.gamma, self.patience)  # its own checks, now rather than at the first check

    def check_steps(self, steps_per_epoch: int) -> int:
        """Steps between checks: ``check_every_epochs * steps_per_epoch`` rounded to the nearest step (halves
        up), at least one; ``check_every`` when ``check_every_epochs`` is None."""
        if self.check_every_epochs is None:
            return self.check_every
        return max(1, math.floor(self.check_every_epochs * steps_per_epoch + 0.5))

    def fingerprint(self) -> dict[str, Any]:
        """The settings as checkpoints fingerprint them (``check_every_epochs`` and ``scope`` only when not at
        their defaults, so checkpoints written before they existed still resume)."""
        fields = asdict(self)
        if fields["check_every_epochs"] is None:
            del fields["check_every_epochs"]
        if fields["scope"] == "global":
            del fields["scope"]
        return fields


@dataclass
class SearchResult:
    """Result of :func:`early_robust_search`.

    Attributes:
        head_keep, neuron_keep: the ticket's keep-masks, ``(layers, heads)`` and ``(layers, neurons)``.
        found_at: the step at which the early bird was found, or None if the budget ran out first (the
            masks are then drawn from the final coefficients).
        steps, total_steps: steps run and the budget.
        distances: ``(step, head distance, neuron distance)`` at every check after the first.
        history: per-step total loss (adversarial + L1) and learning rate.
        seconds: wall-clock time of this call's training (excluding resumed steps run earlier).
        check_steps: steps between checks (:meth:`SearchSettings.check_steps`; 0 in summaries saved before
            it was recorded).
    """

    head_keep: torch.Tensor
    neuron_keep: torch.Tensor
    found_at: int | None
    steps: int
    total_steps: int
    distances: list[tuple[int, float, float]]
    history: TrainingHistory
    seconds: float
    check_steps: int = 0


def early_robust_search(
    model: nn.Module,
    tokenizer: Any,
    train: TextDataset,
    schedule: TrainingSchedule = ADVERSARIAL_SCHEDULE,
    *,
    head_ratio: float,
    neuron_ratio: float,
    attack: Attack | None = DEFAULT_ATTACK,
    search: SearchSettings = SearchSettings(),
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    stop_after: int | None = None,
    progress: bool = True,
) -> SearchResult:
    """Search the robust early-bird ticket: train weights and coefficients jointly until the masks settle.

    Each step takes the adversarial loss (``attack``; None: clean loss) of a batch through the scaled model
    plus the L1 penalties (``search.lambda_heads``, ``search.lambda_neurons``), and one AdamW step
    (``schedule``: the fine-tuning recipe's groups and linear schedule for the weights; the coefficients in
    their own group at ``search.coef_lr``, default ``schedule.lr``, without weight decay; only the weights
    are clipped to ``schedule.max_grad_norm``). Every :meth:`SearchSettings.check_steps` steps masks are drawn at
    ``head_ratio`` / ``neuron_ratio`` (fractions pruned) and given to :class:`EarlyBird` (``search.gamma``,
    ``search.patience``); the search stops when it fires, or after ``schedule.epochs`` of steps. ``model``
    is trained in place.

    With ``checkpoint_dir`` a checkpoint (model, coefficients, optimizer, schedule, tracker, RNG) is written
    at every check (and every ``checkpoint_every`` steps in between, if that is smaller) and a new call resumes
    from it; ``stop_after`` stops
    (checkpointed) once that many steps are done, to continue later.
    """
    from transformers import get_linear_schedule_with_warmup

    head_ratio = check_sparsity(head_ratio, "head_ratio")
    neuron_ratio = check_sparsity(neuron_ratio, "neuron_ratio")
    check_training_arguments(model, train, attack)
    if stop_after is not None and stop_after < 1:
        raise ValueError(f"stop_after must be >= 1 or None, got {stop_after}")
    coefficients = StructureCoefficients(model)
    select_heads(coefficients.heads.detach(), head_ratio, search.scope)  # fail now, not after the first check
    tracker = EarlyBird(search.gamma, search.patience)

    torch.manual_seed(schedule.seed)
    steps_per_epoch, total_steps = schedule.steps(len(train))
    check_every = search.check_steps(steps_per_epoch)
    groups = parameter_groups(model, schedule.weight_decay)
    groups.append({"params": list(coefficients.parameters()), "weight_decay": 0.0,
                   "lr": search.coef_lr or schedule.lr})
    optimizer = torch.optim.AdamW(groups, lr=schedule.lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, schedule.warmup_steps(total_steps), total_steps)
    model_params = [p for p in model.parameters() if p.requires_grad]

    def after_step(step: int) -> None:
        if (step + 1) % check_every == 0:  # inside the step, so the checkpoint after it holds the update
            tracker.update(step + 1, *coefficients.masks(head_ratio, neuron_ratio, search.scope))
        if bar is not None:  # one bar over all segments (run_resumable's own would restart per segment)
            bar.n = step + 1
            last = f"{history.losses[-1]:.4f}" if history.losses else "-"  # the previous step's
            bar.set_postfix(loss=last, streak=tracker.streak, refresh=False)
            bar.refresh()

    fingerprint = {"attack": attack, **schedule.as_dict(), "head_ratio": head_ratio, "neuron_ratio": neuron_ratio,
                   **search.fingerprint(), "examples": len(train)}
    history = TrainingHistory()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, desc="EarlyRobust search", unit="step")
    start = time.perf_counter()
    was_training = model.training
    model.train()
    coefficients.attach()
    try:
        # run_resumable runs to a step fixed in advance: one call per check_every steps, stopping after the
        # check that finds the early bird. Each epoch's batches are built once, not once per call.
        end = total_steps if stop_after is None else min(total_steps, stop_after)
        run = training_run(
            model, optimizer=optimizer, scheduler=scheduler, attack=attack, clip=model_params,
            max_grad_norm=schedule.max_grad_norm,
            hooks=StepHooks(extra_loss=lambda step: coefficients.l1(search.lambda_heads, search.lambda_neurons),
                            after=after_step),
            total_steps=total_steps, steps_per_epoch=steps_per_epoch,
            epoch_batches=functools.lru_cache(maxsize=1)(epoch_batch_fn(train, tokenizer, schedule)),
            stateful={"model": model, "coefficients": coefficients, "optimizer": optimizer,
                      "scheduler": scheduler, "early_bird": tracker},
            fingerprint=fingerprint, checkpoint_dir=checkpoint_dir,
            checkpoint_every=checkpoint_every or check_every, desc="EarlyRobust search", history=history,
            precision=schedule.precision,
        )
        while not tracker.found and history.steps < end:
            segment_end = min(end, (history.steps // check_every + 1) * check_every)
            run_resumable(dataclasses.replace(run, stop_after=segment_end), progress=False)
    finally:
        if bar is not None:
            bar.close()
        coefficients.detach()
        model.train(was_training)
    head_keep, neuron_keep = coefficients.masks(head_ratio, neuron_ratio, search.scope)
    return SearchResult(head_keep.cpu(), neuron_keep.cpu(), tracker.found_at, history.steps, total_steps,
                        list(tracker.distances), history, time.perf_counter() - start, check_every)


@dataclass
class EarlyRobustResult:
    """Result of :func:`early_robust`.

    Attributes:
        search: the early-bird search (masks, stop step, distances, time).
        heads_per_layer, neurons_per_layer: what is left in each block after physical pruning.
        params_before, params_after: parameter counts of the whole model before and after pruning.
        finetune_history: the plain fine-tuning of the pruned model.
        search_seconds, finetune_seconds: wall-clock times of the two stages in this call.
        full_adversarial_seconds: time of a full adversarial fine-tuning of the dense model with the same
            attack and budget (``compare_full_adversarial=True``), else None.
    """

    search: SearchResult
    heads_per_layer: list[int]
    neurons_per_layer: list[int]
    params_before: int
    params_after: int
    finetune_history: TrainingHistory
    search_seconds: float
    finetune_seconds: float
    full_adversarial_seconds: float | None = None
    not_reset: list[str] = field(default_factory=list)

    @property
    def param_ratio(self) -> float:
        """``params_after / params_before``."""
        return self.params_after / self.params_before

    @property
    def time_ratio(self) -> float | None:
        """(search + fine-tuning time) / full adversarial fine-tuning time, when that was measured."""
        if self.full_adversarial_seconds is None:
            return None
        return (self.search_seconds + self.finetune_seconds) / self.full_adversarial_seconds


_TICKET_FILE, _SEARCH_FILE = "ticket.safetensors", "search.json"


def early_robust(
    model: nn.Module,
    tokenizer: Any,
    train: TextDataset,
    *,
    head_ratio: float,
    neuron_ratio: float,
    pretrained_state: Mapping[str, torch.Tensor] | None = None,
    attack: Attack | None = DEFAULT_ATTACK,
    search: SearchSettings = SearchSettings(),
    search_schedule: TrainingSchedule = ADVERSARIAL_SCHEDULE,
    finetune_schedule: TrainingSchedule = ADVERSARIAL_SCHEDULE,
    finetune_attack: Attack | None = None,
    compare_full_adversarial: bool = False,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 100,
    progress: bool = True,
) -> EarlyRobustResult:
    """The EarlyRobust pipeline on a pre-trained BERT-family classifier, in place.

    Searches the early-bird ticket (:func:`early_robust_search`), resets every parameter to
    ``pretrained_state`` (default: ``model``'s state on entry, so a freshly initialised classification head
    goes back to its initial values too), removes the pruned heads and neurons physically, and fine-tunes the
    smaller model with ``finetune_schedule``, plainly (Xi et al.'s "traditional fine-tuning") unless
    ``finetune_attack`` is given. With ``compare_full_adversarial`` a copy of the dense
    pre-trained model is also fine-tuned adversarially (``attack``, ``finetune_schedule``) and timed, for
    :attr:`EarlyRobustResult.time_ratio`. The search runs with ``search_schedule`` and ``search``
    (:func:`early_robust_search`).

    With ``checkpoint_dir`` the search and the fine-tuning checkpoint into sub-directories, the ticket and the
    search summary are saved once found (``ticket.safetensors``, ``search.json``), and a repeated call resumes
    where the last one stopped (a found ticket is not searched again; its times are those of the call that
    found it). Times are wall-clock and include checkpoint writes; the machine's load adds noise, so compare
    ratios measured in one process.
    """
    head_ratio = check_sparsity(head_ratio, "head_ratio")
    neuron_ratio = check_sparsity(neuron_ratio, "neuron_ratio")
    bert_layers(model)
    if pretrained_state is None:
        pretrained_state = {name: value.detach().clone() for name, value in model.state_dict().items()}
    params_before = count_parameters(model)
    full_seconds = None
    if compare_full_adversarial:
        if attack is None:
            raise ValueError("compare_full_adversarial needs an attack to time adversarial training with")
        dense = copy.deepcopy(model)
        reset_to_pretrained(dense, pretrained_state)
        start = time.perf_counter()
        adversarial_finetune(dense, tokenizer, train, attack, finetune_schedule, progress=progress)
        full_seconds = time.perf_counter() - start
        del dense

    directory = None if checkpoint_dir is None else Path(checkpoint_dir)
    if directory is not None and (directory / _TICKET_FILE).is_file() and (directory / _SEARCH_FILE).is_file():
        masks = load_file(str(directory / _TICKET_FILE))
        summary = json.loads((directory / _SEARCH_FILE).read_text())
        history = TrainingHistory(summary.pop("losses"), summary.pop("learning_rates"))
        result = SearchResult(masks["heads"].bool(), masks["neurons"].bool(), history=history,
                              distances=[tuple(d) for d in summary.pop("distances")], **summary)
    else:
        result = early_robust_search(
            model, tokenizer, train, search_schedule, head_ratio=head_ratio, neuron_ratio=neuron_ratio,
            attack=attack, search=search,
            checkpoint_dir=None if directory is None else directory / "search", progress=progress)
        if directory is not None:
            save_file({"heads": result.head_keep.to(torch.uint8), "neurons": result.neuron_keep.to(torch.uint8)},
                      str(directory / _TICKET_FILE))
            summary = {k: v for k, v in asdict(result).items() if k not in ("head_keep", "neuron_keep", "history")}
            summary |= {"losses": result.history.losses, "learning_rates": result.history.learning_rates}
            (directory / _SEARCH_FILE).write_text(json.dumps(summary))

    not_reset = reset_to_pretrained(model, pretrained_state)
    heads = prune_heads_(model, result.head_keep)
    neurons = prune_neurons_(model, result.neuron_keep)
    params_after = count_parameters(model)
    start = time.perf_counter()
    finetune_history = adversarial_finetune(
        model, tokenizer, train, finetune_attack, finetune_schedule,
        checkpoint_dir=None if directory is None else directory / "finetune",
        checkpoint_every=checkpoint_every, progress=progress)
    finetune_seconds = time.perf_counter() - start
    return EarlyRobustResult(result, heads, neurons, params_before, params_after, finetune_history,
                             result.seconds, finetune_seconds, full_seconds, not_reset)


__all__ = [
    "SCOPES",
    "EarlyBird",
    "EarlyRobustResult",
    "SearchResult",
    "SearchSettings",
    "StructureCoefficients",
    "early_robust",
    "early_robust_search",
    "select_heads",
    "select_neurons",
]
