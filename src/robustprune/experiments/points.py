"""The points of a sweep and the work they share, for both executors: the runner's local loop
(:mod:`robustprune.experiments.runner`) and the Ray tasks (:mod:`robustprune.experiments.distributed`).

A :class:`Point` is one (method, pattern, sparsity, seed) of a config (:func:`sweep_points`); the data of a
sweep is loaded once (:func:`load_sweep_data`); per seed the model every point starts from is prepared once
(:func:`prepare_seed`); :func:`compute_point` prunes, trains and evaluates one point with an
:class:`Evaluator` and returns its record and per-example payloads. Writing results is the runner's.
"""

from __future__ import annotations

import copy
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustprune.data.datasets import TextDataset
from robustprune.devices import runtime_info
from robustprune.eval.classifier import ClassificationResult, TextClassifier, evaluate_classifier
from robustprune.experiments.config import (
    ATTACK_SETTINGS,
    ONE_SHOT_METHODS,
    STRUCTURED_PATTERN,
    ExperimentConfig,
)
from robustprune.experiments.methods import PointPruner, hub_load, load_pretrained
from robustprune.experiments.results import point_key
from robustprune.targets import weight_sparsity

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Point:
    """One point of a sweep. ``method == "dense"`` is the unpruned model (sparsity 0)."""

    seed: int
    method: str
    pattern: str
    sparsity: float

    @property
    def key(self) -> str:
        return point_key(self.seed, self.method, self.pattern, self.sparsity)


def sweep_points(config: ExperimentConfig) -> list[Point]:
    """Every point of ``config`` in run order: per seed the dense point, then method x pattern x sparsity
    (``imp``, ``robust_ticket`` and ``random_ticket``: unstructured only; ``early_robust``: pattern ``heads+neurons`` at every
    sparsity; ``adversarial``: one dense point)."""
    from robustprune.sparse_ops.patterns import parse_pattern

    points = []
    for seed in config.seeds:
        points.append(Point(seed, "dense", "dense", 0.0))
        for method in config.pruning.methods:
            if method == "early_robust":
                points += [Point(seed, method, STRUCTURED_PATTERN, s) for s in config.pruning.sparsities]
                continue
            if method == "adversarial":
                points.append(Point(seed, method, "dense", 0.0))
                continue
            for pattern in config.pruning.patterns:
                if pattern == "unstructured":
                    points += [Point(seed, method, pattern, s) for s in config.pruning.sparsities]
                elif method in ONE_SHOT_METHODS:  # the trained methods prune unstructured only
                    nm = parse_pattern(pattern)
                    points.append(Point(seed, method, pattern, 1.0 - nm.n / nm.m))
    return points


@dataclass
class SweepData:
    """The run's data. ``attack_order`` is the seeded permutation of the evaluation set's indices whose
    prefixes are the attack subsets; ``robust_indices`` are the robust set's examples used (indices into
    its file order)."""

    train: TextDataset
    evaluation: TextDataset
    robust: TextDataset | None
    attack_order: list[int] = field(default_factory=list)
    robust_indices: list[int] | None = None

    def attack_indices(self, max_examples: int) -> list[int]:
        """The evaluation examples an attack with ``max_examples`` uses, ascending."""
        return sorted(self.attack_order[:max_examples])


def seeded_order(size: int, seed: int) -> list[int]:
    """A uniformly random permutation of ``range(size)`` from ``random.Random(seed)``: its prefixes are the
    run's subsets (a smaller subset is a prefix, so it is contained in every larger one)."""
    order = list(range(size))
    random.Random(seed).shuffle(order)
    return order


