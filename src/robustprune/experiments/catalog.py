"""The experiment configs that ship with the package, runnable by name, and their ``--quick`` sizes.

Each ``configs/<name>.yaml`` is an ordinary config whose header comments say what it is::

    # summary: one line for ``robustprune run --list``
    # follows: the paper whose main table it reproduces in shape
    # runtime: what a full run took on 2 cores

``robustprune run NAME`` runs one at its default size, small enough for a laptop (size ``small``);
``--size paper`` runs it at the paper's size (:func:`robustprune.experiments.protocol.paper_size`: the
paper's model, full data, epochs and evaluated examples; the protocol is the same); ``--quick`` shrinks it
(:func:`quick_version`) to a smoke run of the same methods, patterns, evaluations and paper table in a
minute or two, declaring every protocol value it changes as a deviation.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustprune.experiments.config import ConfigError, ExperimentConfig, parse_config, read_config_file
from robustprune.experiments.protocol import ProtocolError, load_protocol, lookup, paper_size, same_value

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
SIZES = ("small", "paper")  # the config as written, sized for a laptop; the paper's sizes (its protocol's size elements)
QUICK_REASON = "--quick: a smoke run at toy size, not the paper's protocol"
_HEADER_KEYS = ("summary", "follows", "runtime")
# what --quick sets in the trained methods' blocks (their FreeLB / PGD blocks also drop to 2 steps)
_QUICK_BLOCKS: dict[str, dict[str, Any]] = {
    "imp": {}, "robust_ticket": {"mask_epochs": 1.0},
    "early_robust": {"search_epochs": 1.0, "patience": 1}, "adversarial": {"steps": 2}}


@dataclass(frozen=True)
class ShippedConfig:
    """A config shipped with the package: its name (the file's stem), file and header comments."""

    name: str
    path: Path
    summary: str
    follows: str
    runtime: str


def _header(path: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        key, _, value = line.lstrip("# ").partition(":")
        if key in _HEADER_KEYS:
            found[key] = value.strip()
    return found


def shipped_configs() -> dict[str, ShippedConfig]:
    """Every shipped config by name, in name order."""
    out = {}
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        header = _header(path)
        out[path.stem] = ShippedConfig(path.stem, path, *(header.get(key, "") for key in _HEADER_KEYS))
    return out


def quick_version(raw: dict[str, Any]) -> dict[str, Any]:
    """A much smaller run of the same experiment: 48 training and 24 evaluation examples, short sequences,
    the middle sparsity (and EarlyRobust ticket) only, one seed, small calibration, 3 examples per attack and
    short method training, named ``<name>-quick``. Methods, patterns, evaluations and the paper table are
    kept."""
    quick = copy.deepcopy(raw)
    quick["name"] = f"{quick.get('name', 'experiment')}-quick"

    def capped(block: dict[str, Any], key: str, cap: int) -> None:
        block[key] = cap if block.get(key) is None else min(block[key], cap)

    data = quick.setdefault("data", {})
    for key, cap in (("max_train_examples", 48), ("max_eval_examples", 24), ("max_robust_examples", 24)):
        capped(data, key, cap)
    finetune = quick.setdefault("finetune", {})
    finetune.update({"epochs": 1.0, "batch_size": 8, "max_length": 32, "checkpoint_every": 2})
    pruning = quick.setdefault("pruning", {})
    if pruning.get("sparsities"):
        ordered = sorted(pruning["sparsities"])
        pruning["sparsities"] = [ordered[(len(ordered) - 1) // 2]]
    pruning.setdefault("calibration", {}).update({"samples": 8, "seq_len": 32, "batch_size": 8})
    methods = pruning.get("methods") or []
    for method, settings in _QUICK_BLOCKS.items():
        if method not in methods and not (method == "robust_ticket" and "random_ticket" in methods):
            continue  # (random_ticket learns robust_ticket's masks: shorten them too)
        if method == "adversarial" and isinstance(pruning.get(method), list):  # one block per adversary
            pruning[method] = [{**b, **settings} if isinstance(b, dict) else b for b in pruning[method]]
            continue
        block = {**(pruning.get(method) or {}), **settings}
        if method == "early_robust":
            if block.get("check_every_epochs") is None:  # a check every 2 of the 6 steps (else every 0.05 epoch)
                block["check_every"] = 2
            if isinstance(block.get("ratios"), list) and block["ratios"]:  # the middle ticket, as for sparsities
                block["ratios"] = [block["ratios"][(len(block["ratios"]) - 1) // 2]]
        for key in ("adversarial", "finetune_adversarial"):
            if isinstance(block.get(key), dict):
                block[key] = {**block[key], "steps": 2}
            elif key == "adversarial" and key not in block and method in ("robust_ticket", "early_robust"):
                block[key] = {"steps": 2}  # their default is FreeLB: keep it, shorter
        pruning[method] = block
    evaluation = quick.setdefault("evaluation", {})
    evaluation["attacks"] = [{**({"recipe": a} if isinstance(a, str) else a), "max_examples": 3}
                             for a in evaluation.get("attacks") or []]
    if evaluation.get("shifts"):
        capped(evaluation, "max_shift_examples", 24)
    quick["seeds"] = list(quick.get("seeds") or [0])[:1]
    if quick.get("paper") is not None:
        try:
            quick["deviations"] = _quick_deviations(quick)
        except ProtocolError as error:
            raise ConfigError(str(error)) from None
    return quick


def _quick_deviations(quick: dict[str, Any]) -> list[dict[str, str]]:
    """The config's own deviations that still differ, plus one (``QUICK_REASON``) for every other protocol
    element the quick version moved away from the paper."""
    protocol = load_protocol(quick["paper"])
    values = parse_config({k: v for k, v in quick.items() if k not in ("paper", "deviations")}).to_dict()
    own = {d.get("key"): d for d in quick.get("deviations") or [] if isinstance(d, dict)}
    out = []
    for element in protocol.elements:
        if element.kind != "protocol" or same_value(lookup(values, element.key), element.paper):
            continue
        out.append(own.get(element.key) or {"key": element.key, "reason": QUICK_REASON})
    return out


def resolve_config(name_or_path: str | Path) -> Path:
    """The file of a shipped config name, or ``name_or_path`` itself when it is a file.

    Raises:
        FileNotFoundError: neither a file nor a shipped name (the message lists the names).
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = shipped_configs()
    if str(name_or_path) in shipped:
        return shipped[str(name_or_path)].path
    raise FileNotFoundError(f"{str(name_or_path)!r} is neither a config file nor a shipped config; shipped: "
                            f"{', '.join(shipped)} (robustprune run --list)")


def load_named_config(name_or_path: str | Path, *, quick: bool = False, size: str = "small") -> ExperimentConfig:
    """Read and validate a config file or shipped config, at ``size`` (``small``: as written; ``paper``: every
    size element of the protocol it names at the paper's value) or as its :func:`quick_version`.

    Raises:
        FileNotFoundError, ConfigError: as :func:`resolve_config` and
            :func:`robustprune.experiments.config.load_config`; also ``size`` unknown, ``paper`` for a config
            that names no protocol, or ``quick`` with size ``paper``.
    """
    if size not in SIZES:
        raise ConfigError(f"size: expected one of {list(SIZES)}, got {size!r}")
    if quick and size != "small":
        raise ConfigError("--quick is a smoke run at toy size; it does not combine with --size paper")
    path = resolve_config(name_or_path)
    raw = read_config_file(path)
    if (quick or size != "small") and not isinstance(raw, dict):
        raise ConfigError(f"{str(path)!r}: expected a mapping at the top level, got {type(raw).__name__}")
    if size == "paper":
        if raw.get("paper") is None:
            raise ConfigError(f"--size paper: {str(path)!r} names no paper protocol (config key 'paper'), so it has "
                              "no paper size")
        try:
            raw = paper_size(raw, load_protocol(_string_key(raw["paper"])))
        except ProtocolError as error:
            raise ConfigError(str(error)) from None
    if quick:
        raw = quick_version(raw)
    return parse_config(raw)


def _string_key(value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"config key 'paper': expected a protocol name, got {value!r}")
    return value


__all__ = ["CONFIG_DIR", "QUICK_REASON", "SIZES", "ShippedConfig", "load_named_config", "quick_version", "resolve_config", "shipped_configs"]
