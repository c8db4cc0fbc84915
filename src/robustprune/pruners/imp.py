"""Iterative magnitude pruning with rewinding (lottery tickets; Frankle & Carbin, Chen et al. for BERT).

Starting from a *trained* model and the *pre-trained* state its training began from, each round

1. ranks the surviving targeted weights of the current trained model by |W|, globally, and prunes
   ``round(prune_rate * surviving)`` of them (masks are cumulative: a pruned weight stays pruned, so after
   round r the sparsity is about ``1 - (1 - prune_rate)^r``, exact counts from :func:`imp_schedule`);
2. rewinds every parameter to the pre-trained state: the survivors to their pre-trained values, and the
   parameters outside the targets (embeddings, LayerNorm, biases, pooler, and the classification head, to
   its initial values) likewise; pruned weights are zero;
3. retrains with the mask fixed (plainly, or adversarially with ``attack``).

Each round's masks (safetensors, uint8), trained weights and summary are written to
``output_dir/round_RR-N`` (round RR, N weights pruned in all); a repeated call skips finished rounds and
resumes an unfinished round's training from its checkpoint. A round is determined by its number and count
(every round before the last follows the same schedule), so runs with the same settings toward different
sparsities share one ``output_dir``: a run to 50 % reuses the rounds to 20, 36 and 48.8 % of a run to 60 %
and trains only its own last round (Lottery-ticket sweeps run IMP once along the schedule this way).

Every round is also compared with one-shot magnitude pruning at the same sparsity, computed on the trained
weights IMP *started from* (the ``model`` passed in): their mask cosine similarity and normalised Hamming
distance. Round 1 is one-shot magnitude pruning of those weights by construction (cosine 1).
:func:`compare_with_one_shot` makes the same comparison against any weights, e.g. the pre-trained ones
(Jaiswal et al., 2023, compare lottery tickets with OMP masks of the pre-trained checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from robustprune.data.datasets import TextDataset
from robustprune.eval.analysis import hamming_distance, mask_cosine
from robustprune.pruners.magnitude import masks_sparsity
from robustprune.pruners.robust_tickets import draw_ticket, reset_to_pretrained
from robustprune.sparse_ops.validation import check_sparsity
from robustprune.targets import select_targets
from robustprune.train.adversarial import Attack
from robustprune.train.finetune import ADVERSARIAL_SCHEDULE, adversarial_finetune
from robustprune.train.loop import require_attack
from robustprune.train.schedule import TrainingSchedule

MASKS_FILE, MODEL_FILE, SUMMARY_FILE, SETTINGS_FILE = (
    "masks.safetensors", "model.safetensors", "summary.json", "settings.json")


def imp_schedule(total: int, prune_rate: float, rounds: int) -> list[int]:
    """Cumulative number of pruned weights after each round: ``n_r = n_{r-1} + round(prune_rate * (total -
    n_{r-1}))``."""
    if not 0 < prune_rate < 1:
        raise ValueError(f"prune_rate must lie in (0, 1) (the fraction of surviving weights pruned per "
                         f"round), got {prune_rate}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    pruned, schedule = 0, []
    for _ in range(rounds):
        pruned += round(prune_rate * (total - pruned))
        schedule.append(pruned)
    return schedule


def imp_schedule_to(total: int, prune_rate: float, sparsity: float) -> list[int]:
    """Cumulative pruned counts of rounds at ``prune_rate`` that stop exactly at ``round(sparsity * total)``:
    each round prunes ``round(prune_rate * surviving)`` (at least one weight) and the last round only what is
    left to reach the target, so IMP lands on the same sparsity as a one-shot method it is compared with."""
    if not 0 < prune_rate < 1:
        raise ValueError(f"prune_rate must lie in (0, 1) (the fraction of surviving weights pruned per "
                         f"round), got {prune_rate}")
    target = round(check_sparsity(sparsity) * total)
    if target == 0:
        raise ValueError(f"sparsity {sparsity} prunes no weight of {total}; IMP needs at least one round")
    pruned, schedule = 0, []
    while pruned < target:
        pruned = min(target, pruned + max(1, round(prune_rate * (total - pruned))))
        schedule.append(pruned)
    return schedule


def magnitude_masks(weights: Mapping[str, torch.Tensor], pruned: int,
                    survivors: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Global magnitude keep-masks pruning exactly ``pruned`` entries; with ``survivors`` only surviving
    entries are ranked and every already-pruned one stays pruned (``pruned`` counts both).

    Ties at the cut are pruned in mapping order, then row-major index (as :func:`magnitude_prune`)."""
    total = sum(w.numel() for w in weights.values())
    if not 0 <= pruned < total:
        raise ValueError(f"pruned must lie in [0, {total}) (entries of the weights), got {pruned}")
    scores = {}
    for name, weight in weights.items():
        score = weight.detach().float().abs()
        if survivors is not None:  # below every |W|: the already-pruned go first
            score = torch.where(survivors[name].to(score.device), score, torch.full_like(score, -1.0))
        scores[name] = score
    # draw_ticket prunes round(sparsity * total); pruned / total round-trips to exactly `pruned`.
    return draw_ticket(scores, pruned / total)


