"""Every shipped experiment follows its paper's protocol: it names it, loads against it, and its paper-size
profile differs from the CPU size only in size elements; the committed protocol tables are current."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from robustprune.experiments.catalog import load_named_config, shipped_configs
from robustprune.experiments.protocol import (
    config_rows,
    load_protocol,
    lookup,
    protocol_names,
    protocol_table,
    same_value,
)

SHIPPED = sorted(shipped_configs())
DOCS = Path(__file__).resolve().parents[2] / "docs" / "protocols"


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted paths (``a.b[0].c``) to the leaves of a config mapping; lists of mappings are walked item by item."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else key))
        return out
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, dict) for v in value):
        out = {}
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def test_every_shipped_experiment_has_its_protocol():
    assert set(protocol_names()) >= set(SHIPPED)
    for name in SHIPPED:
        assert load_named_config(name).paper == name


@pytest.mark.parametrize("name", SHIPPED)
def test_the_paper_profile_changes_sizes_only(name):
    protocol = load_protocol(name)
    cpu = load_named_config(name).to_dict()
    paper = load_named_config(name, size="paper").to_dict()
    sizes = {e.key for e in protocol.elements if e.kind == "size"}
    changed = {key for key, value in flatten(paper).items() if not same_value(value, flatten(cpu).get(key))}
    assert changed - {"name"} <= sizes, f"{name}: the paper profile changes protocol keys {sorted(changed - sizes)}"
    for element in protocol.elements:
        if element.kind == "size":
            assert same_value(lookup(paper, element.key), element.paper), element.key


@pytest.mark.parametrize("name", SHIPPED)
def test_the_quick_version_declares_every_protocol_change(name):
    config = load_named_config(name, quick=True)
    protocol, rows = config_rows(config.to_dict())
    assert protocol.name == name
    assert all(r.deviation is not None for r in rows if r.differs and r.element.kind == "protocol")


@pytest.mark.parametrize("name", SHIPPED)
def test_the_committed_protocol_table_is_current(name):
    """docs/protocols/NAME.md is what ``robustprune run NAME --protocol`` prints (the README links to it)."""
    config = load_named_config(name)
    expected = protocol_table(*config_rows(config.to_dict()), config.name)
    assert (DOCS / f"{name}.md").read_text(encoding="utf-8") == expected, \
        f"regenerate: robustprune run {name} --protocol > docs/protocols/{name}.md"
