"""EarlyRobust in a sweep: separate head and neuron shares per ticket, the early-bird check interval in epochs,
PGD and FreeLB dense baselines, the heads-per-block rule checked on the model before any training, and the
paper table's speedup over PGD and parameter count without embeddings (hand values)."""

from __future__ import annotations

import pytest
import torch

from robustprune.experiments.catalog import quick_version
from robustprune.experiments.config import ConfigError, EarlyRobustRatios, parse_config
from robustprune.experiments.paper_tables import early_robust_table
from robustprune.experiments.points import parameters_without_embeddings, sweep_points
from robustprune.experiments.tables import Row


def early(block=None, **pruning):
    return {"pruning": {"methods": ["early_robust"], "early_robust": block or {}, **pruning}}


def test_ratios_make_one_point_each_named_by_both_shares():
    config = parse_config(early({"ratios": [{"heads": 0.166667, "neurons": 0.3}, {"heads": 0.25, "neurons": 0.4}]},
                                sparsities=[0.9]))
    points = sweep_points(config)
    assert [(p.method, p.pattern) for p in points] == [
        ("dense", "dense"), ("early_robust", "heads=0.166667+neurons=0.3"), ("early_robust", "heads=0.25+neurons=0.4")]
    # the nominal sparsity: attention is 4 d^2 and the FFN 8 d^2 of a block, so (heads + 2 neurons) / 3
    assert points[1].sparsity == pytest.approx((0.166667 + 0.6) / 3) and points[2].sparsity == pytest.approx(0.35)
    assert points[1].key == "seed=0|method=early_robust|pattern=heads=0.166667+neurons=0.3|sparsity=" + \
        repr(points[1].sparsity)
    assert config.pruning.early_robust.ratios[0] == EarlyRobustRatios(0.166667, 0.3)
    assert config.to_dict()["pruning"]["early_robust"]["ratios"][1] == {"heads": 0.25, "neurons": 0.4}
    # ratios are the grid: adding one keeps the method's settings hash, so a sweep grows in place
    one = parse_config(early({"ratios": [{"heads": 0.166667, "neurons": 0.3}]}))
    assert one.method_fingerprint("early_robust") == config.method_fingerprint("early_robust")
    assert one.fingerprint() == config.fingerprint()


def test_the_tied_form_without_ratios_keeps_its_points_and_hashes():
    config = parse_config(early({"check_every": 10, "patience": 3}, sparsities=[0.5, 0.3]))
    assert [(p.pattern, p.sparsity) for p in sweep_points(config)[1:]] == [("heads+neurons", 0.3),
                                                                          ("heads+neurons", 0.5)]
    assert [r for _, _, r in config.pruning.early_robust.tickets(config.pruning.sparsities)] == [
        EarlyRobustRatios(0.3, 0.3), EarlyRobustRatios(0.5, 0.5)]
    # the hashes of configs written before ratios, check_every_epochs, scope and finetune_adversarial existed
    # (computed by the code of that time): their finished points still resume
    assert parse_config(early()).method_fingerprint("early_robust") == "60cde5e599d612b4"
    earlier_shipped = {"search_epochs": 1, "search_lr": 1.5e-4, "lambda_heads": 1.0e-4, "lambda_neurons": 1.0e-4,
                       "check_every": 10, "gamma": 0.1, "patience": 3,
                       "adversarial": {"method": "freelb", "steps": 3, "adv_lr": 0.1, "adv_init_mag": 0.6}}
    assert parse_config(early(earlier_shipped)).method_fingerprint("early_robust") == "d39b945fa5b73bc9"


def test_check_interval_in_epochs_or_steps():
    block = parse_config(early({"check_every_epochs": 0.05})).pruning.early_robust
    assert block.check_every_epochs == 0.05 and block.check_every is None
    assert parse_config(early({"check_every": 7})).pruning.early_robust.check_every == 7
    default = parse_config(early()).pruning.early_robust
    assert default.check_every == 50 and default.check_every_epochs is None
    assert parse_config(early({"check_every_epochs": 0.05})).method_fingerprint("early_robust") != \
        parse_config(early()).method_fingerprint("early_robust")