def compare_with_one_shot(masks: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor]
                          ) -> tuple[float, float]:
    """(mask cosine similarity, normalised Hamming distance) between ``masks`` (keep-masks by parameter name)
    and the global one-shot magnitude masks of ``weights`` (same names and shapes) that prune as many entries
    as ``masks`` do (:func:`magnitude_masks`; :func:`~robustprune.eval.analysis.mask_cosine`)."""
    missing = [name for name in masks if name not in weights]
    if missing:
        raise ValueError(f"weights lack {len(missing)} of the masked tensors ({missing[:4]})")
    pruned = sum(int(torch.count_nonzero(~mask.bool())) for mask in masks.values())
    one_shot = magnitude_masks({name: weights[name] for name in masks}, pruned)
    one_shot = {name: mask.to(masks[name].device) for name, mask in one_shot.items()}  # masks may sit elsewhere
    return mask_cosine(masks, one_shot), hamming_distance(masks, one_shot)


@torch.no_grad()
def rewind_(model: nn.Module, pretrained_state: Mapping[str, torch.Tensor],
            masks: Mapping[str, torch.Tensor]) -> None:
    """Reset every parameter of ``model`` to ``pretrained_state``, then zero the pruned weights (``masks``:
    keep-masks by parameter name), in place.

    Raises:
        ValueError: ``pretrained_state`` lacks some parameter (e.g. the classification head: snapshot
            ``model.state_dict()`` right after creating the model, before fine-tuning, to rewind it too).
    """
    missing = reset_to_pretrained(model, pretrained_state)
    if missing:
        raise ValueError(f"pretrained_state lacks {len(missing)} parameter(s) of the model ({missing[:4]}); "
                         "pass the full state the training started from (its head included)")
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask.to(params[name].device))


@dataclass
class IMPRound:
    """One IMP round.

    Attributes:
        round: 1-based round number.
        pruned: targeted weights pruned in all after this round.
        sparsity: fraction of targeted weights pruned after this round.
        cosine_vs_one_shot, hamming_vs_one_shot: mask cosine similarity and normalised Hamming distance to
            one-shot global magnitude masks at the same sparsity on the weights IMP started from.
        final_loss: the last training loss of the round's retraining.
        directory: where the round's masks, weights and summary are.
    """

    round: int
    pruned: int
    sparsity: float
    cosine_vs_one_shot: float
    hamming_vs_one_shot: float
    final_loss: float
    directory: str


def round_directory(output_dir: str | Path, round: int, pruned: int) -> Path:
    """Where an IMP run keeps round ``round``, which prunes ``pruned`` weights in all."""
    return Path(output_dir) / f"round_{round:02d}-{pruned}"


