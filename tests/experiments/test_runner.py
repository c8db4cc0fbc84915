"""A reduced demo sweep end to end: records, resume after an interrupt, report regeneration, the CLI."""

from __future__ import annotations

import json

import pytest

from robustprune.cli import main
from robustprune.experiments.config import parse_config
from robustprune.experiments.demo import demo_config_dict
from robustprune.experiments.report import build_report
from robustprune.experiments.results import ResultsFile
from robustprune.experiments.runner import run_experiment, sweep_points


def reduced_config(**evaluation):
    raw = demo_config_dict()
    raw["name"] = "reduced"
    raw["data"].update({"max_train_examples": 64, "max_eval_examples": 24})
    raw["finetune"].update({"epochs": 1.0, "max_length": 32})
    raw["pruning"].update({"sparsities": [0.5], "patterns": ["unstructured", "2:4"]})
    raw["pruning"]["calibration"].update({"samples": 8, "seq_len": 32})
    raw["evaluation"] = {"clean": True, "attacks": [{"recipe": "deepwordbug", "max_examples": 3}],
                         "shifts": ["char_swap"], **evaluation}
    return parse_config(raw)


class Interrupt(KeyboardInterrupt):
    pass


@pytest.fixture(scope="module")
def interrupted_then_resumed(tmp_path_factory):
    config = reduced_config()
    out = tmp_path_factory.mktemp("sweep")
    seen = []

    def stop_after_three(record):
        seen.append(record["key"])
        if len(seen) == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_experiment(config, out, progress=False, on_point=stop_after_three)
    first_records = ResultsFile(out / "results.jsonl").records()
    checkpoint = next((out / "checkpoints").glob("dense-*.safetensors"))
    stamp = checkpoint.stat().st_mtime_ns
    summary = run_experiment(config, out, progress=False)
    return config, out, first_records, summary, checkpoint, stamp


def test_interrupt_keeps_finished_points_and_resume_recomputes_nothing(interrupted_then_resumed):
    config, out, first_records, summary, checkpoint, stamp = interrupted_then_resumed
    keys = [p.key for p in sweep_points(config)]
    assert len(keys) == 1 + 3 * 2  # dense + 3 methods x (50 % and 2:4)
    assert [r["key"] for r in first_records] == keys[:3]  # every finished point survived the interrupt
    assert summary.skipped == keys[:3] and summary.computed == keys[3:]
    records = ResultsFile(out / "results.jsonl").records()
    assert [r["key"] for r in records] == keys
    assert records[:3] == first_records  # untouched
    assert checkpoint.stat().st_mtime_ns == stamp  # the fine-tuned dense model was reused, not retrained
    again = run_experiment(config, out, progress=False)
    assert again.computed == [] and again.skipped == keys


def test_records_hold_real_measurements(interrupted_then_resumed):
    _, out, _, _, _, _ = interrupted_then_resumed
    records = {(r["method"], r["pattern"]): r for r in ResultsFile(out / "results.jsonl").records()}
    dense = records[("dense", "dense")]
    assert dense["measured_sparsity"] == 0.0
    # the dense record is the checkpointed fine-tuned model's accuracy on the configured evaluation set
    from safetensors.torch import load_file

    from robustprune.eval.classifier import TextClassifier, evaluate_classifier
    from robustprune.experiments.runner import load_pretrained, load_sweep_data

    config = reduced_config()
    data = load_sweep_data(config)
    model, tokenizer = load_pretrained(config, 2, seed=0)
    model.load_state_dict(load_file(str(next((out / "checkpoints").glob("dense-*.safetensors")))))
    again = evaluate_classifier(TextClassifier(model, tokenizer), data.evaluation)
    assert len(data.evaluation) == 24 and dense["clean"]["accuracy"] == pytest.approx(again.accuracy)
    for method in ("magnitude", "wanda", "sparsegpt"):
        assert records[(method, "unstructured")]["measured_sparsity"] == pytest.approx(0.5, abs=1e-6)
        assert records[(method, "2:4")]["measured_sparsity"] == pytest.approx(0.5, abs=1e-6)
    for record in records.values():
        metrics = record["attacks"]["deepwordbug"]["metrics"]
        assert metrics["examples"] == 3
        assert metrics["succeeded"] + metrics["failed"] + metrics["skipped"] == 3
        assert 0.0 <= record["shifts"]["char_swap"]["accuracy"] <= 100.0
        assert record["attacks"]["deepwordbug"]["deviations"]
    examples = list((out / "examples").glob("*.json"))
    assert len(examples) == len(records)
    first = json.loads(examples[0].read_text())["deepwordbug"]
    assert len(first) == 3 and {"original", "perturbed", "status", "queries"} <= set(first[0])


def test_report_regenerates_identical_tables(interrupted_then_resumed, tmp_path):
    _, out, _, _, _, _ = interrupted_then_resumed
    one = build_report(out / "results.jsonl", tmp_path / "one")
    two = build_report(out / "results.jsonl", tmp_path / "two")
    for a, b in ((one.results_csv, two.results_csv), (one.results_md, two.results_md),
                 (one.analysis_md, two.analysis_md)):
        assert a.read_bytes() == b.read_bytes()
    table = one.results_md.read_text()
    assert "| dense | dense | 0.00 |" in table and "deepwordbug Aua%" in table and "char_swap acc" in table
    assert "ES (clean)" in one.analysis_md.read_text()
    assert {p.name for p in one.plots} == {"clean_accuracy.png", "attack_deepwordbug.png", "shift_char_swap.png"}
    assert all(p.stat().st_size > 1000 for p in one.plots)


def test_torn_last_line_is_dropped_and_cut_before_the_next_append(tmp_path):
    results = ResultsFile(tmp_path / "results.jsonl")
    results.append({"key": "a", "fingerprint": "f", "value": 1})
    with open(results.path, "ab") as f:
        f.write(b'{"key": "b", "finger')  # a kill mid-write
    assert [r["key"] for r in results.records()] == ["a"]
    results.append({"key": "c", "fingerprint": "f"})
    assert [r["key"] for r in results.records()] == ["a", "c"]
    assert results.done("f") == {"a", "c"} and results.done("other") == set()
    results.path.write_text('{"key": "a"}\nnot json\n{"key": "c"}\n')
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        results.records()


def test_cli_reports_config_errors_before_work(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("pruning:\n  sparsities: [0.5, 2]\n", encoding="utf-8")
    assert main(["run", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "'pruning.sparsities[1]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    missing = tmp_path / "missing.yaml"
    assert main(["run", str(missing)]) == 2
    data = tmp_path / "data.yaml"
    data.write_text(f"data:\n  data_dir: {tmp_path / 'nowhere'}\n", encoding="utf-8")
    assert main(["run", str(data), "--out", str(tmp_path / "out")]) == 2
    assert "not found" in capsys.readouterr().err


def test_cli_report_command(interrupted_then_resumed, tmp_path, capsys):
    _, out, _, _, _, _ = interrupted_then_resumed
    assert main(["report", str(out / "results.jsonl"), "--out", str(tmp_path / "r")]) == 0
    printed = capsys.readouterr().out
    assert "| dense | dense |" in printed and (tmp_path / "r" / "results.csv").is_file()
