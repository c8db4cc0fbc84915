"""Papers' protocols: paths into configs, the comparison at config load, deviations, the paper-size profile,
``--quick``'s declared deviations and ``protocol.md``."""

from __future__ import annotations

import json

import pytest
import yaml

from robustprune.experiments import catalog, protocol
from robustprune.experiments.catalog import QUICK_REASON, load_named_config, quick_version
from robustprune.experiments.config import ConfigError, parse_config
from robustprune.experiments.protocol import (
    Deviation,
    Element,
    Protocol,
    ProtocolError,
    assign,
    lookup,
    paper_size,
    protocol_table,
    read_protocol,
    same_value,
    summary_lines,
    write_protocol_report,
)

TOY = {
    "paper": "Toy et al., Toy Paper, 2099",
    "elements": [
        {"element": "fine-tuning lr", "key": "finetune.lr", "paper": 2.0e-5, "source": "Table 5", "kind": "protocol"},
        {"element": "sparsity grid", "key": "pruning.sparsities", "paper": [0.1, 0.5, 0.9], "source": "Section 4",
         "kind": "protocol"},
        {"element": "pattern", "key": "pruning.patterns", "paper": ["unstructured", "2:4"], "source": "Table 1",
         "kind": "protocol"},
        {"element": "model", "key": "model.name", "paper": "bert-base-uncased", "source": "Section 4", "kind": "size"},
        {"element": "training sentences", "key": "data.max_train_examples", "paper": None, "source": "Section 4",
         "kind": "size"},
        {"element": "attacked examples", "key": "evaluation.attacks[0].max_examples", "paper": 1000,
         "source": "Table 6", "kind": "size"},
    ],
}
CONFIG = {
    "name": "toy", "paper": "toy",
    "model": {"name": "minilm"},
    "data": {"data_dir": "embedded", "max_train_examples": 100},
    "finetune": {"lr": 2.0e-5},
    "pruning": {"methods": ["magnitude"], "patterns": ["unstructured", "2:4"], "sparsities": [0.1, 0.5, 0.9]},
    "evaluation": {"attacks": ["deepwordbug"]},
}


@pytest.fixture
def toy_protocol(tmp_path, monkeypatch):
    """A protocol named ``toy`` among the shipped ones (the directory is the module's setting)."""
    folder = tmp_path / "protocols"
    folder.mkdir()
    (folder / "toy.yaml").write_text(yaml.safe_dump(TOY), encoding="utf-8")
    monkeypatch.setattr(protocol, "PROTOCOL_DIR", folder)
    protocol.load_protocol.cache_clear()
    yield protocol.load_protocol("toy")
    protocol.load_protocol.cache_clear()


def test_paths_read_and_write_through_mappings_and_list_items():
    config = {"a": {"b": [{"c": 1}, "textfooler"]}, "x": 2}
    assert lookup(config, "a.b[0].c") == 1
    assert lookup(config, "x") == 2
    assign(config, "a.b[1].max_examples", 7)  # a bare recipe name becomes a mapping
    assert config["a"]["b"][1] == {"recipe": "textfooler", "max_examples": 7}
    assign(config, "new.deep.key", [1, 2])
    assert config["new"] == {"deep": {"key": [1, 2]}}
    for bad in ("a..b", "a.b[x]", "", "a.b[0]c", ".a"):
        with pytest.raises(ProtocolError, match="dotted path"):
            lookup(config, bad)
    with pytest.raises(ProtocolError, match="no 'missing'"):
        lookup(config, "a.missing")
    with pytest.raises(ProtocolError, match="no item 5"):
        assign(config, "a.b[5].c", 1)


def test_values_compare_as_a_config_writes_them():
    assert same_value((0.1, 0.5), [0.1, 0.5])
    assert same_value(3, 3.0)
    assert not same_value(True, 1) and not same_value(1, True)
    assert not same_value([0.1, 0.5], [0.1, 0.5, 0.9])
    assert not same_value(None, 0)
    assert same_value({"a": (1,)}, {"a": [1]})


