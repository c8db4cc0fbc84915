"""No import cycle among robustprune's modules: imports run one way.

Static (ast over ``src/robustprune``, nothing imported). An edge ``a -> b`` is an import of robustprune module
``b`` anywhere in ``a``: at module level or inside a function (a deferred import still ties the two modules
together: either needs the other to work). ``from package import name`` counts as importing the submodule
``package.name`` when that is a module, else ``package``. Not counted: the implicit import of the parent
packages of an imported module (``import robustprune.a.b`` runs ``robustprune/a/__init__.py``): package
``__init__`` files re-export their modules by design. Every strongly connected group of two or more modules
is a cycle; the test names each with its edges and whether they are module-level or in a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "robustprune"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def _imports(node: ast.AST, module: str, found: dict[str, str], in_function: bool) -> None:
    for child in ast.iter_child_nodes(node):
        targets = []
        if isinstance(child, ast.Import):
            targets = [alias.name for alias in child.names]
        elif isinstance(child, ast.ImportFrom) and child.module:
            targets = [f"{child.module}.{alias.name}" if f"{child.module}.{alias.name}" in MODULES else child.module
                       for alias in child.names]
        for target in targets:
            if target in MODULES and target != module and found.get(target) != "module-level":
                found[target] = "function-level" if in_function else "module-level"
        _imports(child, module, found, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))


def import_edges() -> dict[str, dict[str, str]]:
    """module -> {imported robustprune module: "module-level" or "function-level"}."""
    edges: dict[str, dict[str, str]] = {}
    for name, path in MODULES.items():
        edges[name] = {}
        _imports(ast.parse(path.read_text(encoding="utf-8")), name, edges[name], False)
    return edges


def cycles(edges: dict[str, dict[str, str]]) -> list[list[str]]:
    """Strongly connected groups of two or more modules (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []
    for root in list(edges):
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


def test_the_cycle_finder_finds_a_deferred_cycle():
    edges = {"a": {"b": "module-level"}, "b": {"c": "module-level"}, "c": {"a": "function-level"}, "d": {"a": "x"}}
    assert cycles(edges) == [["a", "b", "c"]]
    assert cycles({"a": {"b": "module-level"}, "b": {}}) == []


def test_edges_resolve_submodules():
    edges = import_edges()
    assert "robustprune.sparse_ops.native" in edges["robustprune.sparse_ops.cpu_threads"]
    assert edges["robustprune.experiments.runner"]["robustprune.experiments.distributed"] == "function-level"


def test_no_import_cycle_among_robustprune_modules():
    edges = import_edges()
    found = cycles(edges)
    described = [", ".join(f"{a} -> {b} ({edges[a][b]})" for a in group for b in edges[a] if b in group)
                 for group in found]
    assert not found, "import cycles:\n" + "\n".join(described)
