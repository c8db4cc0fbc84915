"""Config validation: every error names its key, before any work starts."""

from __future__ import annotations

import json

import pytest

from robustprune.experiments.config import ConfigError, load_config, parse_config
from robustprune.experiments.demo import demo_config_dict
from robustprune.experiments.runner import sweep_points


def test_defaults_and_points():
    config = parse_config({"pruning": {"methods": ["magnitude", "wanda"], "patterns": ["unstructured", "2:4"],
                                       "sparsities": [0.7, 0.3]}, "seeds": [0, 1]})
    assert config.pruning.sparsities == (0.3, 0.7)  # sorted
    points = sweep_points(config)
    assert len(points) == 2 * (1 + 2 * (2 + 1))
    assert [(p.method, p.sparsity) for p in points[:4]] == [("dense", 0.0), ("magnitude", 0.3),
                                                            ("magnitude", 0.7), ("magnitude", 0.5)]
    assert len({p.key for p in points}) == len(points)
    assert config.fingerprint() == parse_config(config.to_dict()).fingerprint()
    renamed = parse_config({**config.to_dict(), "name": "other"})
    assert renamed.fingerprint() == config.fingerprint()  # the name does not change results
    changed = parse_config({**config.to_dict(), "seeds": [0]})
    assert changed.fingerprint() != config.fingerprint()


@pytest.mark.parametrize("raw, message", [
    ({"pruning": {"sparsities": [0.5, 1.0]}}, r"'pruning.sparsities\[1\]': expected a value in \(0, 1\)"),
    ({"pruning": {"sparsities": [0.5, "x"]}}, r"'pruning.sparsities\[1\]': expected a number"),
    ({"pruning": {"methods": ["magnitude", "obs"]}}, r"'pruning.methods\[1\]': expected one of"),
    ({"pruning": {"patterns": ["3:4:5"]}}, r"'pruning.patterns\[0\]'"),
    ({"pruning": {"patterns": ["2:3"]}}, r"'pruning.patterns\[0\]'"),
    ({"pruning": {"sparsity": [0.5]}}, r"'pruning.'sparsity'' is not known|pruning.'sparsity'"),
    ({"pruning": {"calibration": {"samples": 0}}}, r"'pruning.calibration.samples'"),
    ({"evaluation": {"attacks": [{"recipe": "textfooler", "max_examples": -1}]}},
     r"'evaluation.attacks\[0\].max_examples'"),
    ({"evaluation": {"attacks": [{"max_examples": 5}]}}, r"'evaluation.attacks\[0\].recipe' is missing"),
    ({"evaluation": {"attacks": ["hotflip"]}}, r"'evaluation.attacks\[0\].recipe': expected one of"),
    ({"evaluation": {"shifts": ["noise"]}}, r"'evaluation.shifts\[0\]'"),
    ({"evaluation": {"clean": False}}, r"'evaluation': nothing to evaluate"),
    ({"protocol": "prune_during_training"}, r"'protocol': expected one of"),
    ({"data": {"task": "stsb"}}, r"'data.task'"),
    ({"data": {"data_dir": "embedded", "task": "mnli"}}, r"'data.task': the embedded data"),
    ({"seeds": []}, r"'seeds': expected a non-empty list"),
    ({"seeds": [0, 0]}, r"'seeds': repeated"),
    ({"finetune": {"lr": 0}}, r"'finetune.lr'"),
    ({"modle": {}}, r"'modle' is not known"),
    ([1, 2], r"expected a mapping"),
])
def test_errors_name_the_key(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_files(tmp_path):
    yaml_file = tmp_path / "sweep.yaml"
    yaml_file.write_text("name: t\npruning:\n  methods: [magnitude]\n  sparsities: [0.5]\n", encoding="utf-8")
    assert load_config(yaml_file).pruning.methods == ("magnitude",)
    json_file = tmp_path / "sweep.json"
    json_file.write_text(json.dumps(demo_config_dict()), encoding="utf-8")
    assert load_config(json_file).name == "demo"
    broken = tmp_path / "broken.json"
    broken.write_text("{\"name\": ", encoding="utf-8")
    with pytest.raises(ConfigError, match="does not parse"):
        load_config(broken)
    bad_value = tmp_path / "bad.yaml"
    bad_value.write_text("pruning:\n  scope: everywhere\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="'pruning.scope'"):
        load_config(bad_value)
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