def load_sweep_data(config: ExperimentConfig) -> SweepData:
    """The training, evaluation and (optional) robust sets named by ``config.data``, capped as configured.

    Raises:
        FileNotFoundError / ValueError: a missing or malformed data file (raised before any training).
    """
    from robustprune.data.bundled import bundled_data_dir
    from robustprune.data.datasets import load_advglue_json, load_glue_task

    data = config.data
    directory = bundled_data_dir(data.data_dir)
    train = load_glue_task(directory, data.task, data.train_split)
    evaluation = load_glue_task(directory, data.task, data.eval_split)
    if data.max_train_examples is not None:
        train = train.subset(range(min(len(train), data.max_train_examples)))
    if data.max_eval_examples is not None:
        evaluation = evaluation.subset(range(min(len(evaluation), data.max_eval_examples)))
    robust = load_advglue_json(data.robust_set, data.task) if data.robust_set else None
    seed = config.evaluation.subset_seed
    robust_indices = None
    if robust is not None:
        robust_indices = sorted(seeded_order(len(robust), seed + 1)[:data.max_robust_examples])
        robust = robust.subset(robust_indices)
    return SweepData(train, evaluation, robust, seeded_order(len(evaluation), seed), robust_indices)


def _finetune(model: nn.Module, tokenizer: Any, config: ExperimentConfig, train: TextDataset, seed: int,
              masks: dict[str, torch.Tensor] | None, progress: bool) -> float:
    from robustprune.train.finetune import finetune_classifier

    start = time.perf_counter()
    finetune_classifier(model, tokenizer, train, config.finetune.schedule(seed, config.precision), masks=masks,
                        progress=progress)
    return time.perf_counter() - start


def _dense_checkpoint(out: Path, config: ExperimentConfig, seed: int) -> Path:
    return out / "checkpoints" / f"dense-{config.fingerprint()}-seed{seed}.safetensors"


def _finetuned_dense(config: ExperimentConfig, data: SweepData, out: Path, seed: int, progress: bool,
                     device: torch.device) -> tuple[nn.Module, Any, float]:
    """(fine-tuned dense model, tokenizer, seconds its fine-tuning took), from the run's checkpoint when
    an earlier run of the same config saved one (the seconds are kept in the checkpoint's metadata)."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file, save_file

    model, tokenizer = load_pretrained(config, data.train.num_labels, seed, device)
    path = _dense_checkpoint(out, config, seed)
    if path.is_file():
        try:
            with safe_open(str(path), framework="pt") as handle:
                seconds = float((handle.metadata() or {}).get("finetune_seconds", "nan"))
            model.load_state_dict(load_file(str(path), device=str(device)))
        except (SafetensorError, OSError, RuntimeError) as error:
            raise RuntimeError(f"the fine-tuned dense checkpoint {path} is unreadable or does not fit the model "
                               f"({error}); delete it and run again to fine-tune anew") from None
        logger.info("loaded the fine-tuned dense model of seed %d from %s", seed, path)
    else:
        seconds = _finetune(model, tokenizer, config, data.train, seed, None, progress)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(partial),
                  metadata={"finetune_seconds": repr(seconds)})
        os.replace(partial, path)  # atomic: a killed run never leaves a half-written checkpoint
    return model.eval(), tokenizer, seconds


@dataclass
class SeedSetup:
    """What every point of one seed starts from: the base model (fine-tuned dense under
    ``finetune_then_prune``, pre-trained under ``prune_then_finetune``), its tokenizer, and the seconds the
    dense fine-tuning took (0 without one)."""

    seed: int
    base: nn.Module
    tokenizer: Any
    dense_finetune_seconds: float = 0.0


def prepare_seed(config: ExperimentConfig, data: SweepData, out: Path, seed: int, progress: bool,
                 device: torch.device) -> SeedSetup:
    """The seed's base model on ``device`` (:func:`robustprune.devices.resolve_device` of the config's
    device, resolved once by the caller): fine-tuned once (and checkpointed) or loaded from the run's
    checkpoint."""
    if config.protocol == "finetune_then_prune":
        return SeedSetup(seed, *_finetuned_dense(config, data, out, seed, progress, device))
    return SeedSetup(seed, *load_pretrained(config, data.train.num_labels, seed, device))


@dataclass
class PointResult:
    """One computed point: its record's fields (without key, fingerprint and files) and its per-example
    payloads, which the driver writes (:func:`run_experiment`)."""

    point: Point
    record: dict[str, Any]
    predictions: dict[str, Any]
    examples: dict[str, Any]


def compute_point(config: ExperimentConfig, setup: SeedSetup, pruner: PointPruner, evaluator: Evaluator,
                  point: Point, progress: bool) -> PointResult:
    """Prune (and train) the model of ``point`` from the seed's base and evaluate it; writes nothing."""
    start = time.perf_counter()
    finetune_seconds = 0.0
    pruned = None
    if point.method == "dense":
        model = setup.base
        if config.protocol == "prune_then_finetune":
            model = copy.deepcopy(setup.base)
            finetune_seconds = _finetune(model, setup.tokenizer, config, pruner.train, point.seed, None, progress)
        measured = weight_sparsity(model)
    else:
        pruned = pruner.prune(point)
        model, measured, finetune_seconds = pruned.model, pruned.measured_sparsity, pruned.train_seconds
        if config.protocol == "prune_then_finetune":
            finetune_seconds = _finetune(model, setup.tokenizer, config, pruner.train, point.seed, pruned.masks,
                                         progress)
    prune_seconds = time.perf_counter() - start - finetune_seconds
    if point.method == "dense" and config.protocol == "finetune_then_prune":
        finetune_seconds = setup.dense_finetune_seconds  # fine-tuned before the points; recorded here
    evaluation, predictions, examples = evaluator.evaluate(model, setup.tokenizer)
    record = {
        "seed": point.seed, "method": point.method, "pattern": point.pattern,
        "sparsity": point.sparsity, "measured_sparsity": measured,
        "parameters": sum(p.numel() for p in model.parameters()),
        "protocol": config.protocol, "prune_seconds": prune_seconds,
        "finetune_seconds": finetune_seconds, **evaluation,
        "runtime": runtime_info(next(model.parameters()).device, config.precision),
    }
    if pruned is not None and point.method not in ONE_SHOT_METHODS:
        record |= {"method_settings": config.method_fingerprint(point.method), "resumed": pruned.resumed,
                   "details": pruned.details}
    return PointResult(point, record, predictions, examples)


