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
    CALIBRATED_METHODS,
    ONE_SHOT_METHODS,
    ExperimentConfig,
    split_method,
)
from robustprune.experiments.methods import PointPruner, PrunedPoint, hub_load, load_sweep_classifier
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


def sweep_methods(config: ExperimentConfig) -> list[str]:
    """The sweep's method names in run order: ``pruning.methods``, each calibrated method followed by its
    ``<method>@<label>`` variants, one per ``pruning.calibration.compare`` entry."""
    names = []
    for method in config.pruning.methods:
        names.append(method)
        if method in CALIBRATED_METHODS:
            names += [f"{method}@{label}" for label in config.pruning.calibration.compare]
    return names


def sweep_points(config: ExperimentConfig) -> list[Point]:
    """Every point of ``config`` in run order: per seed the dense point, then method x pattern x sparsity
    (``imp``, ``robust_ticket`` and ``random_ticket``: unstructured only; ``early_robust``: one point per ticket of
    :meth:`~robustprune.experiments.config.EarlyRobustConfig.tickets`, pattern ``heads=H+neurons=N`` or,
    without ratios, ``heads+neurons`` at every sparsity; ``adversarial``: one dense point per adversary of
    :meth:`~robustprune.experiments.config.PruningConfig.adversarial_baselines`; a calibrated method once per
    calibration source, :func:`sweep_methods`)."""
    from robustprune.sparse_ops.patterns import parse_pattern

    points = []
    for seed in config.seeds:
        points.append(Point(seed, "dense", "dense", 0.0))
        for method in sweep_methods(config):
            if method == "early_robust":
                points += [Point(seed, method, pattern, sparsity) for pattern, sparsity, _ in
                           config.pruning.early_robust.tickets(config.pruning.sparsities)]
                continue
            if method == "adversarial":
                points += [Point(seed, method, pattern, 0.0) for pattern, _ in
                           config.pruning.adversarial_baselines()]
                continue
            for pattern in config.pruning.patterns:
                if pattern == "unstructured":
                    points += [Point(seed, method, pattern, s) for s in config.pruning.sparsities]
                elif split_method(method)[0] in ONE_SHOT_METHODS:  # the trained methods: unstructured only
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
    from robustprune.data.bundled import robust_set_file
    from robustprune.data.datasets import load_advglue_json, load_task_split

    data = config.data
    train = load_task_split(data.data_dir, data.task, data.train_split)
    evaluation = load_task_split(data.data_dir, data.task, data.eval_split)
    if data.max_train_examples is not None:
        train = train.subset(range(min(len(train), data.max_train_examples)))
    if data.max_eval_examples is not None:
        evaluation = evaluation.subset(range(min(len(evaluation), data.max_eval_examples)))
    robust = load_advglue_json(robust_set_file(data.robust_set), data.task) if data.robust_set else None
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

    model, tokenizer = load_sweep_classifier(config, data.train.num_labels, seed, device)
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
    """What every point of one seed starts from: the base model (the fine-tuned dense model when a method of
    the sweep runs ``finetune_then_prune``, else the pre-trained model), its tokenizer, the seconds the dense
    fine-tuning took (0 without one) and, when the sweep mixes protocols (a mapping ``protocol``), the
    pre-trained model the ``prune_then_finetune`` methods prune (None otherwise: ``base`` is the start of
    every point)."""

    seed: int
    base: nn.Module
    tokenizer: Any
    dense_finetune_seconds: float = 0.0
    pretrained: nn.Module | None = None


def mixed_pretrained(config: ExperimentConfig, num_labels: int, seed: int, device: torch.device | str
                     ) -> nn.Module | None:
    """The pre-trained model (head seeded by ``seed``) that a sweep mixing protocols keeps beside its fine-tuned
    dense base; None for a sweep of one protocol."""
    if not config.mixed_protocols:
        return None
    return load_sweep_classifier(config, num_labels, seed, device)[0]


def prepare_seed(config: ExperimentConfig, data: SweepData, out: Path, seed: int, progress: bool,
                 device: torch.device) -> SeedSetup:
    """The seed's base model on ``device`` (:func:`robustprune.devices.resolve_device` of the config's
    device, resolved once by the caller): fine-tuned once (and checkpointed) or loaded from the run's
    checkpoint; with mixed protocols also the pre-trained model."""
    if config.protocol_of("dense") == "finetune_then_prune":
        return SeedSetup(seed, *_finetuned_dense(config, data, out, seed, progress, device),
                         pretrained=mixed_pretrained(config, data.train.num_labels, seed, device))
    return SeedSetup(seed, *load_sweep_classifier(config, data.train.num_labels, seed, device))