def _round_counts(model: nn.Module, targets: str | Sequence[str] | None, prune_rate: float, rounds: int | None,
                  sparsity: float | None) -> tuple[list[str], list[int]]:
    """The targeted weight names of ``model`` and the cumulative pruned count after each round of the IMP run
    that ``rounds`` / ``sparsity`` ask for (as :func:`iterative_magnitude_prune` documents them)."""
    if sparsity is not None and rounds is not None:
        raise ValueError("give rounds or sparsity, not both (with sparsity the rounds follow from prune_rate)")
    names = [f"{name}.weight" for name in select_targets(model, targets)]
    params = dict(model.named_parameters())
    total = sum(params[name].numel() for name in names)
    if sparsity is None:
        return names, imp_schedule(total, prune_rate, 3 if rounds is None else rounds)
    return names, imp_schedule_to(total, prune_rate, sparsity)


def unfinished_rounds(model: nn.Module, output_dir: str | Path, *, prune_rate: float = 0.2,
                      rounds: int | None = None, sparsity: float | None = None,
                      targets: str | Sequence[str] | None = None) -> list[Path]:
    """The rounds of the IMP run :func:`iterative_magnitude_prune` would make with these arguments whose
    training an earlier call left unfinished in ``output_dir``: what that call would resume."""
    _, counts = _round_counts(model, targets, prune_rate, rounds, sparsity)
    folders = [round_directory(output_dir, index, pruned) for index, pruned in enumerate(counts, start=1)]
    return [folder for folder in folders if (folder / "train").is_dir()]


def load_imp_masks(output_dir: str | Path, round: int, pruned: int | None = None) -> dict[str, torch.Tensor]:
    """The keep-masks (bool) of a finished round in an IMP ``output_dir``, in target order; ``pruned`` (its
    total pruned count) tells apart the last rounds of runs to different sparsities sharing the folder.

    Raises:
        FileNotFoundError: no such finished round.
        ValueError: without ``pruned``, several finished rounds with this number.
    """
    pattern = f"round_{round:02d}-{'*' if pruned is None else pruned}/{MASKS_FILE}"
    found = sorted(Path(output_dir).glob(pattern))
    if not found:
        raise FileNotFoundError(f"no masks for round {round} in {output_dir} (no {pattern})")
    if len(found) > 1:
        raise ValueError(f"{output_dir} holds {len(found)} rounds numbered {round} (runs to different sparsities "
                         f"share it): pass pruned=, one of {[int(p.parent.name.split('-')[1]) for p in found]}")
    path = found[0]
    masks = load_file(str(path))
    order = json.loads((Path(output_dir) / SETTINGS_FILE).read_text())["targets"]  # safetensors sorts keys
    return {name: masks[name].bool() for name in order}


