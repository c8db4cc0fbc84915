"""The experiment configs that ship with the package, runnable by name, and their ``--quick`` sizes.

Each ``configs/<name>.yaml`` is an ordinary config whose header comments say what it is::

    # summary: one line for ``robustprune run --list``
    # follows: the paper whose main table it reproduces in shape
    # runtime: what a full run took on 2 cores

``robustprune run NAME`` runs one; ``--quick`` shrinks it (:func:`quick_version`) to a smoke run of the
same methods, patterns, evaluations and paper table in a minute or two.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustprune.experiments.config import ConfigError, ExperimentConfig, parse_config, read_config_file

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
_HEADER_KEYS = ("summary", "follows", "runtime")
# what --quick sets in the trained methods' blocks (their FreeLB / PGD blocks also drop to 2 steps)
_QUICK_BLOCKS: dict[str, dict[str, Any]] = {
    "imp": {}, "robust_ticket": {"mask_epochs": 1.0},
    "early_robust": {"search_epochs": 1.0, "check_every": 2, "patience": 1}, "adversarial": {"steps": 2}}


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
    the middle sparsity only, one seed, small calibration, 3 examples per attack and short method training,
    named ``<name>-quick``. Methods, patterns, evaluations and the paper table are kept."""
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
        block = {**(pruning.get(method) or {}), **settings}
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
    return quick


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


def load_named_config(name_or_path: str | Path, *, quick: bool = False) -> ExperimentConfig:
    """Read and validate a config file or shipped config (``quick``: its :func:`quick_version`).

    Raises:
        FileNotFoundError, ConfigError: as :func:`resolve_config` and
            :func:`robustprune.experiments.config.load_config`.
    """
    path = resolve_config(name_or_path)
    raw = read_config_file(path)
    if quick:
        if not isinstance(raw, dict):
            raise ConfigError(f"{str(path)!r}: expected a mapping at the top level, got {type(raw).__name__}")
        raw = quick_version(raw)
    return parse_config(raw)


__all__ = ["CONFIG_DIR", "ShippedConfig", "load_named_config", "quick_version", "resolve_config", "shipped_configs"]
