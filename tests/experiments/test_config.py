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
    # the grid is not in the fingerprint (a sweep grows in place); any setting that changes a point is
    grown = parse_config({**config.to_dict(), "seeds": [0, 1, 2],
                          "pruning": {**config.to_dict()["pruning"], "sparsities": [0.3, 0.7, 0.9]}})
    assert grown.fingerprint() == config.fingerprint()
    for changed in ({**config.to_dict(), "finetune": {"lr": 3e-4}},
                    {**config.to_dict(), "pruning": {**config.to_dict()["pruning"], "scope": "layer"}},
                    {**config.to_dict(), "evaluation": {"attacks": ["pwws"]}}):
        assert parse_config(changed).fingerprint() != config.fingerprint()


def test_attack_mode(monkeypatch):
    from robustprune.eval.attacks import text
    from robustprune.experiments import config as config_module

    assert config_module.ATTACK_MODES == text.MODES
    assert config_module.TEXTATTACK_MODE_REVISION == text.TEXTATTACK_MODE_REVISION
    default = parse_config({"evaluation": {"attacks": ["pwws"]}})
    paper = parse_config({"evaluation": {"attacks": [{"recipe": "pwws", "mode": "paper"}]}})
    assert default.evaluation.attacks[0].mode == "textattack" and paper.evaluation.attacks[0].mode == "paper"
    assert default.fingerprint() != paper.fingerprint()  # a mode's results never resume the other's
    revised = default.fingerprint()
    monkeypatch.setattr(config_module, "TEXTATTACK_MODE_REVISION", text.TEXTATTACK_MODE_REVISION + 1)
    assert default.fingerprint() != revised  # nor does an earlier revision's
    assert paper.fingerprint() == parse_config(paper.to_dict()).fingerprint()  # the paper mode has none


def test_protocol_per_method():
    """A mapping method -> protocol, filled in (finetune_then_prune) for the methods it leaves out; the dense
    point is the fine-tuned dense model as soon as one method prunes it."""
    methods = {"methods": ["magnitude", "imp", "wanda", "sparsegpt"]}
    mixed = parse_config({"protocol": {"magnitude": "prune_then_finetune", "sparsegpt": "prune_then_finetune"},
                          "pruning": methods})
    assert mixed.protocol == {"magnitude": "prune_then_finetune", "imp": "finetune_then_prune",
                              "wanda": "finetune_then_prune", "sparsegpt": "prune_then_finetune"}
    assert list(mixed.protocol) == methods["methods"]  # in pruning.methods order, every method named
    assert mixed.mixed_protocols and mixed.protocol_of("dense") == "finetune_then_prune"
    assert [mixed.protocol_of(m) for m in ("magnitude", "imp")] == ["prune_then_finetune", "finetune_then_prune"]
    assert parse_config(mixed.to_dict()) == mixed and mixed.to_dict()["protocol"]["imp"] == "finetune_then_prune"
    one_shot = {"methods": ["magnitude", "wanda"]}
    all_after = parse_config({"protocol": {"magnitude": "prune_then_finetune", "wanda": "prune_then_finetune"},
                              "pruning": one_shot})
    assert not all_after.mixed_protocols and all_after.protocol_of("dense") == "prune_then_finetune"
    string = parse_config({"protocol": "prune_then_finetune", "pruning": one_shot})
    assert string.protocol_of("dense") == string.protocol_of("wanda") == "prune_then_finetune"
    # one protocol for every method is that protocol's sweep, whichever way it is written; a mix is another
    assert all_after.fingerprint() == string.fingerprint()
    assert parse_config({"protocol": {}, "pruning": one_shot}).fingerprint() == parse_config(
        {"pruning": one_shot}).fingerprint()
    half = parse_config({"protocol": {"magnitude": "prune_then_finetune"}, "pruning": one_shot})
    assert len({half.fingerprint(), string.fingerprint(), parse_config({"pruning": one_shot}).fingerprint()}) == 3
    # a mixed sweep grown by a method that prunes the fine-tuned model keeps its finished points ...
    grown = parse_config({"protocol": {"magnitude": "prune_then_finetune"},
                          "pruning": {"methods": ["magnitude", "wanda", "imp"]}})
    assert grown.fingerprint() == half.fingerprint()
    # ... one more method pruning the pre-trained model, or a method moved to the other protocol, is a new sweep
    assert parse_config({"protocol": {"magnitude": "prune_then_finetune", "imp": "finetune_then_prune",
                                      "sparsegpt": "prune_then_finetune"},
                         "pruning": {"methods": ["magnitude", "wanda", "imp", "sparsegpt"]}}).fingerprint() != \
        half.fingerprint()
    assert parse_config({"protocol": {"wanda": "prune_then_finetune"}, "pruning": one_shot}).fingerprint() != \
        half.fingerprint()


