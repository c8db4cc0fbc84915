"""Layers only import downward: every ``robustprune`` import in the package (module level or inside a
function), in ``bench/`` and in ``tests/`` is checked against the rule the README's Layout states."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "robustprune"

# layer -> the robustprune layers it may import (besides itself)
ALLOWED = {
    "kernels": set(),
    "targets": set(),
    "data": set(),
    "_forks": set(),  # standard library only: noticing forks (robustprune._forks)
    "sparse_ops": {"kernels", "targets", "_forks"},
    "models": set(),
    "devices": set(),  # device names and precision, torch only (robustprune.devices)
    "train": {"data", "sparse_ops", "kernels", "targets", "models", "devices"},
    "eval": {"data", "sparse_ops", "kernels", "targets", "models", "devices"},
    "pruners": {"data", "train", "eval", "sparse_ops", "kernels", "targets", "models", "devices"},
    "ops": {"sparse_ops"},
    "experiments": {"data", "train", "eval", "pruners", "sparse_ops", "kernels", "targets", "models", "devices"},
    "cli": {"experiments", "package"},
    "__main__": {"cli"},  # python -m robustprune: the command, nothing else
    "package": {"data", "train", "eval", "pruners", "sparse_ops", "targets", "models", "ops", "_forks"},
}


def layer_of(module: str) -> str:
    """``robustprune.eval.attacks.recipes`` -> ``eval``; ``robustprune`` itself -> ``package``."""
    parts = module.split(".")
    return "package" if len(parts) == 1 else parts[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in ``path``, relative imports resolved, function-level included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{path}:{node.lineno}: use absolute imports (robustprune.x.y)")
            found.append((node.lineno, node.module or ""))
    return found


def test_every_layer_is_known():
    layers = {layer_of(module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert layers <= set(ALLOWED), f"add the new layer(s) {layers - set(ALLOWED)} to ALLOWED and the README"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_package_imports_only_downward(path):
    own = layer_of(module_name(path))
    for line, module in imported_modules(path):
        if module == "robustprune" or module.startswith("robustprune."):
            target = layer_of(module)
            assert target == own or target in ALLOWED[own], (
                f"{path.relative_to(REPO)}:{line}: layer {own!r} imports {module!r} (layer {target!r}); "
                f"{own!r} may import only {sorted(ALLOWED[own])}")


def test_bench_never_imports_tests():
    for path in sorted((REPO / "bench").rglob("*.py")):
        for line, module in imported_modules(path):
            assert not (module == "tests" or module.startswith("tests.")), f"{path.relative_to(REPO)}:{line}"


def test_import_robustprune_is_light():
    """``import robustprune`` loads neither transformers, the attack engine, the shifts nor Ray."""
    import subprocess
    import sys

    code = ("import sys, robustprune; heavy = [m for m in ('transformers', 'robustprune.eval.attacks', "
            "'robustprune.eval.shifts', 'ray', 'triton', 'scipy', 'matplotlib') if m in sys.modules]; "
            "print(','.join(heavy))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