def _checksum(weights: Mapping[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name, weight in weights.items():
        digest.update(name.encode())
        digest.update(weight.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def iterative_magnitude_prune(
    model: nn.Module,
    tokenizer: Any,
    train: TextDataset,
    pretrained_state: Mapping[str, torch.Tensor],
    output_dir: str | Path,
    *,
    prune_rate: float = 0.2,
    rounds: int | None = None,
    sparsity: float | None = None,
    targets: str | Sequence[str] | None = None,
    attack: Attack | None = None,
    schedule: TrainingSchedule = ADVERSARIAL_SCHEDULE,
    checkpoint_every: int = 100,
    progress: bool = True,
) -> list[IMPRound]:
    """Run ``rounds`` of IMP with rewinding on the trained ``model``, in place (it ends as the last round's
    trained ticket), and return the per-round report.

    Args:
        model: a trained Hugging Face sequence classifier (e.g. fine-tuned from ``pretrained_state``).
        pretrained_state: the full state its training started from (pre-trained encoder and initial head).
        output_dir: per-round masks / weights / summaries and the training checkpoints; resumed from, and
            shared by runs with the same settings toward other sparsities (each reuses the rounds they share).
        prune_rate: fraction of the *surviving* targeted weights pruned per round.
        rounds: how many rounds (None: 3, or as many as ``sparsity`` takes).
        sparsity: instead of ``rounds``: prune until exactly this fraction of the targeted weights is gone,
            the last round pruning only up to it (:func:`imp_schedule_to`), for comparisons at matched
            sparsity.
        targets: which Linear layers are pruned (None: those inside the transformer blocks).
        attack: None for plain retraining, FreeLB / PGD for adversarial retraining.
        schedule: the retraining recipe of each round, the same every round (default
            :data:`~robustprune.train.adversarial.ADVERSARIAL_SCHEDULE`, ``lr=2e-5``).
        checkpoint_every: steps between training checkpoints inside a round.
        progress: progress bars for the rounds and each round's training.

    Raises:
        ValueError: bad arguments, a ``pretrained_state`` missing parameters, or an ``output_dir`` written
            for another starting model or other settings.
    """
    require_attack(attack)
    names, pruned_counts = _round_counts(model, targets, prune_rate, rounds, sparsity)
    params = dict(model.named_parameters())
    start_weights = {name: params[name].detach().clone() for name in names}
    rounds = len(pruned_counts)
    missing = [name for name, _ in model.named_parameters() if name not in pretrained_state]
    if missing:
        raise ValueError(f"pretrained_state lacks {len(missing)} parameter(s) of the model ({missing[:4]}); "
                         "pass the full state the training started from (its head included)")

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    settings = {"start_checksum": _checksum(start_weights), "prune_rate": prune_rate, "targets": names,
                "attack": repr(attack), **schedule.as_dict(), "examples": len(train)}
    settings_path = output_dir / SETTINGS_FILE
    if settings_path.is_file():
        saved = json.loads(settings_path.read_text())
        if saved != settings:
            changed = sorted(k for k in settings.keys() | saved.keys() if settings.get(k) != saved.get(k))
            raise ValueError(f"{output_dir} holds an IMP run with other settings or another starting model "
                             f"({changed}); use another output_dir")
    else:
        settings_path.write_text(json.dumps(settings, indent=1))

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=rounds, desc="IMP rounds", unit="round")
    report: list[IMPRound] = []
    survivors: dict[str, torch.Tensor] | None = None
    try:
        for index, pruned in enumerate(pruned_counts, start=1):
            directory = round_directory(output_dir, index, pruned)
            if (directory / SUMMARY_FILE).is_file():  # finished earlier: load its weights, do not recompute
                masks = load_imp_masks(output_dir, index, pruned)
                done = sum(int((~mask).sum()) for mask in masks.values())
                if done != pruned:
                    raise ValueError(f"{directory} holds masks pruning {done} weights, not the {pruned} its name "
                                     "says: a damaged IMP folder; remove it to recompute that round")
                load_model(model, str(directory / MODEL_FILE))
                report.append(IMPRound(**json.loads((directory / SUMMARY_FILE).read_text())))
            else:
                current = {name: params[name] for name in names}
                masks = magnitude_masks(current, pruned, survivors)
                rewind_(model, pretrained_state, masks)
                history = adversarial_finetune(
                    model, tokenizer, train, attack, schedule, masks=masks, checkpoint_dir=directory / "train",
                    checkpoint_every=checkpoint_every, progress=progress)
                save_file({name: mask.to(torch.uint8).contiguous() for name, mask in masks.items()},
                          str(directory / MASKS_FILE))
                save_model(model, str(directory / MODEL_FILE))
                entry = IMPRound(index, pruned, masks_sparsity(masks), *compare_with_one_shot(masks, start_weights),
                                 history.losses[-1], str(directory))
                (directory / SUMMARY_FILE).write_text(json.dumps(asdict(entry), indent=1))  # marks it done
                shutil.rmtree(directory / "train", ignore_errors=True)  # the round's weights are saved
                report.append(entry)
            survivors = masks
            if bar is not None:
                bar.update(1)
                last = report[-1]
                bar.set_postfix(sparsity=f"{last.sparsity:.3f}", cosine=f"{last.cosine_vs_one_shot:.3f}")
    finally:
        if bar is not None:
            bar.close()
    return report


__all__ = ["IMPRound", "compare_with_one_shot", "imp_schedule", "imp_schedule_to", "iterative_magnitude_prune",
           "load_imp_masks", "magnitude_masks", "rewind_", "round_directory", "unfinished_rounds"]