def test_finetune_schedule_keys_keep_earlier_fingerprints():
    """weight_decay and warmup_ratio (added later) at their old implicit values (0.01, 0.1) leave a config's
    fingerprint as it was; other values change it, and reach the training schedule."""
    base = parse_config({})
    assert base.fingerprint() == "0bf33db42403e98d"  # the default sweep's fingerprint before the keys existed
    assert parse_config({"finetune": {"weight_decay": 0.01, "warmup_ratio": 0.1}}).fingerprint() == base.fingerprint()
    paper = parse_config({"finetune": {"weight_decay": 1e-8, "warmup_ratio": 0.0}})
    assert paper.fingerprint() != base.fingerprint()
    schedule = paper.finetune.schedule(3)
    assert (schedule.weight_decay, schedule.warmup_ratio, schedule.seed) == (1e-8, 0.0, 3)
    assert (base.finetune.schedule(0).weight_decay, base.finetune.schedule(0).warmup_ratio) == (0.01, 0.1)


@pytest.mark.parametrize("raw, message", [
    ({"protocol": {"wanda": "prune_then_finetune"}, "pruning": {"methods": ["magnitude"]}},
     r"'protocol.wanda': 'wanda' is not among pruning.methods \['magnitude'\]"),
    ({"protocol": {"magnitude": "prune_first"}}, r"'protocol.magnitude': expected one of"),
    ({"protocol": ["prune_then_finetune"]}, r"'protocol': expected one of .* or a mapping method -> protocol"),
    ({"protocol": {"magnitude": "prune_then_finetune", "imp": "prune_then_finetune"},
      "pruning": {"methods": ["magnitude", "imp"]}}, r"'protocol.imp': methods \['imp'\] train their own"),
    ({"protocol": "prune_then_finetune", "pruning": {"methods": ["magnitude", "imp"]}},
     r"'protocol': methods \['imp'\] train their own"),
    ({"finetune": {"weight_decay": -0.1}}, r"'finetune.weight_decay': expected a value >= 0"),
    ({"finetune": {"warmup_ratio": 1.0}}, r"'finetune.warmup_ratio': expected a value in \[0, 1\)"),
])
def test_protocol_and_schedule_errors_name_the_key(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_keys_of_the_robust_tickets_protocol_keep_earlier_fingerprints_at_their_old_values():
    """Pinned: what the config hashed before ``finetune.weight_decay`` / ``max_grad_norm``,
    ``pruning.robust_ticket.weight_decay`` / ``init_mask`` and the attack constraint keys existed."""
    raw = {"pruning": {"methods": ["robust_ticket", "imp"], "sparsities": [0.5]},
           "evaluation": {"attacks": [{"recipe": "textfooler", "max_examples": 5}]}}
    config = parse_config(raw)
    assert config.finetune.weight_decay == 0.01 and config.finetune.max_grad_norm == 1.0  # what runs used
    assert config.pruning.robust_ticket.weight_decay == 0.0 and config.pruning.robust_ticket.init_mask is None
    assert (config.fingerprint(), config.method_fingerprint("robust_ticket")) == ("3729b7592c8593b9",
                                                                                 "07e7f4134bb45db9")
    explicit = parse_config({**raw, "finetune": {"weight_decay": 0.01, "max_grad_norm": 1.0}})
    assert explicit.fingerprint() == config.fingerprint()
    for finetune in ({"weight_decay": 0.0}, {"max_grad_norm": 0.0}):  # a changed value is another sweep
        changed = parse_config({**raw, "finetune": finetune})
        assert changed.fingerprint() != config.fingerprint()
        assert changed.finetune.schedule(3).replace(seed=0) == config.finetune.schedule(0).replace(**finetune)
    for block in ({"weight_decay": 1e-6}, {"init_mask": 0.9}):
        changed = parse_config({**raw, "pruning": {**raw["pruning"], "robust_ticket": block}})
        assert changed.fingerprint() == config.fingerprint()  # the blocks hash apart (method_fingerprint)
        assert changed.method_fingerprint("robust_ticket") != config.method_fingerprint("robust_ticket")
    attack = parse_config({**raw, "evaluation": {"attacks": [{"recipe": "textfooler", "max_examples": 5,
                                                                "similarity_threshold": 0.84}]}})
    assert attack.fingerprint() != config.fingerprint()
    assert attack.evaluation.attacks[0].similarity_threshold == 0.84


def test_random_ticket_is_a_trained_method_on_the_robust_tickets_block():
    config = parse_config({"pruning": {"methods": ["random_ticket"], "sparsities": [0.3, 0.5]}})
    assert [(p.method, p.pattern, p.sparsity) for p in sweep_points(config)] == [
        ("dense", "dense", 0.0), ("random_ticket", "unstructured", 0.3), ("random_ticket", "unstructured", 0.5)]
    # its tickets are the robust ticket's counts: a changed robust_ticket block is a changed random_ticket
    assert config.method_fingerprint("random_ticket") == config.method_fingerprint("robust_ticket")
    changed = parse_config({"pruning": {"methods": ["random_ticket"], "robust_ticket": {"mask_lr": 0.05}}})
    assert changed.method_fingerprint("random_ticket") != config.method_fingerprint("random_ticket")
    with pytest.raises(ConfigError, match="'pruning.patterns'.*random_ticket"):
        parse_config({"pruning": {"methods": ["random_ticket"], "patterns": ["2:4"]}})


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
    ({"evaluation": {"attacks": [{"recipe": "pwws", "mode": "fast"}]}},
     r"'evaluation.attacks\[0\].mode': expected one of \['textattack', 'paper'\]"),
    ({"evaluation": {"clean": False}}, r"'evaluation': nothing to evaluate"),
    ({"protocol": "prune_during_training"}, r"'protocol': expected one of"),
    ({"data": {"task": "stsb"}}, r"'data.task'"),
    ({"data": {"data_dir": "embedded", "task": "mnli"}}, r"'data.task': the bundled data 'embedded'"),
    ({"seeds": []}, r"'seeds': expected a non-empty list"),
    ({"seeds": [0, 0]}, r"'seeds': repeated"),
    ({"finetune": {"lr": 0}}, r"'finetune.lr'"),
    ({"modle": {}}, r"'modle' is not known"),
    ([1, 2], r"expected a mapping"),
    ({"pruning": {"sparsities": [float("nan")]}}, r"'pruning.sparsities\[0\]': expected a finite number"),
    ({"finetune": {"epochs": float("inf")}}, r"'finetune.epochs': expected a finite number"),
    ({"finetune": {"lr": float("nan")}}, r"'finetune.lr': expected a finite number"),
    ({"finetune": {"lr": "1e-4"}}, r"'finetune.lr': expected a number, got '1e-4'; write the number without quotes"),
    ({"data": {"max_robust_examples": 0}}, r"'data.max_robust_examples'"),
    ({"evaluation": {"shifts": [{"name": "char_swap", "params": {"rate": 1.5}}]}},
     r"'evaluation.shifts\[0\].params': rate must be a number in \[0, 1\]"),
    ({"evaluation": {"shifts": [{"name": "char_swap", "params": {"p": 0.1}}]}},
     r"'evaluation.shifts\[0\].params.p' is not a parameter of char_swap; expected one of \['min_length', 'rate'\]"),
    ({"evaluation": {"shifts": [{"name": "embedding_swap", "params": {"k": 2.5}}]}},
     r"'evaluation.shifts\[0\].params.k': expected int"),
    ({"evaluation": {"shifts": [{"params": {"rate": 0.2}}]}}, r"'evaluation.shifts\[0\].name' is missing"),
    ({"evaluation": {"shifts": ["eda", {"name": "eda", "params": {"p_rd": 0.3}}]}},
     r"'evaluation.shifts': each shift at most once"),
    ({"pruning": {"calibration": {"source": "robust_set"}}},
     r"'pruning.calibration.source': the source 'robust_set' calibrates on data.robust_set, which is not set"),
    ({"pruning": {"calibration": {"compare": {"adv": "robust_set"}}}},
     r"'pruning.calibration.compare.adv': the source 'robust_set'"),
    ({"pruning": {"calibration": {"compare": {"c4/en": "allenai/c4:en"}}}},
     r"'pruning.calibration.compare': label 'c4/en' must be letters"),
    ({"pruning": {"calibration": {"compare": ["allenai/c4:en"]}}}, r"'pruning.calibration.compare': expected a mapping"),
    ({"pruning": {"methods": ["magnitude", "random"], "calibration": {"compare": {"c4": "allenai/c4:en"}}}},
     r"'pruning.calibration.compare': no calibrated method"),
    ({"pruning": {"calibration": {"source": ""}}}, r"'pruning.calibration.source': expected a non-empty string"),
    ({"evaluation": {"subset_seed": -1}}, r"'evaluation.subset_seed'"),
    ({"finetune": {"weight_decay": -0.01}}, r"'finetune.weight_decay': expected a value >= 0"),
    ({"finetune": {"max_grad_norm": "1"}}, r"'finetune.max_grad_norm': expected a number"),
    ({"pruning": {"robust_ticket": {"weight_decay": -1e-6}}}, r"'pruning.robust_ticket.weight_decay'"),
    ({"pruning": {"robust_ticket": {"init_mask": 0}}}, r"'pruning.robust_ticket.init_mask': expected a value in \(0, 1\]"),
    ({"pruning": {"robust_ticket": {"init_mask": 1.2}}}, r"'pruning.robust_ticket.init_mask'"),
    ({"evaluation": {"attacks": [{"recipe": "pwws", "max_candidates": 5}]}},
     r"'evaluation.attacks\[0\].max_candidates': only textfooler, textbugger, bert-attack have it, not pwws"),
    ({"evaluation": {"attacks": [{"recipe": "textfooler", "max_words_perturbed": 0.9}]}},
     r"'evaluation.attacks\[0\].max_words_perturbed': only bert-attack"),
    ({"evaluation": {"attacks": [{"recipe": "textbugger", "similarity_threshold": 1.5}]}},
     r"'evaluation.attacks\[0\].similarity_threshold': expected a value in \[-1, 1\]"),
    ({"evaluation": {"attacks": [{"recipe": "textbugger", "max_candidates": 2.5}]}},
     r"'evaluation.attacks\[0\].max_candidates': expected an integer"),
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


def test_yaml_reads_as_a_researcher_writes_it(tmp_path):
    """YAML 1.2 scalars: unquoted 2:4 is a pattern (not base-60 124), 1e-4 a number (not a string)."""
    path = tmp_path / "sweep.yaml"
    path.write_text("finetune: {lr: 1e-4}\npruning:\n  patterns: [2:4, 4:8]\n  sparsities: [.5]\n", encoding="utf-8")
    config = load_config(path)
    assert config.pruning.patterns == ("2:4", "4:8") and config.finetune.lr == 1e-4
    assert config.pruning.sparsities == (0.5,)


@pytest.mark.parametrize("name, text, message", [
    ("empty.yaml", "", "is empty"),
    ("comments.yaml", "# nothing yet\n", "holds no keys"),
    ("empty.json", "  \n", "is empty"),
    ("twice.yaml", "name: a\nseeds: [0]\nname: b\n", "config key 'name' appears twice in one mapping \\(line 3\\)"),
    ("nested.yaml", "finetune:\n  lr: 1.0e-4\n  lr: 2.0e-4\n", "'lr' appears twice"),
    ("twice.json", '{"seeds": [0], "seeds": [1]}', "config key 'seeds' appears twice"),
    ("nan.json", '{"pruning": {"sparsities": [NaN]}}', "NaN is not a valid config value"),
    ("nan.yaml", "pruning:\n  sparsities: [.nan]\n", "'pruning.sparsities\\[0\\]': expected a finite number"),
    ("inf.yaml", "finetune:\n  epochs: .inf\n", "'finetune.epochs': expected a finite number"),
    ("latin1.yaml", "name: caf\xe9\n", "is not UTF-8 text"),
])
def test_files_that_must_not_run(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_shifts_take_their_augmenters_settings_and_keep_earlier_fingerprints():
    from robustprune.eval.shifts import SHIFT_AUGMENTERS, shift_defaults
    from robustprune.experiments.config import SHIFTS

    assert set(SHIFTS) == set(SHIFT_AUGMENTERS)
    plain = parse_config({"evaluation": {"shifts": ["char_swap", "eda"]}})
    assert [(s.name, s.params) for s in plain.evaluation.shifts] == [
        ("char_swap", {"rate": 0.1, "min_length": 4}), ("eda", {"alpha_sr": 0.1, "alpha_ri": 0.1, "alpha_rs": 0.1,
                                                                 "p_rd": 0.1})]
    assert plain.fingerprint() == "41439084a6d4714c"  # what this config hashed to when shifts were names only
    written = parse_config({"evaluation": {"shifts": [{"name": "char_swap"}, {"name": "eda", "params": {}}]}})
    assert written.fingerprint() == plain.fingerprint()  # a shift at its defaults, however written
    stronger = parse_config({"evaluation": {"shifts": ["char_swap", {"name": "eda", "params": {"p_rd": 0.3}}]}})
    assert stronger.evaluation.shifts[1].params == {**shift_defaults("eda"), "p_rd": 0.3}
    assert stronger.fingerprint() != plain.fingerprint()
    assert parse_config(stronger.to_dict()).fingerprint() == stronger.fingerprint()  # config.json round trip
    assert stronger.to_dict()["evaluation"]["shifts"][1]["params"]["p_rd"] == 0.3  # a protocol key path
    augmenter = stronger.evaluation.shifts[1].augmenter("cpu")
    assert [type(op).__name__ for op in augmenter.operations] == ["SynonymReplace", "RandomInsert", "RandomSwap",
                                                                   "RandomDelete"]
    assert augmenter.operations[3].p == 0.3
    translation = parse_config({"evaluation": {"shifts": [{"name": "back_translation", "params": {
        "forward": "Helsinki-NLP/opus-mt-en-ROMANCE", "backward": "Helsinki-NLP/opus-mt-ROMANCE-en",
        "target_prefix": ">>es<<"}}]}})
    built = translation.evaluation.shifts[0].augmenter("cpu")  # no model loads before first use
    assert built.sources == ("Helsinki-NLP/opus-mt-en-ROMANCE", "Helsinki-NLP/opus-mt-ROMANCE-en")
    assert built.target_prefix == ">>es<<" and built.num_beams == 4


def test_calibration_sources_and_their_variants():
    from robustprune.experiments.config import split_method
    from robustprune.experiments.points import sweep_methods

    default = parse_config({})
    assert default.pruning.calibration.source == "train" and default.pruning.calibration.compare == {}
    assert default.fingerprint() == "0bf33db42403e98d"  # unchanged by the keys at their defaults
    robust = {"data": {"robust_set": "sst2-adv-sample"}}
    c4 = parse_config({**robust, "pruning": {"calibration": {"source": "allenai/c4:en"}}})
    assert c4.fingerprint() != parse_config(robust).fingerprint()
    study = parse_config({**robust, "pruning": {
        "methods": ["magnitude", "wanda", "sparsegpt"], "patterns": ["unstructured", "2:4"], "sparsities": [0.5],
        "calibration": {"compare": {"advglue": "robust_set", "c4": "allenai/c4:en"}}}})
    assert sweep_methods(study) == ["magnitude", "wanda", "wanda@advglue", "wanda@c4", "sparsegpt",
                                    "sparsegpt@advglue", "sparsegpt@c4"]
    points = sweep_points(study)
    assert [(p.method, p.pattern) for p in points if p.method.startswith("wanda")] == [
        ("wanda", "unstructured"), ("wanda", "2:4"), ("wanda@advglue", "unstructured"), ("wanda@advglue", "2:4"),
        ("wanda@c4", "unstructured"), ("wanda@c4", "2:4")]
    calibration = study.pruning.calibration
    assert [calibration.source_of(m) for m in ("wanda", "wanda@advglue", "sparsegpt@c4")] == [
        "train", "robust_set", "allenai/c4:en"]
    assert split_method("sparsegpt@c4") == ("sparsegpt", "c4") and split_method("random") == ("random", None)
    assert study.fingerprint() != parse_config({**robust, "pruning": {**study.to_dict()["pruning"], "calibration": {
        "compare": {"advglue": "robust_set"}}}}).fingerprint()  # a variant's source is part of its results