@pytest.mark.parametrize("block, message", [
    ({"ratios": [{"heads": 0.2}]}, r"'pruning.early_robust.ratios\[0\].neurons' is missing"),
    ({"ratios": [0.2]}, r"'pruning.early_robust.ratios\[0\]': expected a mapping \{heads: H, neurons: N\}"),
    ({"ratios": [{"heads": 0.2, "neurons": 1.0}]}, r"'pruning.early_robust.ratios\[0\].neurons': expected a value in"),
    ({"ratios": [{"heads": 0, "neurons": 0.3}]}, r"'pruning.early_robust.ratios\[0\].heads': expected a value in"),
    ({"ratios": [{"heads": 0.2, "neurons": 0.3, "layers": 2}]}, r"ratios\[0\].'layers' is not known"),
    ({"ratios": []}, r"'pruning.early_robust.ratios': expected a non-empty list"),
    ({"ratios": [{"heads": 0.2, "neurons": 0.3}, {"heads": 0.2, "neurons": 0.3}]},
     r"'pruning.early_robust.ratios': repeated entries"),
    ({"check_every": 5, "check_every_epochs": 0.05},
     r"'pruning.early_robust.check_every' \(steps\) and 'pruning.early_robust.check_every_epochs' .* exclude each"),
    ({"check_every": None}, r"'pruning.early_robust.check_every': expected the steps .* got null"),
    ({"check_every_epochs": 0}, r"'pruning.early_robust.check_every_epochs': expected a value > 0"),
    ({"check_every": 0.5}, r"'pruning.early_robust.check_every': expected an integer"),
    ({"scope": "blockwise"}, r"'pruning.early_robust.scope': expected one of \['global', 'layer'\]"),
    ({"finetune_adversarial": {"method": "pgd", "adv_max_norm": 0}}, r"'pruning.early_robust.finetune_adversarial'"),
])
def test_early_robust_errors_name_the_key(block, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(early(block))


def test_adversarial_baselines_one_point_per_adversary():
    raw = {"pruning": {"methods": ["adversarial"], "adversarial": [
        {"method": "pgd", "steps": 5, "adv_lr": 0.02, "adv_init_mag": 0.05},
        {"method": "freelb", "steps": 5, "adv_lr": 0.02, "adv_init_mag": 0.05}]}}
    config = parse_config(raw)
    assert [(p.method, p.pattern, p.sparsity) for p in sweep_points(config)] == [
        ("dense", "dense", 0.0), ("adversarial", "pgd", 0.0), ("adversarial", "freelb", 0.0)]
    baselines = dict(config.pruning.adversarial_baselines())
    assert baselines["pgd"].adv_max_norm == 1.0 and baselines["freelb"].adv_max_norm == 0.0  # each its default
    assert config.to_dict()["pruning"]["adversarial"][0]["method"] == "pgd"
    single = parse_config({"pruning": {"methods": ["adversarial"]}})  # the mapping form: one point, as before
    assert [p.pattern for p in sweep_points(single)][1:] == ["dense"]
    assert single.method_fingerprint("adversarial") == "b301c1aa55e7cb0c"  # unchanged since before lists
    assert config.method_fingerprint("adversarial") != single.method_fingerprint("adversarial")
    for bad, message in (([], r"'pruning.adversarial': expected a non-empty list"),
                         ([{"method": "pgd"}, {"method": "pgd"}], r"'pruning.adversarial': each adversary at most once"),
                         ([None], r"'pruning.adversarial\[0\]': expected a mapping, got null"),
                         ([{"method": "pgd", "adv_max_norm": 0}], r"'pruning.adversarial\[0\]'")):
        with pytest.raises(ConfigError, match=message):
            parse_config({"pruning": {"methods": ["adversarial"], "adversarial": bad}})


def test_quick_keeps_the_middle_ticket_and_every_adversary():
    raw = early({"ratios": [{"heads": 0.1, "neurons": 0.2}, {"heads": 0.2, "neurons": 0.3},
                            {"heads": 0.3, "neurons": 0.4}], "check_every_epochs": 0.05, "patience": 5},
                methods=["adversarial", "early_robust"],
                adversarial=[{"method": "pgd", "steps": 5}, {"method": "freelb", "steps": 5}])
    quick = quick_version(raw)
    block = quick["pruning"]["early_robust"]
    assert block["ratios"] == [{"heads": 0.2, "neurons": 0.3}] and block["patience"] == 1
    assert block["check_every_epochs"] == 0.05 and "check_every" not in block  # they exclude each other
    assert [(b["method"], b["steps"]) for b in quick["pruning"]["adversarial"]] == [("pgd", 2), ("freelb", 2)]
    parse_config(quick)
    steps = quick_version(early({"check_every": 10}))["pruning"]["early_robust"]
    assert steps["check_every"] == 2


def tiny_bert(layers=2, heads=2):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=layers,
                                                    num_attention_heads=heads, intermediate_size=32,
                                                    max_position_embeddings=16, type_vocab_size=2, num_labels=2))


