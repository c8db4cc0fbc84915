"""The paper configs shipped with the package: listed, valid at full size, and run end to end at --quick size
into a report with the paper-shaped table."""

from __future__ import annotations

import pytest

from robustprune.cli import main
from robustprune.experiments.catalog import CONFIG_DIR, load_named_config, quick_version, shipped_configs
from robustprune.experiments.config import read_config_file
from robustprune.experiments.results import ResultsFile
from robustprune.experiments.runner import sweep_points

SHIPPED = shipped_configs()
# per paper table, words its paper.md must show
TABLE_WORDS = {
    "essential_sparsity": ["Clean% by sparsity and method", "OMP", "IMP ticket", "Wanda", "SparseGPT", "2:4",
                           "ES (paired test)"],
    "es_robust": ["Clean% by sparsity and method", "textfooler Aua% by sparsity", "ES_robust (paired test)"],
    "robust_tickets": ["Tickets at sparsity 0.50", "fine-tuned (dense)", "adversarial training (dense)", "IMP ticket",
                       "random ticket (layer-matched)", "robust ticket", "textfooler Aua%", "textfooler Suc%",
                       "textfooler #Query", "textbugger Aua%", "Every sparsity"],
    "early_robust": ["adversarial training (dense)", "EarlyRobust", "parameters (M)", "training time (s)",
                     "time / adversarial training", "textfooler Aua%"],
}


def test_the_four_papers_are_shipped_and_listed_one_line_each(capsys):
    assert set(SHIPPED) == {"essential-sparsity", "es-robust", "robust-tickets", "early-robust"}
    assert main(["run", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(SHIPPED)
    for line, shipped in zip(lines, SHIPPED.values()):
        assert line.startswith(shipped.name) and shipped.summary in line
        assert shipped.summary and shipped.follows and shipped.runtime  # every header is filled in


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_full_size_configs_validate_and_name_their_table(name):
    config = load_named_config(name)
    assert config.name == name and config.paper_table in TABLE_WORDS
    assert config.data.data_dir == "sst2-sample" and config.model.name == "minilm"


def test_quick_keeps_the_experiment_and_shrinks_its_size():
    raw = read_config_file(SHIPPED["robust-tickets"].path)
    quick = quick_version(raw)
    assert quick["pruning"]["methods"] == raw["pruning"]["methods"] and quick["paper_table"] == raw["paper_table"]
    assert quick["data"]["max_train_examples"] == 48 and quick["pruning"]["sparsities"] == [0.5]
    assert quick["pruning"]["robust_ticket"]["adversarial"]["steps"] == 2 < raw["pruning"]["robust_ticket"][
        "adversarial"]["steps"]
    assert all(a["max_examples"] == 3 for a in quick["evaluation"]["attacks"])
    assert raw["pruning"]["sparsities"] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]  # the original is kept
    assert quick["pruning"]["robust_ticket"]["mask_epochs"] == 1.0


PROTOCOLS = sorted(CONFIG_DIR.parent.joinpath("protocols").glob("*.yaml"))


def _at(content, key):
    """The value at a dotted key with list indices (``evaluation.attacks[0].recipe``) of ``to_dict()``."""
    for part in key.split("."):
        name, *indices = part.replace("]", "").split("[")
        content = content[name]
        for index in indices:
            content = content[int(index)]
    return content


@pytest.mark.parametrize("path", PROTOCOLS, ids=[p.stem for p in PROTOCOLS])
def test_protocol_files_name_keys_of_their_shipped_config(path):
    protocol = read_config_file(path)
    assert path.stem in SHIPPED and protocol["paper"] and protocol["elements"]
    content = load_named_config(path.stem).to_dict()
    keys = [element["key"] for element in protocol["elements"]]
    assert len(set(keys)) == len(keys)
    for element in protocol["elements"]:
        assert set(element) == {"element", "key", "paper", "source", "kind"}, element
        assert element["kind"] in ("protocol", "size") and element["source"], element
        _at(content, element["key"])  # resolves (KeyError / IndexError otherwise)


def test_robust_tickets_ships_the_papers_protocol_values():
    """Every protocol element of the robust-tickets protocol holds the paper's value in the shipped config
    (only sizes differ on a CPU)."""
    protocol = read_config_file(CONFIG_DIR.parent / "protocols" / "robust-tickets.yaml")
    content = load_named_config("robust-tickets").to_dict()
    for element in protocol["elements"]:
        value = _at(content, element["key"])
        if element["kind"] == "protocol":
            assert (list(value) if isinstance(value, tuple) else value) == element["paper"], element


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_quick_run_end_to_end_writes_the_paper_table(name, tmp_path, capsys):
    out = tmp_path / name
    assert main(["run", name, "--quick", "--out", str(out), "--no-progress"]) == 0
    config = load_named_config(name, quick=True)
    records = ResultsFile(out / "results.jsonl").records()
    assert [r["key"] for r in records] == [p.key for p in sweep_points(config)]
    paper = (out / "report" / "paper.md").read_text()
    for word in TABLE_WORDS[config.paper_table]:
        assert word in paper, (word, paper)
    for spec in config.evaluation.attacks:  # a paper's attack settings reached the attack
        parameters = next(r for r in records if r["method"] == "dense")["attacks"][spec.recipe]["parameters"]
        if spec.similarity_threshold is not None:
            assert parameters["similarity_threshold"] == spec.similarity_threshold
    assert paper in capsys.readouterr().out  # printed with the other tables
