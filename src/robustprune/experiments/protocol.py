"""A paper's protocol, element by element, and how a config compares with it.

Each shipped experiment follows one paper; ``protocols/<name>.yaml`` lists that paper's protocol as
elements, each naming the config key that carries it, the paper's value and where the paper states it::

    paper: 'Zheng et al., "Robust Lottery Tickets for Pre-trained Language Models", ACL 2022'
    elements:
      - element: FreeLB ascent step size in the mask search
        key: pruning.robust_ticket.adversarial.adv_lr     # a path into the validated config
        paper: 0.03
        source: Table 7
        kind: protocol                                    # or size

A config that names the protocol (``paper: robust-tickets``) is compared with it when it is loaded:

- an element of kind ``protocol`` (a procedure or hyperparameter) must hold the paper's value, unless
  the config declares the difference in its ``deviations`` list (key and reason); an undeclared
  difference, or a declared one that is no difference, is an error;
- an element of kind ``size`` (the model, the number of training sentences, epochs, evaluated or
  attacked examples, seeds) may differ: that is how an experiment shrinks for a laptop, and the
  paper-size profile (:func:`paper_size`, ``robustprune run NAME --size paper``) sets every one of
  them to the paper's value.

:func:`protocol_table` renders the comparison as ``report/protocol.md``. Values are compared after
validation, so a key the config leaves out is compared at its default.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustprune.experiments.yaml12 import DuplicateKeyError, yaml12_loader

PROTOCOL_DIR = Path(__file__).resolve().parent / "protocols"
KINDS = ("protocol", "size")
_ELEMENT_KEYS = ("element", "key", "paper", "source", "kind")
_STEP = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)")


class ProtocolError(ValueError):
    """A protocol file that does not parse, or a config that differs from its paper without saying so."""


@dataclass(frozen=True)
class Element:
    """One element of a paper's protocol: its name, the config ``key`` that carries it, the paper's value
    and where the paper states it (``source``), and its ``kind`` (``protocol`` or ``size``)."""

    element: str
    key: str
    paper: Any
    source: str
    kind: str


@dataclass(frozen=True)
class Deviation:
    """A protocol element a config sets differently from its paper, on purpose: the key and why."""

    key: str
    reason: str


@dataclass(frozen=True)
class Row:
    """One element compared: the paper's value, this run's, and the declared reason when they differ."""

    element: Element
    this_run: Any
    differs: bool
    deviation: str | None


@dataclass(frozen=True)
class Protocol:
    """A paper's protocol (:func:`load_protocol`): its ``name`` (the shipped experiment's), the paper's
    citation and its elements in file order."""

    name: str
    paper: str
    elements: tuple[Element, ...]

    def element(self, key: str) -> Element | None:
        """The element carried by config key ``key``, if any."""
        return next((e for e in self.elements if e.key == key), None)

    def compare(self, config: Mapping[str, Any], deviations: Sequence[Deviation] = ()) -> list[Row]:
        """Every element against ``config`` (``ExperimentConfig.to_dict()``), with ``deviations`` checked.

        Raises:
            ProtocolError: a protocol element differs from the paper without a deviation naming it, a
                deviation names a key that is no element of kind protocol or one that does not differ, or
                an element's key is not in ``config``.
        """
        declared: dict[str, str] = {}
        for i, deviation in enumerate(deviations):
            element = self.element(deviation.key)
            if element is None or element.kind != "protocol":
                keys = ", ".join(e.key for e in self.elements if e.kind == "protocol")
                raise ProtocolError(f"config key 'deviations[{i}].key': {deviation.key!r} is not a protocol element "
                                    f"of {self.name}; expected one of: {keys}")
            if deviation.key in declared:
                raise ProtocolError(f"config key 'deviations[{i}].key': {deviation.key!r} is declared twice")
            declared[deviation.key] = deviation.reason
        rows = []
        undeclared = []
        for element in self.elements:
            value = lookup(config, element.key)
            differs = not same_value(value, element.paper)
            if element.kind == "protocol":
                if differs and element.key not in declared:
                    undeclared.append(f"{element.key} is {show(value)}, the paper's is {show(element.paper)} "
                                      f"({element.source})")
                if not differs and element.key in declared:
                    raise ProtocolError(f"config key 'deviations': {element.key!r} is declared a deviation but "
                                        f"equals the paper's value {show(element.paper)}; remove the entry")
            rows.append(Row(element, value, differs, declared.get(element.key) if differs else None))
        if undeclared:
            raise ProtocolError(f"the config differs from the protocol of {self.name} ({self.paper}) without "
                                f"declaring it: {'; '.join(undeclared)}. Use the paper's value, or add "
                                "{key: ..., reason: ...} to the config's 'deviations' list")
        return rows


def protocol_names() -> tuple[str, ...]:
    """The names of the shipped protocols (one per shipped experiment), sorted."""
    return tuple(sorted(path.stem for path in PROTOCOL_DIR.glob("*.yaml")))


@functools.cache
def load_protocol(name: str) -> Protocol:
    """The shipped protocol ``name`` (``protocols/<name>.yaml``).

    Raises:
        ProtocolError: no such protocol (the names are listed), or its file is malformed (the entry named).
    """
    path = PROTOCOL_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ProtocolError(f"no protocol named {name!r}; expected one of {list(protocol_names())}")
    return read_protocol(path)


def read_protocol(path: Path) -> Protocol:
    """The protocol in YAML file ``path``, named by the file's stem (see the module docstring for the format).

    Raises:
        ProtocolError: the file is malformed (the entry named).
    """
    import yaml

    where = f"protocol file {Path(path).name}"
    try:  # the configs' YAML 1.2 reading, so a value reads here as it does in a config
        raw = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=yaml12_loader())
    except (DuplicateKeyError, yaml.YAMLError) as error:
        raise ProtocolError(f"{where} does not parse: {error}") from None
    if not isinstance(raw, Mapping) or set(raw) != {"paper", "elements"}:
        raise ProtocolError(f"{where}: expected exactly the keys 'paper' and 'elements'")
    elements = []
    for i, entry in enumerate(raw["elements"] or ()):
        if not isinstance(entry, Mapping) or set(entry) != set(_ELEMENT_KEYS):
            got = sorted(entry) if isinstance(entry, Mapping) else entry
            raise ProtocolError(f"{where}: elements[{i}] needs exactly the keys {list(_ELEMENT_KEYS)}, got {got}")
        if entry["kind"] not in KINDS:
            raise ProtocolError(f"{where}: elements[{i}].kind: expected one of {list(KINDS)}, got {entry['kind']!r}")
        _steps(str(entry["key"]))  # a malformed path is the file's error, not a config's
        elements.append(Element(str(entry["element"]), str(entry["key"]), entry["paper"], str(entry["source"]),
                                entry["kind"]))
    keys = [e.key for e in elements]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ProtocolError(f"{where}: keys listed more than once: {repeated}")
    return Protocol(Path(path).stem, str(raw["paper"]), tuple(elements))


def _steps(key: str) -> list[str | int]:
    steps: list[str | int] = []
    for part in key.split("."):
        match = _STEP.fullmatch(part)
        if match is None:
            raise ProtocolError(f"protocol key {key!r} is not a dotted path of names and [index] items (a.b[0].c)")
        steps.append(match.group(1))
        steps += [int(index) for index in re.findall(r"\[(\d+)\]", match.group(2))]
    return steps


def lookup(config: Mapping[str, Any], key: str) -> Any:
    """The value at dotted path ``key`` (``evaluation.attacks[0].max_examples``) of a config mapping.

    Raises:
        ProtocolError: the path does not exist in ``config``.
    """
    value: Any = config
    for step in _steps(key):
        try:
            value = value[step]
        except (KeyError, IndexError, TypeError):
            raise ProtocolError(f"protocol key {key!r}: the config has no {step!r} there") from None
    return value


def assign(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set dotted path ``key`` of a raw config mapping to ``value``, creating mappings on the way (an
    attack written as a bare recipe name becomes ``{recipe: name}``).

    Raises:
        ProtocolError: the path runs through a list item that does not exist or a value that is no mapping.
    """
    steps = _steps(key)
    node: Any = raw
    for i, (step, following) in enumerate(itertools.pairwise(steps)):
        if isinstance(step, int):
            if not isinstance(node, list) or step >= len(node):
                raise ProtocolError(f"protocol key {key!r}: the config has no item {step} there")
            if isinstance(node[step], str):
                node[step] = {"recipe": node[step]}
            node = node[step]
            continue
        if not isinstance(node, dict):
            raise ProtocolError(f"protocol key {key!r}: {'.'.join(map(str, steps[:i]))} is no mapping")
        if node.get(step) is None:
            if isinstance(following, int):
                raise ProtocolError(f"protocol key {key!r}: the config has no list at {step!r}")
            node[step] = {}
        node = node[step]
    last = steps[-1]
    if isinstance(last, int) != isinstance(node, list) or not isinstance(node, (list, dict)):
        raise ProtocolError(f"protocol key {key!r} does not lead to a settable value")
    node[last] = copy.deepcopy(value)


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def same_value(a: Any, b: Any) -> bool:
    """Equal as config values: tuples and lists alike, ``3`` and ``3.0`` alike, bools never equal to numbers."""
    a, b = _plain(a), _plain(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    return a == b


def show(value: Any) -> str:
    """A value as it would be written in a config (null, true, lists in brackets)."""
    return json.dumps(_plain(value), separators=(", ", ": "))


def paper_size(raw: dict[str, Any], protocol: Protocol) -> dict[str, Any]:
    """A copy of raw config ``raw`` with every size element at the paper's value, named ``<name>-paper``:
    the paper-size profile. Protocol elements are untouched (the config already holds them)."""
    out = copy.deepcopy(raw)
    out["name"] = f"{out.get('name', 'experiment')}-paper"
    for element in protocol.elements:
        if element.kind == "size":
            assign(out, element.key, element.paper)
    return out


def protocol_table(protocol: Protocol, rows: Sequence[Row], run_name: str) -> str:
    """``report/protocol.md``: one row per element, ``element | paper | this run | kind``, the differences
    spelled out (a size that shrank, a declared deviation with its reason)."""
    sizes = sum(r.differs for r in rows if r.element.kind == "size")
    deviations = [r for r in rows if r.deviation is not None]
    intro = (f"Follows {protocol.paper}. One row per element of the paper's protocol (kind `protocol`: a "
             "procedure or hyperparameter, which must equal the paper's unless declared a deviation; kind "
             "`size`: model, data, epochs, evaluated examples or seeds, which may shrink).")
    lines = [f"# Protocol of {run_name}", "", intro, "",
             f"{sizes} size element(s) differ from the paper; {len(deviations)} declared protocol deviation(s).",
             "", "| element | paper | this run | kind |", "|---|---|---|---|"]
    for row in rows:
        e = row.element
        if row.deviation is not None:
            kind = f"protocol: **deviation**, {row.deviation}"
        elif e.kind == "size" and row.differs:
            kind = "size: differs"
        else:
            kind = e.kind
        cells = [e.element, f"{show(e.paper)}, {e.source}", show(row.this_run), kind]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def differences(rows: Sequence[Row]) -> list[str]:
    """One line per element whose value differs from the paper's (sizes and declared deviations)."""
    out = []
    for row in rows:
        if row.differs:
            why = f": {row.deviation}" if row.deviation else ""
            out.append(f"{row.element.kind} {row.element.key} = {show(row.this_run)} "
                       f"(paper {show(row.element.paper)}, {row.element.source}){why}")
    return out


def config_rows(config: Mapping[str, Any]) -> tuple[Protocol, list[Row]] | None:
    """The protocol a config mapping (``ExperimentConfig.to_dict()``, or a run's ``config.json``) names and
    its rows, or None when it names none.

    Raises:
        ProtocolError: as :meth:`Protocol.compare`.
    """
    if config.get("paper") is None:
        return None
    protocol = load_protocol(config["paper"])
    deviations = [Deviation(d["key"], d["reason"]) for d in config.get("deviations") or ()]
    return protocol, protocol.compare(config, deviations)


def write_protocol_report(config: Mapping[str, Any], path: Path) -> Path | None:
    """Write ``protocol.md`` (:func:`protocol_table`) for a config mapping that names a protocol, atomically;
    returns the path, or None (nothing written) when the config names none."""
    found = config_rows(config)
    if found is None:
        return None
    protocol, rows = found
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(protocol_table(protocol, rows, str(config.get("name", "experiment"))), encoding="utf-8")
    partial.replace(path)
    return path


def summary_lines(config: Mapping[str, Any]) -> list[str]:
    """What a run prints before it starts: the paper it follows and every difference from it."""
    found = config_rows(config)
    if found is None:
        return []
    protocol, rows = found
    changed = differences(rows)
    head = f"protocol: follows {protocol.paper}; {len(changed)} difference(s) from the paper"
    return [head + (":" if changed else "")] + [f"  {line}" for line in changed]


__all__ = ["KINDS", "PROTOCOL_DIR", "Deviation", "Element", "Protocol", "ProtocolError", "Row", "assign",
           "config_rows", "differences", "load_protocol", "lookup", "paper_size", "protocol_names", "protocol_table", "read_protocol", "same_value",
           "show", "summary_lines", "write_protocol_report"]
