"""A sweep's device and precision: config keys, the fingerprint, the CLI flags, records that state them, and
nothing above the library assuming the CPU."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from robustprune.cli import build_parser, main
from robustprune.experiments.config import ConfigError, parse_config
from robustprune.experiments.demo import demo_config_dict
from robustprune.experiments.results import ResultsFile
from robustprune.experiments.runner import run_experiment

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "robustprune"


def test_device_and_precision_keys_default_and_validate():
    config = parse_config({})
    assert (config.device, config.precision, config.resources.gpus_per_point) == ("auto", "fp32", 1.0)
    config = parse_config({"device": "cuda:1", "precision": "bf16", "resources": {"gpus_per_point": 0.25}})
    assert (config.device, config.precision, config.resources.gpus_per_point) == ("cuda:1", "bf16", 0.25)
    for raw, message in (({"device": "gpu"}, r"^config key 'device': expected 'auto', 'cpu', 'cuda' or 'cuda:N'"),
                         ({"device": 1}, r"^config key 'device': expected"),
                         ({"precision": "fp8"}, r"^config key 'precision': expected one of \['fp32', 'bf16', 'fp16'\]"),
                         ({"resources": {"gpus_per_point": 0}}, r"^config key 'resources.gpus_per_point': expected"),
                         ({"resources": {"gpus": 1}}, r"^config key resources.'gpus' is not known")):
        with pytest.raises(ConfigError, match=message):
            parse_config(raw)


def test_precision_is_in_the_fingerprint_and_the_device_is_not():
    base = parse_config(demo_config_dict())
    same = [dataclasses.replace(base, device=d) for d in ("cpu", "cuda", "cuda:3")]
    same.append(dataclasses.replace(base, resources=dataclasses.replace(base.resources, gpus_per_point=0.5)))
    assert {c.fingerprint() for c in same} == {base.fingerprint()}
    assert len({dataclasses.replace(base, precision=p).fingerprint() for p in ("fp32", "bf16", "fp16")}) == 3
    # fp32 leaves the fingerprint as it was before the key existed: earlier results still resume
    assert parse_config({}).fingerprint() == "0bf33db42403e98d"


def test_the_flags_override_the_config_and_bad_values_name_the_flag(capsys):
    from robustprune.cli import _override_device

    args = build_parser().parse_args(["run", "demo", "--device", "cuda:0", "--precision", "bf16"])
    config = _override_device(parse_config({"device": "cpu"}), args)
    assert (config.device, config.precision) == ("cuda:0", "bf16")
    args = build_parser().parse_args(["demo"])
    assert _override_device(parse_config({"device": "cpu"}), args).device == "cpu"  # no flag: the config's
    for argv, flag in ((["run", "x", "--device", "gpu"], "--device"), (["demo", "--precision", "half"], "--precision")):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2 and f"argument {flag}:" in capsys.readouterr().err


# The Ray tasks' device on a cluster without GPUs; a pruned checkpoint gathered on the host to be written.
ALLOWED_CPU = {("distributed.py", "task_resources"), ("prune_model.py", "prune_pretrained")}


def _cpu_assumptions(path: Path) -> list[str]:
    """Where ``path`` names the CPU in code (docstrings and messages aside): a ``"cpu"`` string, ``.cpu()``,
    a ``map_location`` or a ``torch.device(...)`` of its own."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]

    def owner(line: int) -> str:  # the innermost function holding the line
        holding = [f for f in functions if f.lineno <= line <= f.end_lineno]
        return max(holding, key=lambda f: f.lineno).name if holding else "<module>"

    found = []
    for node in ast.walk(tree):
        what = None
        if isinstance(node, ast.Constant) and node.value == "cpu":
            what = "'cpu'"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "cpu":
            what = ".cpu()"
        elif isinstance(node, ast.keyword) and node.arg == "map_location":
            what = "map_location"
        elif isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.device":
            what = "torch.device(...)"
        if what is None:
            continue
        line = node.value.lineno if isinstance(node, ast.keyword) else node.lineno
        if what != "'cpu'" or (path.name, owner(line)) not in ALLOWED_CPU:
            found.append(f"{path.name}:{line} {owner(line)}: {what}")
    return sorted(set(found))


def test_nothing_in_experiments_or_the_cli_assumes_the_cpu():
    paths = sorted((PACKAGE / "experiments").glob("*.py")) + [PACKAGE / "cli.py"]
    assert len(paths) > 10
    assert [hit for path in paths for hit in _cpu_assumptions(path)] == []


def test_the_scan_finds_what_it_looks_for(tmp_path):
    """The scan above is not vacuous: each pattern it refuses is found."""
    sample = tmp_path / "sample.py"
    sample.write_text('import torch\ndef f(x, load):\n    y = x.cpu()\n    z = torch.device("cpu")\n'
                      '    return load("p", map_location=None)\n', encoding="utf-8")
    hits = _cpu_assumptions(sample)
    assert [h.split(": ", 1)[1] for h in hits] == [".cpu()", "'cpu'", "torch.device(...)", "map_location"]


def tiny_sweep(precision: str) -> dict:
    raw = demo_config_dict()
    raw.update(name=f"tiny-{precision}", precision=precision, device="cpu")
    raw["data"].update({"max_train_examples": 32, "max_eval_examples": 16})
    raw["finetune"].update({"epochs": 1.0, "max_length": 32, "batch_size": 16})
    raw["pruning"] = {"methods": ["wanda", "sparsegpt", "adversarial"], "sparsities": [0.5],
                      "adversarial": {"steps": 2}, "calibration": {"samples": 8, "seq_len": 32}}
    raw["evaluation"] = {"clean": True, "attacks": [{"recipe": "deepwordbug", "max_examples": 2}]}
    return raw


@pytest.mark.slow
def test_a_bf16_sweep_on_the_cpu_records_its_device_and_precision(tmp_path):
    import torch

    raw = tiny_sweep("bf16")
    summary = run_experiment(parse_config(raw), tmp_path / "bf16", progress=False)
    records = ResultsFile(summary.results_path).records()
    assert [r["method"] for r in records] == ["dense", "wanda", "sparsegpt", "adversarial"]
    for record in records:
        runtime = record["runtime"]
        assert runtime["device"] == "cpu" and runtime["precision"] == "bf16"
        assert runtime["torch"] == torch.__version__ and runtime["cuda"] == torch.version.cuda
        assert runtime["triton"] and runtime["device_name"]
        assert 0 <= record["clean"]["accuracy"] <= 100
        assert record["fingerprint"] == parse_config(raw).fingerprint() != parse_config(tiny_sweep("fp32")).fingerprint()
    from robustprune.experiments.report import build_report

    report = build_report(summary.results_path, tmp_path / "report")
    assert "bf16" in report.results_md.read_text(encoding="utf-8")