@dataclass
class PointModel:
    """A point's model as evaluated: the model, its measured sparsity, the seconds spent fine-tuning it (or
    training the method's ticket), and the pruner's output (None for the dense point)."""

    model: nn.Module
    measured_sparsity: float
    finetune_seconds: float
    pruned: PrunedPoint | None


def point_model(config: ExperimentConfig, setup: SeedSetup, pruner: PointPruner, point: Point,
                progress: bool) -> PointModel:
    """The model of ``point`` under its method's protocol (:meth:`ExperimentConfig.protocol_of`):
    ``finetune_then_prune``, pruned from the fine-tuned base (trained methods train their ticket from it);
    ``prune_then_finetune``, pruned from the pre-trained model, then fine-tuned with the pruner's masks held
    fixed by the shared training loop (:func:`robustprune.train.finetune.finetune_classifier`)."""
    protocol = config.protocol_of(point.method)
    if point.method == "dense":
        if protocol == "finetune_then_prune":  # fine-tuned before the points; its time is recorded here
            return PointModel(setup.base, weight_sparsity(setup.base), setup.dense_finetune_seconds, None)
        model = copy.deepcopy(setup.base)
        seconds = _finetune(model, setup.tokenizer, config, pruner.train, point.seed, None, progress)
        return PointModel(model, weight_sparsity(model), seconds, None)
    pruned = pruner.prune(point)
    seconds = pruned.train_seconds
    if protocol == "prune_then_finetune":
        seconds = _finetune(pruned.model, setup.tokenizer, config, pruner.train, point.seed, pruned.masks, progress)
    return PointModel(pruned.model, pruned.measured_sparsity, seconds, pruned)


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
    """Prune (and train) the model of ``point`` from the seed's base (:func:`point_model`) and evaluate it;
    writes nothing."""
    start = time.perf_counter()
    made = point_model(config, setup, pruner, point, progress)
    model, measured, finetune_seconds, pruned = made.model, made.measured_sparsity, made.finetune_seconds, made.pruned
    dense_before = point.method == "dense" and config.protocol_of("dense") == "finetune_then_prune"
    prune_seconds = time.perf_counter() - start - (0.0 if dense_before else finetune_seconds)
    evaluation, predictions, examples = evaluator.evaluate(model, setup.tokenizer)
    record = {
        "seed": point.seed, "method": point.method, "pattern": point.pattern,
        "sparsity": point.sparsity, "measured_sparsity": measured,
        "parameters": sum(p.numel() for p in model.parameters()),
        "parameters_without_embeddings": parameters_without_embeddings(model),
        "protocol": config.protocol_of(point.method), "prune_seconds": prune_seconds,
        "finetune_seconds": finetune_seconds, **evaluation,
        "runtime": runtime_info(next(model.parameters()).device, config.precision),
    }
    if pruned is not None and split_method(point.method)[0] not in ONE_SHOT_METHODS:
        record |= {"method_settings": config.method_fingerprint(point.method), "resumed": pruned.resumed,
                   "details": pruned.details}
    elif pruned is not None and pruned.details:  # a calibrated method: which texts it calibrated on
        record |= pruned.details
    return PointResult(point, record, predictions, examples)


def parameters_without_embeddings(model: nn.Module) -> int:
    """The model's parameters outside its embedding tables (every ``nn.Embedding``: word, position and token
    type), the size Xi et al. (2022) report; shared parameters counted once."""
    embedded = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters(recurse=False)}
    return sum(p.numel() for p in model.parameters() if id(p) not in embedded)


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
        return {shift.name: self.shifted(shift.name) for shift in self.config.evaluation.shifts}

    def adopt(self, shifted: dict[str, TextDataset]) -> None:
        """Use shifted sets built by another evaluator of the same run (:meth:`shifted_sets`)."""
        self._shifted.update(shifted)

    def shifted(self, name: str) -> TextDataset:
        from robustprune.eval import shifts

        if name not in self._shifted:
            from robustprune.devices import device_problem, resolve_device

            spec = next(shift for shift in self.config.evaluation.shifts if shift.name == name)
            # a model-based shift runs its model on the run's device where this process sees it (a Ray driver
            # without the workers' GPUs builds the shifted sets on its CPU)
            device = None if device_problem(self.config.device) else str(resolve_device(self.config.device))
            augmenter = spec.augmenter(device)
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
        for name in (shift.name for shift in self.config.evaluation.shifts):
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


__all__ = ["Evaluator", "Point", "PointModel", "PointResult", "SeedSetup", "SweepData", "compute_point",
           "load_sweep_data", "masked_lm_options", "mixed_pretrained", "parameters_without_embeddings",
           "point_model", "prepare_seed", "seeded_order", "sweep_methods", "sweep_points"]