def test_a_protocol_difference_must_be_declared(toy_protocol):
    values = parse_config({k: v for k, v in CONFIG.items() if k != "paper"}).to_dict()
    rows = toy_protocol.compare(values)
    assert [r.differs for r in rows] == [False, False, False, True, True, True]  # only sizes differ
    values["finetune"]["lr"] = 1.5e-4
    with pytest.raises(ProtocolError, match=r"finetune.lr is 0.00015, the paper's is 2e-05 \(Table 5\)"):
        toy_protocol.compare(values)
    rows = toy_protocol.compare(values, [Deviation("finetune.lr", "CPU time")])
    assert rows[0].differs and rows[0].deviation == "CPU time"
    with pytest.raises(ProtocolError, match="not a protocol element"):
        toy_protocol.compare(values, [Deviation("finetune.lr", "x"), Deviation("model.name", "sizes need none")])
    with pytest.raises(ProtocolError, match="declared twice"):
        toy_protocol.compare(values, [Deviation("finetune.lr", "x"), Deviation("finetune.lr", "y")])
    values["finetune"]["lr"] = 2e-5
    with pytest.raises(ProtocolError, match="equals the paper's value"):
        toy_protocol.compare(values, [Deviation("finetune.lr", "stale")])


def test_config_load_checks_the_protocol_it_names(toy_protocol):
    config = parse_config(CONFIG)
    assert config.paper == "toy"
    bad = {**CONFIG, "pruning": {**CONFIG["pruning"], "sparsities": [0.5]}}
    with pytest.raises(ConfigError, match=r"pruning.sparsities is \[0.5\], the paper's is \[0.1, 0.5, 0.9\]"):
        parse_config(bad)
    declared = parse_config({**bad, "deviations": [{"key": "pruning.sparsities", "reason": "one point"}]})
    assert declared.deviations == (Deviation("pruning.sparsities", "one point"),)
    # neither key changes what a point computes
    assert declared.fingerprint() == parse_config({k: v for k, v in bad.items() if k != "paper"}).fingerprint()
    with pytest.raises(ConfigError, match="config key 'paper': expected one of"):
        parse_config({**CONFIG, "paper": "no-such-paper"})
    with pytest.raises(ConfigError, match="only a config that names its paper"):
        parse_config({"deviations": [{"key": "finetune.lr", "reason": "x"}]})
    with pytest.raises(ConfigError, match=r"deviations\[0\].reason' is missing"):
        parse_config({**bad, "deviations": [{"key": "pruning.sparsities"}]})
    with pytest.raises(ConfigError, match=r"deviations\[0\].'why' is not known"):
        parse_config({**bad, "deviations": [{"key": "pruning.sparsities", "why": "x"}]})


def test_paper_size_sets_every_size_element_and_nothing_else(toy_protocol):
    raw = paper_size(CONFIG, toy_protocol)
    assert raw["name"] == "toy-paper" and CONFIG["name"] == "toy"  # a copy
    cpu, paper = parse_config(CONFIG).to_dict(), parse_config(raw).to_dict()
    assert paper["model"]["name"] == "bert-base-uncased"
    assert paper["data"]["max_train_examples"] is None
    assert paper["evaluation"]["attacks"][0] == {**cpu["evaluation"]["attacks"][0], "max_examples": 1000}
    for element in toy_protocol.elements:
        if element.kind == "protocol":
            assert same_value(lookup(paper, element.key), lookup(cpu, element.key))


def test_named_config_sizes(toy_protocol, tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    assert load_named_config(path, size="paper").model.name == "bert-base-uncased"
    assert load_named_config(path).model.name == "minilm"
    with pytest.raises(ConfigError, match="does not combine"):
        load_named_config(path, quick=True, size="paper")
    with pytest.raises(ConfigError, match="size: expected one of"):
        load_named_config(path, size="huge")
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump({k: v for k, v in CONFIG.items() if k != "paper"}), encoding="utf-8")
    with pytest.raises(ConfigError, match="names no paper protocol"):
        load_named_config(plain, size="paper")


