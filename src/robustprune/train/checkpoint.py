"""Checkpoint / resume for training loops: a run stopped at any step continues bit-for-bit later.

:func:`run_resumable` drives a loop of optimizer steps over deterministic per-epoch batches, writing a
checkpoint (the loop's stateful objects, the step, the history and torch's RNG state) every few steps and
at the end, atomically. Used by fine-tuning (plain or adversarial) and by the mask-learning pruners.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

Batch = Mapping[str, torch.Tensor]


@dataclass
class TrainingHistory:
    """Per-step training loss and learning rate of one run."""

    losses: list[float] = field(default_factory=list)
    learning_rates: list[float] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return len(self.losses)


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


__all__ = ["Batch", "ResumableRun", "TrainingHistory", "load_checkpoint", "run_resumable", "save_checkpoint"]
