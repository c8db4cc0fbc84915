"""Sweeps with the trained methods (IMP, Robust Tickets and their layer-matched random tickets, EarlyRobust) and
the random control: each point is recorded like a one-shot point, and a run killed inside a method's training
resumes from that method's own checkpoint to the same result."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from robustprune.experiments.config import parse_config
from robustprune.experiments.demo import demo_config_dict
from robustprune.experiments.report import build_report
from robustprune.experiments.results import ResultsFile, ResultsMismatchError
from robustprune.experiments.runner import run_experiment, sweep_points


def trained_raw(methods, **imp):
    raw = demo_config_dict()
    raw["name"] = "trained"
    raw["data"].update({"max_train_examples": 48, "max_eval_examples": 24})
    raw["finetune"].update({"epochs": 1.0, "max_length": 32, "batch_size": 8, "checkpoint_every": 1})
    raw["pruning"] = {
        "methods": methods, "sparsities": [0.5], "patterns": ["unstructured", "2:4"],
        "imp": {"prune_rate": 0.3, "rewind_step": 2, **imp},
        "robust_ticket": {"adversarial": {"steps": 2}},
        "early_robust": {"check_every": 2, "patience": 1, "adversarial": {"steps": 2}},
    }
    raw["evaluation"] = {"clean": True}
    return raw


def predictions(out, record):
    return json.loads((out / record["files"]["predictions"]).read_text())["clean"]["predictions"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    config = parse_config(trained_raw(["random", "imp", "robust_ticket", "random_ticket", "early_robust",
                                       "adversarial"]))
    run_experiment(config, out, progress=False)
    return config, out, {r["method"] + "|" + r["pattern"]: r for r in ResultsFile(out / "results.jsonl").records()}


@pytest.mark.slow
def test_every_method_is_a_recorded_point(reference):
    config, out, records = reference
    assert [p.key for p in sweep_points(config)] == [r["key"] for r in ResultsFile(out / "results.jsonl").records()]
    assert set(records) == {"dense|dense", "random|unstructured", "random|2:4", "imp|unstructured",
                            "robust_ticket|unstructured", "random_ticket|unstructured", "early_robust|heads+neurons",
                            "adversarial|dense"}
    for key in ("imp|unstructured", "robust_ticket|unstructured", "random_ticket|unstructured",
                "early_robust|heads+neurons", "adversarial|dense"):
        record = records[key]
        method = record["method"]
        assert record["method_settings"] == config.method_fingerprint(method)
        assert record["resumed"] is False and record["finetune_seconds"] > 0
        assert 0 <= record["clean"]["accuracy"] <= 100 and record["clean"]["n"] == 24
    # unstructured tickets hit the sparsity exactly (counted on the weights); EarlyRobust's removed share
    # of the targeted weights is close to it (whole heads and neurons)
    for key in ("random|unstructured", "imp|unstructured", "robust_ticket|unstructured", "random_ticket|unstructured"):
        assert records[key]["measured_sparsity"] == pytest.approx(0.5, abs=1e-6)
    assert records["random|2:4"]["measured_sparsity"] == pytest.approx(0.5, abs=1e-6)
    early = records["early_robust|heads+neurons"]
    assert early["measured_sparsity"] == pytest.approx(0.5, abs=0.03)
    assert early["details"]["params_after"] < early["details"]["params_before"]
    imp = records["imp|unstructured"]["details"]
    assert imp["rounds"] == 2 and imp["round_sparsities"] == pytest.approx([0.3, 0.5], abs=1e-6)
    # the ticket against OMP of the pre-trained weights (Jaiswal et al.'s comparison): masks of equal size
    assert 0.5 < imp["cosine_vs_omp_pretrained"] < 1 and imp["hamming_vs_omp_pretrained"] == pytest.approx(
        1 - imp["cosine_vs_omp_pretrained"], abs=1e-6)
    robust, random = records["robust_ticket|unstructured"]["details"], records["random_ticket|unstructured"]["details"]
    assert robust["mask_learning_seconds"] > 0
    # the random ticket keeps the robust ticket's count in each of the 36 targets (not a uniform 50 % each)
    assert random["kept_per_target"] == robust["kept_per_target"] and len(robust["kept_per_target"]) == 36
    assert random["mask_learning_seconds"] == robust["mask_learning_seconds"]  # the same masks, learned once
    adversarial = records["adversarial|dense"]  # FreeLB from the pre-trained model: another dense model
    assert adversarial["measured_sparsity"] < 1e-4 and adversarial["sparsity"] == 0.0


@pytest.mark.slow
def test_finished_points_leave_only_shared_checkpoints(reference):
    config, out, _ = reference
    root = out / "checkpoints" / config.fingerprint()
    assert not any(root.glob("*/unstructured-*")) and not any(root.glob("*/heads+neurons-*"))
    assert not any(root.glob("*/dense-*"))
    assert (root / f"robust_ticket-{config.method_fingerprint('robust_ticket')}" / "masks-seed0").is_dir()
    assert (root / "rewind-step2-seed0.safetensors").is_file()  # IMP's rewind point, made once per seed


@pytest.mark.slow
def test_report_tables_the_trained_methods(reference, tmp_path):
    _, out, _ = reference
    build_report(out / "results.jsonl", tmp_path)
    table = (tmp_path / "results.md").read_text()
    for method in ("random", "imp", "robust_ticket", "random_ticket", "early_robust", "adversarial"):
        assert f"| {method} |" in table
    assert "heads+neurons" in table


@pytest.mark.slow
def test_changed_method_settings_are_refused_before_anything_is_written(reference):
    _, out, _ = reference
    before = (out / "config.json").read_text()
    changed = parse_config(trained_raw(["imp"], prune_rate=0.25))
    with pytest.raises(ResultsMismatchError, match="pruning.imp"):
        run_experiment(changed, out, progress=False)
    assert (out / "config.json").read_text() == before


@pytest.mark.slow
def test_a_run_killed_inside_imp_training_resumes_from_its_checkpoint(reference, tmp_path):
    config, reference_out, records = reference
    raw = trained_raw(["imp"])
    out = tmp_path / "killed"
    (out / "checkpoints").mkdir(parents=True)
    dense = next((reference_out / "checkpoints").glob("dense-*.safetensors"))
    shutil.copy(dense, out / "checkpoints" / dense.name)  # skip re-fine-tuning the same dense model
    config_file = tmp_path / "imp.yaml"
    config_file.write_text(yaml.safe_dump(raw))
    imp_dir = out / "checkpoints" / config.fingerprint() / f"imp-{config.method_fingerprint('imp')}"
    rounds = imp_dir / "rounds-seed0"  # the seed's IMP rounds, shared by its sparsities
    process = subprocess.Popen([sys.executable, "-m", "robustprune.cli", "run", str(config_file), "--out", str(out),
                                "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    try:
        deadline = time.monotonic() + 300
        while not any(rounds.glob("round_02-*/train/checkpoint.pt")):
            assert process.poll() is None, f"the run ended before round 2 trained: {process.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "round 2 never started training"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)  # mid-way through IMP's second round
    finally:
        process.wait()
    killed = ResultsFile(out / "results.jsonl").records()
    assert [r["method"] for r in killed] == ["dense"]  # the IMP point was not finished
    assert len(list(rounds.glob("round_01-*/summary.json"))) == 1

    run_experiment(parse_config(raw), out, progress=False)
    imp = next(r for r in ResultsFile(out / "results.jsonl").records() if r["method"] == "imp")
    assert imp["resumed"] is True
    expected = records["imp|unstructured"]
    assert imp["clean"] == expected["clean"] and imp["details"] == expected["details"]
    assert predictions(out, imp) == predictions(reference_out, expected)


def test_a_rewind_step_beyond_the_dense_fine_tuning_is_refused_before_any_work(tmp_path):
    from robustprune.experiments.config import ConfigError

    config = parse_config(trained_raw(["imp"], rewind_step=7))  # 48 examples / batch 8 = 6 steps
    with pytest.raises(ConfigError, match=r"pruning.imp.rewind_step.*6 steps"):
        run_experiment(config, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_robust_and_random_tickets_of_one_seed_share_the_learned_masks(minilm_tokenizer, tmp_path):
    """Fast stand-in of the sweep: with the seed's shared work adopted (pre-trained state, learned log_alpha),
    the random ticket keeps the robust ticket's count in every target at other positions, both reset to the
    pre-trained weights and fine-tuned with their masks fixed."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from robustprune.data.datasets import load_glue_tsv
    from robustprune.experiments.methods import PointPruner
    from robustprune.experiments.points import Point
    from tests.conftest import SST2_TRAIN

    def tiny(seed):
        torch.manual_seed(seed)
        return BertForSequenceClassification(BertConfig(
            vocab_size=30522, hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16,
            max_position_embeddings=64, num_labels=2)).eval()

    raw = trained_raw(["robust_ticket", "random_ticket"])
    raw["finetune"].update({"max_length": 16, "checkpoint_every": 100})
    config = parse_config(raw)
    base, pretrained = tiny(0), tiny(1)
    train = load_glue_tsv(SST2_TRAIN).subset(range(16))
    pruner = PointPruner(config, base, minilm_tokenizer, train, 0, tmp_path, progress=False)
    g = torch.Generator().manual_seed(0)
    targets = [n for n, _ in base.named_parameters() if n.startswith("bert.encoder") and n.endswith("dense.weight")
               or n.endswith(("query.weight", "key.weight", "value.weight"))]
    log_alphas = {n: torch.randn(dict(base.named_parameters())[n].shape, generator=g) + i - 5
                  for i, n in enumerate(targets)}  # later targets keep more: a non-uniform ticket
    pruner.adopt({"_pretrained": pretrained.state_dict(), "_log_alphas": log_alphas, "_mask_seconds": 2.5})
    robust = pruner.prune(Point(0, "robust_ticket", "unstructured", 0.5))
    random = pruner.prune(Point(0, "random_ticket", "unstructured", 0.5))
    kept = robust.details["kept_per_target"]
    assert len(kept) == 12 and random.details["kept_per_target"] == kept and kept[0] < kept[-1]
    assert robust.measured_sparsity == pytest.approx(0.5) and random.measured_sparsity == pytest.approx(0.5)
    robust_params, random_params = dict(robust.model.named_parameters()), dict(random.model.named_parameters())
    for name, count in zip(targets, kept):
        nonzero_robust, nonzero_random = robust_params[name] != 0, random_params[name] != 0
        assert int(nonzero_robust.sum()) == int(nonzero_random.sum()) == count
        if 0 < count < nonzero_robust.numel():
            assert not torch.equal(nonzero_robust, nonzero_random)  # other positions
    # both were reset to the pre-trained weights, then fine-tuned: not the base's weights, not far from the reset
    reset = pretrained.state_dict()["bert.embeddings.word_embeddings.weight"]
    for model in (robust.model, random.model):
        moved = model.state_dict()["bert.embeddings.word_embeddings.weight"] - reset
        assert 0 < float(moved.abs().max()) < 0.01
    assert robust.details["mask_learning_seconds"] == random.details["mask_learning_seconds"] == 2.5