class Evaluator:
    """The configured evaluations of one model; shifted sets are built once and shared by all points."""

    def __init__(self, config: ExperimentConfig, data: SweepData, progress: bool) -> None:
        self.config = config
        self.data = data
        self.progress = progress
        self._shifted: dict[str, TextDataset] = {}
        # bert-attack's masked LMs, loaded before any work so a bad one fails first
        self._recipe_options = {spec.recipe: masked_lm_options(spec.masked_lm, f"evaluation.attacks[{i}]")
                                for i, spec in enumerate(config.evaluation.attacks) if spec.masked_lm is not None}

    def shifted_sets(self) -> dict[str, TextDataset]:
        """Every configured shifted set, built now (to hand to evaluators in other processes)."""
        return {name: self.shifted(name) for name in self.config.evaluation.shifts}

    def adopt(self, shifted: dict[str, TextDataset]) -> None:
        """Use shifted sets built by another evaluator of the same run (:meth:`shifted_sets`)."""
        self._shifted.update(shifted)

    def shifted(self, name: str) -> TextDataset:
        from robustprune.eval import shifts

        if name not in self._shifted:
            augmenter = {"char_swap": shifts.CharSwap, "eda": shifts.EDA, "wordnet": shifts.WordNetShift,
                         "embedding_swap": shifts.EmbeddingShift}[name]()
            base = self.data.evaluation
            cap = self.config.evaluation.max_shift_examples
            if cap is not None:
                base = base.subset(range(min(cap, len(base))))
            self._shifted[name] = shifts.apply_shift(base, augmenter, seed=0, progress=False)
        return self._shifted[name]

    def evaluate(self, model: nn.Module, tokenizer: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """``(record fields, per-example predictions, per-example attack texts)`` of one model. Every
        accuracy comes with ``n``, its number of examples; the predictions hold, per evaluated set, the
        predicted and true labels (and which examples), per attack each example's status and queries."""
        from robustprune.eval.attacks import attack

        classifier = TextClassifier(model, tokenizer, max_length=128, precision=self.config.precision)
        record: dict[str, Any] = {}
        predictions: dict[str, Any] = {}
        examples: dict[str, Any] = {}
        timings: dict[str, float] = {}

        def evaluated(dataset: TextDataset, indices: list[int] | None = None
                      ) -> tuple[dict[str, Any], dict[str, Any], ClassificationResult]:
            """(record entry with ``n``, per-example predictions and labels, the full result)."""
            result = evaluate_classifier(classifier, dataset)
            per_example = {"predictions": result.predictions, "labels": list(dataset.labels)}
            if indices is not None:
                per_example = {"indices": indices, **per_example}
            return {**result.to_dict(), "n": len(dataset)}, per_example, result

        if self.config.evaluation.clean:
            start = time.perf_counter()
            record["clean"], predictions["clean"], _ = evaluated(self.data.evaluation)
            timings["clean"] = time.perf_counter() - start
        if self.data.robust is not None:
            start = time.perf_counter()
            robust, predictions["robust_set"], result = evaluated(self.data.robust, self.data.robust_indices)
            methods = self.data.robust.meta.get("method")
            if methods is not None:  # accuracy per attack method that made the adversarial examples
                per_method: dict[str, list[bool]] = {}
                for method, prediction, label in zip(methods, result.predictions, self.data.robust.labels):
                    per_method.setdefault(str(method), []).append(prediction == label)
                robust["accuracy_by_method"] = {m: 100.0 * sum(v) / len(v) for m, v in per_method.items()}
            robust["example_indices"] = self.data.robust_indices
            record["robust_set"] = robust
            timings["robust_set"] = time.perf_counter() - start
        for spec in self.config.evaluation.attacks:
            start = time.perf_counter()
            indices = self.data.attack_indices(spec.max_examples)
            settings = {key: getattr(spec, key) for key in ATTACK_SETTINGS if getattr(spec, key) is not None}
            report = attack(classifier, self.data.evaluation.subset(indices), spec.recipe,
                            query_budget=spec.query_budget, progress=self.progress, mode=spec.mode,
                            **self._recipe_options.get(spec.recipe, {}), **settings)
            summary = report.to_dict()
            summary["example_indices"] = indices  # into the evaluation set: the same at every point
            # per-example texts and outcomes go to the point's own files, the aggregates to the record
            examples[spec.recipe] = summary.pop("results")
            predictions.setdefault("attacks", {})[spec.recipe] = {
                "indices": indices, "status": [e["status"] for e in examples[spec.recipe]],
                "queries": [e["queries"] for e in examples[spec.recipe]]}
            record.setdefault("attacks", {})[spec.recipe] = summary
            timings[f"attack:{spec.recipe}"] = time.perf_counter() - start
        for name in self.config.evaluation.shifts:
            start = time.perf_counter()
            shifted, per_example, _ = evaluated(self.shifted(name))
            record.setdefault("shifts", {})[name] = shifted
            predictions.setdefault("shifts", {})[name] = per_example
            timings[f"shift:{name}"] = time.perf_counter() - start
        record["timings"] = timings
        return record, predictions, examples


def masked_lm_options(name: str, where: str) -> dict[str, Any]:
    """``{"mlm": model, "tokenizer": its tokenizer}`` for bert-attack, refusing a masked LM whose prediction
    head is not in the checkpoint (:func:`~robustprune.eval.attacks.recipes.load_masked_lm`)."""
    from robustprune.eval.attacks.recipes import load_masked_lm

    with hub_load(f"{where}.masked_lm", f"{name!r} as a masked LM"):
        mlm, tokenizer = load_masked_lm(name)
    return {"mlm": mlm, "tokenizer": tokenizer}


__all__ = ["Evaluator", "Point", "PointResult", "SeedSetup", "SweepData", "compute_point", "load_sweep_data",
           "masked_lm_options", "prepare_seed", "seeded_order", "sweep_points"]
