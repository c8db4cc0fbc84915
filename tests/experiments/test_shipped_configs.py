"""The paper configs shipped with the package: listed, valid at full size, and run end to end at --quick size
into a report with the paper-shaped table."""

from __future__ import annotations

from pathlib import Path

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
                           "ES (paired test)", "IMP vs OMP mask cosine similarity", "cosine IMP vs OMP (pre-trained) %"],
    "es_robust": ["Clean% by sparsity and method", "acc% by sparsity and method", "ES_robust (paired test)",
                  "random"],
    "robust_tickets": ["Tickets at sparsity 0.50", "fine-tuned (dense)", "adversarial training (dense)", "IMP ticket",
                       "random ticket (layer-matched)", "robust ticket", "textfooler Aua%", "textfooler Suc%",
                       "textfooler #Query", "textbugger Aua%", "Every sparsity"],
    "early_robust": ["fine-tuned (dense)", "PGD (dense)", "FreeLB (dense)", "EarlyRobust (heads 0.166667, neurons 0.3)",
                     "parameters without embeddings (M)", "training time (s)", "speedup vs PGD", "textfooler Aua%",
                     "textfooler #Query", "textbugger Aua%"],
}


def test_the_papers_are_shipped_and_listed_one_line_each(capsys):
    assert set(SHIPPED) == {"essential-sparsity", "es-robust", "es-robust-calibration", "robust-tickets",
                            "early-robust"}
    assert main(["run", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(SHIPPED)
    for line, shipped in zip(lines, SHIPPED.values()):
        assert line.startswith(shipped.name) and shipped.summary in line
        assert shipped.summary and shipped.follows and shipped.runtime  # every header is filled in


def test_essential_sparsity_runs_the_papers_protocol_per_method():
    """Jaiswal et al.: OMP (and SparseGPT, and Wanda beside them) prune the pre-trained model and fine-tune with
    the mask fixed; IMP prunes the fine-tuned model, rewinding to the pre-trained weights; Table 1's recipe."""
    config = load_named_config("essential-sparsity")
    assert {m: config.protocol_of(m) for m in config.pruning.methods} == {
        "magnitude": "prune_then_finetune", "wanda": "prune_then_finetune", "sparsegpt": "prune_then_finetune",
        "imp": "finetune_then_prune"}
    assert config.protocol_of("dense") == "finetune_then_prune" and config.pruning.imp.rewind_step == 0
    ft = config.finetune
    assert (ft.lr, ft.batch_size, ft.warmup_ratio, ft.weight_decay) == (2e-5, 32, 0.0, 1e-8)
    assert config.evaluation.epsilon == 1.0 and config.pruning.scope == "global"
    assert config.pruning.sparsities == tuple(round(0.1 * i, 1) for i in range(1, 10))
    assert quick_version(read_config_file(SHIPPED["essential-sparsity"].path))["protocol"] == config.protocol


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


PROTOCOLS = Path(SHIPPED["es-robust"].path).parent.parent / "protocols"


@pytest.mark.parametrize("name", sorted(p.stem for p in PROTOCOLS.glob("*.yaml")))
def test_every_protocol_element_names_a_key_of_its_shipped_config(name):
    """Each element of ``protocols/<name>.yaml`` points into the validated config's ``to_dict()`` (defaults
    filled in) and cites where the paper states it."""
    import re

    import yaml

    protocol = yaml.safe_load((PROTOCOLS / f"{name}.yaml").read_text(encoding="utf-8"))
    assert name in SHIPPED and protocol["paper"] and protocol["elements"]
    values = load_named_config(name).to_dict()
    for element in protocol["elements"]:
        assert set(element) == {"element", "key", "paper", "source", "kind"}, element
        assert element["kind"] in ("protocol", "size") and element["source"], element
        value = values
        for part in re.findall(r"[^.\[\]]+|\[\d+\]", element["key"]):
            value = value[int(part[1:-1])] if part.startswith("[") else value[part]  # KeyError: not a key


def test_es_robust_follows_shin_et_al():
    """The values the paper states (Sections 2-6): OMP, Wanda and SparseGPT one-shot with no fine-tuning after
    pruning, sequential calibration, a fixed robust set as the robust metric (empty: no AdvGLUE++ ships), the
    paper's offline shifts, epsilon 1; and the random control, which the paper lacks."""
    config = load_named_config("es-robust")
    assert config.pruning.methods == ("magnitude", "wanda", "sparsegpt", "random")
    assert config.protocol == "finetune_then_prune" and not config.pruning.calibration.reuse_statistics
    assert config.data.robust_set is None and config.evaluation.attacks == ()
    assert [s.name for s in config.evaluation.shifts] == ["char_swap", "eda", "embedding_swap", "wordnet", "deletion"]
    assert config.evaluation.epsilon == 1.0 and "Shin" in SHIPPED["es-robust"].follows
    study = load_named_config("es-robust-calibration")
    assert study.data.robust_set == "sst2-adv-sample" and study.pruning.calibration.compare == {"advglue": "robust_set"}


@pytest.mark.slow
def test_es_robust_quick_scores_a_fixed_robust_set_as_an_arm_and_against_random_pruning(tmp_path, capsys):
    """The shipped experiment at --quick size with data.robust_set set to the shipped adversarial set: every
    point is scored on the same 24 adversarial examples, and the report shows the robust-set curve, its
    ES_robust and each method's robust-set accuracy against random pruning at the same sparsity and pattern."""
    import yaml

    raw = read_config_file(SHIPPED["es-robust"].path)
    raw["data"]["robust_set"] = "sst2-adv-sample"
    path = tmp_path / "es-robust-advglue.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    out = tmp_path / "run"
    assert main(["run", str(path), "--quick", "--out", str(out), "--no-progress"]) == 0
    records = ResultsFile(out / "results.jsonl").records()
    indices = {tuple(r["robust_set"]["example_indices"]) for r in records}
    assert len(indices) == 1 and len(next(iter(indices))) == 24  # the same 24 examples at every point
    assert all(r["robust_set"]["n"] == 24 and set(r["robust_set"]["accuracy_by_method"]) <= {
        "textfooler", "textbugger", "pwws", "deepwordbug"} for r in records)
    calibrated = [r for r in records if r["method"] in ("wanda", "sparsegpt")]
    assert calibrated and all(r["calibration"]["source"] == "train" for r in calibrated)
    analysis = (out / "report" / "analysis.md").read_text()
    assert "ES_robust (robust set acc)" in analysis
    assert "- robust set acc vs random pruning: 6 tests" in analysis  # 3 methods x (0.5, 2:4)
    assert "robust set acc% by sparsity and method" in (out / "report" / "paper.md").read_text()