def test_random_ticket_alone_learns_the_masks_as_shared_work(minilm_tokenizer, tmp_path):
    """What the Ray executor does: one pruner computes the seed's shared work for a random_ticket point (the
    robust ticket's masks, learned though robust_ticket is not among the methods, under robust_ticket's
    block and checkpoint folder), another adopts it and prunes the point as the first would."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from robustprune.data.datasets import load_glue_tsv
    from robustprune.experiments.methods import PointPruner
    from robustprune.experiments.points import Point
    from tests.conftest import SST2_TRAIN

    def tiny(seed):
        torch.manual_seed(seed)
        return BertForSequenceClassification(BertConfig(
            vocab_size=30522, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
            max_position_embeddings=64, num_labels=2)).eval()

    raw = trained_raw(["random_ticket"])
    raw["finetune"].update({"max_length": 16, "checkpoint_every": 100})
    raw["pruning"]["robust_ticket"].update({"init_mask": 0.9, "weight_decay": 1e-6, "mask_lr": 0.05})
    config = parse_config(raw)
    base, train = tiny(0), load_glue_tsv(SST2_TRAIN).subset(range(16))
    point = Point(0, "random_ticket", "unstructured", 0.5)
    first = PointPruner(config, base, minilm_tokenizer, train, 0, tmp_path, progress=False)
    first._pretrained = tiny(1).state_dict()  # (instead of loading the pre-trained MiniLM)
    shared = first.shared_work([point])
    assert set(shared["_log_alphas"]) == {n for n, _ in base.named_parameters()
                                         if n.startswith("bert.encoder") and n.endswith("weight") and "LayerNorm" not in n}
    import math

    learned = next(iter(shared["_log_alphas"].values()))
    assert float((learned - math.log(5.0)).abs().min()) > 0.01  # moved from the constant init (log 5)
    assert (tmp_path / f"robust_ticket-{config.method_fingerprint('robust_ticket')}" / "masks-seed0").is_dir()
    second = PointPruner(config, tiny(0), minilm_tokenizer, train, 0, tmp_path / "other", progress=False)
    second.adopt(shared)
    mine, adopted = first.prune(point), second.prune(point)
    assert adopted.details == mine.details and mine.measured_sparsity == pytest.approx(0.5)
    for (name, value), other in zip(mine.model.state_dict().items(), adopted.model.state_dict().values()):
        assert torch.equal(value, other), name