@pytest.mark.parametrize("block, message", [
    # 2 blocks of 2 heads: 3 of 4 heads would leave a block empty (global keeps one per block: at most 2 go)
    ({"ratios": [{"heads": 0.5, "neurons": 0.3}, {"heads": 0.75, "neurons": 0.3}]},
     r"'pruning.early_robust.ratios\[1\].heads': on this model \(2 blocks of 2 heads\) head prune_ratio 0.75 prunes 3"),
    ({"ratios": [{"heads": 0.75, "neurons": 0.3}], "scope": "layer"},
     r"'pruning.early_robust.ratios\[0\].heads': .* prunes 2 of each block's 2 heads"),
    ({}, r"'pruning.sparsities\[0\]': .* head prune_ratio 0.9 prunes 4 of 4 heads"),  # the tied form
])
def test_a_head_share_that_would_empty_a_block_is_refused_before_training(tmp_path, block, message):
    from robustprune.experiments.methods import PointPruner

    config = parse_config(early(block, sparsities=[0.9]))
    with pytest.raises(ConfigError, match=message):
        PointPruner(config, tiny_bert(), None, None, 0, tmp_path, False)


def test_the_boundary_share_keeps_exactly_one_head_per_block(tmp_path):
    from robustprune.experiments.methods import PointPruner

    PointPruner(parse_config(early({"ratios": [{"heads": 0.5, "neurons": 0.3}]})), tiny_bert(), None, None, 0,
                tmp_path, False)  # 2 of 4 heads: one per block stays


def test_parameters_without_embeddings_by_hand():
    model = tiny_bert()
    # per block: q, k, v, attention output 4 x (8 x 8 + 8), two LayerNorms 2 x 16, FFN 8 x 32 + 32 + 32 x 8 + 8
    block = 4 * 72 + 2 * 16 + (256 + 32) + (256 + 8)
    # + the embeddings' LayerNorm (not a table), the pooler and the classifier
    expected = 2 * block + 16 + (64 + 8) + (2 * 8 + 2)
    tables = 50 * 8 + 16 * 8 + 2 * 8  # word, position and token-type embeddings
    assert parameters_without_embeddings(model) == expected
    assert sum(p.numel() for p in model.parameters()) == expected + tables


def row(method, pattern, seconds, size, sparsity=0.0, resumed=False, **metrics):
    return Row(method, pattern, sparsity, 1, {"finetune_seconds": seconds, "parameters_without_embeddings": size,
                                              "measured_sparsity": sparsity, **metrics}, {}, resumed=resumed)


def test_paper_table_reports_speedup_over_pgd():
    rows = [row("dense", "dense", 50.0, 21.3e6, clean_accuracy=82.0),
            row("adversarial", "freelb", 150.0, 21.3e6, clean_accuracy=81.0),
            row("adversarial", "pgd", 200.0, 21.3e6, clean_accuracy=80.0,
                **{"attack:textfooler": 5.0, "attack:textfooler:queries": 70.25}),
            row("early_robust", "heads=0.166667+neurons=0.3", 80.0, 15.9e6, sparsity=0.2556, resumed=True)]
    table = early_robust_table(rows)
    lines = table.splitlines()
    assert lines[0] == ("| model | sparsity (measured) | parameters without embeddings (M) | training time (s) | "
                        "speedup vs PGD | Clean% | textfooler Aua% | textfooler #Query |")
    # PGD first among the adversarial baselines (the paper's order); speedup = PGD's time / the model's time
    assert lines[2].startswith("| fine-tuned (dense) | 0.000 | 21.30 | 50 | 4.00x | 82.0 |")
    assert lines[3].startswith("| PGD (dense) | 0.000 | 21.30 | 200 | 1.00x | 80.0 | 5.0 | 70.2 |")
    assert lines[4].startswith("| FreeLB (dense) | 0.000 | 21.30 | 150 | 1.33x |")
    assert lines[5].startswith("| EarlyRobust (heads 0.166667, neurons 0.3) | 0.256 | 15.90 | 80* | 2.50x* |")
    # without a PGD point the one adversarial baseline is the reference, and the header says so
    table = early_robust_table([rows[0], row("adversarial", "dense", 100.0, 21.3e6)])
    assert "speedup vs adversarial training" in table and "| fine-tuned (dense) | 0.000 | 21.30 | 50 | 2.00x |" in table


def test_the_shipped_config_round_trips_through_its_dict():
    """A run's config.json (to_dict) parses back to the same config: ratios, adversaries, the epoch interval."""
    from robustprune.experiments.catalog import load_named_config

    config = load_named_config("early-robust")
    assert parse_config(config.to_dict()) == config
    assert [p.pattern for p in sweep_points(config)] == ["dense", "pgd", "freelb", "heads=0.166667+neurons=0.3"]