def test_quick_declares_what_it_changes(toy_protocol):
    own = {**CONFIG, "finetune": {"lr": 1e-3}, "deviations": [{"key": "finetune.lr", "reason": "mine"}]}
    quick = quick_version(own)
    # --quick keeps the middle sparsity only: a protocol change it declares; the config's own one is kept
    assert quick["deviations"] == [{"key": "finetune.lr", "reason": "mine"},
                                   {"key": "pruning.sparsities", "reason": QUICK_REASON}]
    config = parse_config(quick)
    assert config.pruning.sparsities == (0.5,)
    lines = summary_lines(config.to_dict())
    assert lines[0].startswith("protocol: follows Toy et al., Toy Paper, 2099; 5 difference(s)")
    assert "  protocol pruning.sparsities = [0.5] (paper [0.1, 0.5, 0.9], Section 4): " + QUICK_REASON in lines


def test_protocol_table_and_report(toy_protocol, tmp_path):
    config = parse_config({**CONFIG, "finetune": {"lr": 1e-3},
                           "deviations": [{"key": "finetune.lr", "reason": "a | pipe"}]})
    rows = toy_protocol.compare(config.to_dict(), config.deviations)
    table = protocol_table(toy_protocol, rows, "toy")
    lines = table.splitlines()
    assert lines[0] == "# Protocol of toy"
    assert "3 size element(s) differ from the paper; 1 declared protocol deviation(s)." in lines
    body = lines[lines.index("| element | paper | this run | kind |") + 2:]
    assert body == [
        "| fine-tuning lr | 2e-05, Table 5 | 0.001 | protocol: **deviation**, a \\| pipe |",
        "| sparsity grid | [0.1, 0.5, 0.9], Section 4 | [0.1, 0.5, 0.9] | protocol |",
        '| pattern | ["unstructured", "2:4"], Table 1 | ["unstructured", "2:4"] | protocol |',
        '| model | "bert-base-uncased", Section 4 | "minilm" | size: differs |',
        "| training sentences | null, Section 4 | 100 | size: differs |",
        "| attacked examples | 1000, Table 6 | 50 | size: differs |",
    ]
    # a run's config.json (tuples become lists) gives the same file
    path = write_protocol_report(json.loads(json.dumps(config.to_dict())), tmp_path / "report" / "protocol.md")
    assert path.read_text(encoding="utf-8") == table
    assert write_protocol_report(parse_config({}).to_dict(), tmp_path / "none.md") is None
    assert not (tmp_path / "none.md").exists()


def test_protocol_files_are_checked(tmp_path):
    def write(content):
        path = tmp_path / "p.yaml"
        path.write_text(content, encoding="utf-8")
        return path

    assert read_protocol(write(yaml.safe_dump(TOY))) == Protocol("p", TOY["paper"], tuple(
        Element(**e) for e in TOY["elements"]))
    # YAML 1.2 as in configs: an unquoted 2:4 is a pattern, 1e-4 a number
    assert read_protocol(write("paper: P\nelements:\n- {element: e, key: pruning.patterns, paper: [2:4], "
                               "source: T1, kind: protocol}\n- {element: f, key: finetune.lr, paper: 1e-4, "
                               "source: T1, kind: protocol}\n")).elements[0].paper == ["2:4"]
    with pytest.raises(ProtocolError, match="exactly the keys 'paper' and 'elements'"):
        read_protocol(write("paper: P\n"))
    with pytest.raises(ProtocolError, match=r"elements\[0\] needs exactly the keys"):
        read_protocol(write("paper: P\nelements:\n- {element: e, key: a.b, paper: 1, kind: size}\n"))
    with pytest.raises(ProtocolError, match=r"elements\[0\].kind"):
        read_protocol(write("paper: P\nelements:\n- {element: e, key: a.b, paper: 1, source: s, kind: other}\n"))
    with pytest.raises(ProtocolError, match="dotted path"):
        read_protocol(write("paper: P\nelements:\n- {element: e, key: 'a..b', paper: 1, source: s, kind: size}\n"))
    with pytest.raises(ProtocolError, match="more than once"):
        read_protocol(write("paper: P\nelements:\n- {element: e, key: a, paper: 1, source: s, kind: size}\n"
                            "- {element: f, key: a, paper: 2, source: s, kind: size}\n"))


def test_sizes_are_the_catalogs():
    assert catalog.SIZES == ("small", "paper")
