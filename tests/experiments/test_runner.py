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
    assert dense["finetune_seconds"] > 0.5  # the dense fine-tuning, kept in the checkpoint across the resume
    assert all(r["finetune_seconds"] == 0.0 for r in records.values() if r["method"] != "dense")
    # the dense record is the checkpointed fine-tuned model's accuracy on the configured evaluation set
    from safetensors.torch import load_file

    from robustprune.eval.classifier import TextClassifier, evaluate_classifier
    from robustprune.experiments.methods import load_sweep_classifier
    from robustprune.experiments.runner import load_sweep_data

    config = reduced_config()
    data = load_sweep_data(config)
    model, tokenizer = load_sweep_classifier(config, 2, seed=0)
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
    # the attack subset is drawn once per run (evaluation.subset_seed) and is the same at every point
    from robustprune.experiments.points import seeded_order

    drawn = sorted(seeded_order(24, config.evaluation.subset_seed)[:3])
    assert all(r["attacks"]["deepwordbug"]["example_indices"] == drawn for r in records.values())
    examples = list((out / "examples").glob("*.json"))
    assert len(examples) == len(records)
    for path in examples:  # the attacked texts are exactly the recorded examples
        attacked = [e["original"] for e in json.loads(path.read_text())["deepwordbug"]]
        assert attacked == [data.evaluation.texts[i] for i in drawn]
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
    with pytest.raises(ValueError, match="line 2 is not valid JSON .*repair or delete that line"):
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


def test_keys_keep_full_precision():
    from robustprune.experiments.results import point_key

    assert point_key(0, "magnitude", "unstructured", 0.12341) != point_key(0, "magnitude", "unstructured", 0.12344)
    assert point_key(0, "imp", "unstructured", 1 - 0.8**5).endswith("sparsity=0.6723199999999999")  # exact
    assert point_key(0, "magnitude", "unstructured", 0.5).endswith("sparsity=0.5")


def test_one_run_per_output_folder(interrupted_then_resumed, tmp_path):
    import os

    from robustprune.experiments.results import OutputLockedError, lock_output

    config, out, _, _, _, _ = interrupted_then_resumed
    before = (out / "results.jsonl").read_bytes()
    with lock_output(out):  # as if another run were writing the folder
        with pytest.raises(OutputLockedError, match=f"in use by another run \\(pid {os.getpid()} on "):
            run_experiment(config, out, progress=False)
    assert (out / "results.jsonl").read_bytes() == before
    assert not (out / ".lock.holder.json").exists()  # released with the lock
    assert run_experiment(config, out, progress=False).computed == []  # free again


def test_a_changed_config_is_refused_and_a_grown_sweep_reuses_points(interrupted_then_resumed, tmp_path):
    import shutil

    from robustprune.experiments.results import ResultsMismatchError

    config, out, _, _, _, _ = interrupted_then_resumed
    copy_dir = tmp_path / "copy"
    shutil.copytree(out, copy_dir)
    before = (copy_dir / "results.jsonl").read_bytes()
    config_json = (copy_dir / "config.json").read_bytes()
    raw = config.to_dict()
    raw["finetune"]["lr"] = 3e-4
    with pytest.raises(ResultsMismatchError, match="holds results of another config .* new output folder"):
        run_experiment(parse_config(raw), copy_dir, progress=False)
    assert (copy_dir / "results.jsonl").read_bytes() == before
    assert (copy_dir / "config.json").read_bytes() == config_json  # not overwritten by the refused config
    grown = config.to_dict()
    grown["pruning"]["methods"] = ["magnitude"]
    grown["pruning"]["sparsities"] = [0.5, 0.7]
    summary = run_experiment(parse_config(grown), copy_dir, progress=False)
    assert summary.computed == ["seed=0|method=magnitude|pattern=unstructured|sparsity=0.7"]
    assert len(summary.skipped) == 3  # dense, magnitude 0.5 and 2:4 came from the first run


def test_report_refuses_mixed_configs_and_duplicate_points(interrupted_then_resumed, tmp_path):
    from robustprune.experiments.results import ResultsMismatchError

    _, out, _, _, _, _ = interrupted_then_resumed
    lines = (out / "results.jsonl").read_text().splitlines()
    duplicated = tmp_path / "dup" / "results.jsonl"
    duplicated.parent.mkdir()
    duplicated.write_text("\n".join(lines + lines[:1]) + "\n")
    with pytest.raises(ResultsMismatchError, match="records the point seed=0\\|method=dense.* twice"):
        build_report(duplicated)
    mixed = tmp_path / "mixed" / "results.jsonl"
    mixed.parent.mkdir()
    other = json.loads(lines[1])
    other["fingerprint"] = "0123456789abcdef"
    mixed.write_text("\n".join(lines + [json.dumps(other)]) + "\n")
    with pytest.raises(ResultsMismatchError, match="2 different configs"):
        build_report(mixed)
    for bad in (float("nan"), 0.0, -1.0):
        with pytest.raises(ValueError, match="epsilon must be a finite number"):
            build_report(out / "results.jsonl", tmp_path / "eps", epsilon=bad)
    assert not (tmp_path / "dup" / "report").exists() and not (tmp_path / "eps").exists()


def test_unwritable_output_is_refused_before_any_work(tmp_path):
    config = reduced_config()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(PermissionError, match="cannot create or lock the output folder .*a-file"):
        run_experiment(config, blocker / "out", progress=False)
    out = tmp_path / "out"
    (out / "results.jsonl").mkdir(parents=True)  # cannot be appended to (works even for root)
    with pytest.raises(PermissionError, match="cannot write the results file"):
        run_experiment(config, out, progress=False)
    assert not (out / "checkpoints").exists()  # refused before fine-tuning


def test_cli_errors_are_one_line(interrupted_then_resumed, tmp_path, capsys):
    _, out, _, _, _, _ = interrupted_then_resumed
    bad_model = tmp_path / "model.yaml"
    bad_model.write_text("model: {name: /no/such/model/dir}\ndata: {max_train_examples: 8}\n", encoding="utf-8")
    assert main(["run", str(bad_model), "--out", str(tmp_path / "m"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and _error_line(err).startswith(
        "robustprune run: 1 resource(s) missing, nothing was run: model '/no/such/model/dir' (needed by model.name)")
    assert not (tmp_path / "m").exists()
    assert _error_line(err).endswith("(--debug for the traceback)")

    torn = tmp_path / "torn" / "results.jsonl"
    torn.parent.mkdir()
    lines = (out / "results.jsonl").read_text().splitlines()
    torn.write_text("\n".join([lines[0], lines[1][:40], lines[2]]) + "\n")
    assert main(["report", str(torn)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "line 2 is not valid JSON" in _error_line(err)

    empty = tmp_path / "empty" / "results.jsonl"
    empty.parent.mkdir()
    empty.write_text("")
    assert main(["report", str(empty)]) == 2
    assert "holds no finished points" in capsys.readouterr().err

    assert main(["report", str(torn), "--debug"]) == 2
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_cli_names_a_truncated_checkpoint_and_the_fix(interrupted_then_resumed, tmp_path, capsys):
    import shutil

    config, out, _, _, _, _ = interrupted_then_resumed
    copy_dir = tmp_path / "copy"
    shutil.copytree(out, copy_dir)
    checkpoint = next((copy_dir / "checkpoints").glob("dense-*.safetensors"))
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    (copy_dir / "results.jsonl").write_text("")  # every point to redo, so the checkpoint is needed
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_dict()), encoding="utf-8")
    assert main(["run", str(path), "--out", str(copy_dir), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"checkpoint {checkpoint} is unreadable" in _error_line(err)
    assert "delete it" in _error_line(err)


def _error_line(err: str) -> str:
    """The last line on stderr (transformers may have drawn its own progress bars before it)."""
    return err.strip().splitlines()[-1]


def test_robust_subset_is_seeded_and_attack_subsets_are_nested(tmp_path):
    from robustprune.experiments.runner import load_sweep_data

    adv = tmp_path / "adv.json"
    adv.write_text(json.dumps({"sst2": [{"idx": i, "label": i % 2, "sentence": f"sentence number {i}"}
                                        for i in range(30)]}), encoding="utf-8")
    raw = reduced_config().to_dict()
    raw["data"].update(robust_set=str(adv), max_robust_examples=7)
    data = load_sweep_data(parse_config(raw))
    again = load_sweep_data(parse_config(raw))
    assert len(data.robust) == 7 and data.robust_indices == again.robust_indices
    assert data.robust.texts == [f"sentence number {i}" for i in data.robust_indices]
    assert data.robust_indices == sorted(data.robust_indices) and data.robust_indices != list(range(7))
    small, large = data.attack_indices(5), data.attack_indices(12)
    assert set(small) <= set(large) and len(large) == 12
    raw["evaluation"]["subset_seed"] = 1
    other = load_sweep_data(parse_config(raw))
    assert other.robust_indices != data.robust_indices and other.attack_indices(12) != large


def test_every_accuracy_can_be_redone_from_the_per_example_files(interrupted_then_resumed):
    _, out, _, _, _, _ = interrupted_then_resumed
    for record in ResultsFile(out / "results.jsonl").records():
        files = record["files"]
        assert set(files) == {"predictions", "examples"}
        per_example = json.loads((out / files["predictions"]).read_text())
        for name, result in [("clean", record["clean"]), ("char_swap", record["shifts"]["char_swap"])]:
            entry = per_example["clean"] if name == "clean" else per_example["shifts"][name]
            assert len(entry["predictions"]) == len(entry["labels"]) == result["n"] == 24
            correct = sum(p == y for p, y in zip(entry["predictions"], entry["labels"]))
            assert 100.0 * correct / result["n"] == pytest.approx(result["accuracy"])
        attacked = per_example["attacks"]["deepwordbug"]
        metrics = record["attacks"]["deepwordbug"]["metrics"]
        assert attacked["indices"] == record["attacks"]["deepwordbug"]["example_indices"]
        assert attacked["status"].count("failed") == metrics["failed"] and len(attacked["queries"]) == 3
        assert sum(attacked["queries"][i] for i, s in enumerate(attacked["status"]) if s != "skipped") == \
            pytest.approx(metrics["avg_queries"] * (3 - metrics["skipped"]))


def _wilson(correct: int, n: int) -> tuple[float, float]:
    """The 95 % Wilson score interval in percent, from its closed form (not the function under test)."""
    from statistics import NormalDist

    z, p = NormalDist().inv_cdf(0.975), correct / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
    return 100 * (center - half), 100 * (center + half)


def test_report_gives_wilson_intervals(interrupted_then_resumed, tmp_path):
    import csv

    _, out, _, _, _, _ = interrupted_then_resumed
    report = build_report(out / "results.jsonl", tmp_path / "r")
    rows = list(csv.DictReader(report.results_csv.read_text().splitlines()))
    dense = next(r for r in rows if r["method"] == "dense")
    record = next(r for r in ResultsFile(out / "results.jsonl").records() if r["method"] == "dense")
    low, high = _wilson(round(record["clean"]["accuracy"] * 24 / 100), 24)
    assert float(dense["clean acc 95% low"]) == pytest.approx(low, abs=0.006)
    assert float(dense["clean acc 95% high"]) == pytest.approx(high, abs=0.006)
    assert dense["clean acc sd over seeds"] == ""  # one seed
    failed = record["attacks"]["deepwordbug"]["metrics"]["failed"]
    assert float(dense["deepwordbug Aua% 95% high"]) == pytest.approx(_wilson(failed, 3)[1], abs=0.006)
    assert f"[{low:.1f}, {high:.1f}]" in report.results_md.read_text()
    assert "Wilson" in report.analysis_md.read_text()
    lines = list(csv.DictReader(report.analysis_csv.read_text().splitlines()))
    assert [line["method"] for line in lines] == ["magnitude", "sparsegpt", "wanda"]
    for line in lines:  # the paired tests read the per-example files
        assert line["ES (clean, paired test)"] != "" and line["ES (clean) 95% interval"].startswith("[")
        assert line["ES_robust (deepwordbug Aua%, paired test)"] != ""


def test_seeds_pool_their_examples_and_report_their_spread():
    import statistics

    from robustprune.experiments.report import aggregate

    def record(seed, accuracy, n):
        return {"key": f"seed={seed}|dense", "method": "dense", "pattern": "dense", "sparsity": 0.0,
                "clean": {"accuracy": accuracy, "f1": accuracy, "n": n, "majority_rate": 50.0,
                          "prediction_balance": {"0": 0.5, "1": 0.5}}}

    (row,), _ = aggregate([record(0, 80.0, 200), record(1, 85.0, 200), record(2, 90.0, 200)])
    assert row.seeds == 3 and row.metrics["clean_accuracy"] == pytest.approx(85.0)
    assert row.spread["clean_accuracy"] == pytest.approx(statistics.stdev([80.0, 85.0, 90.0]))
    assert row.intervals["clean_accuracy"] == pytest.approx(_wilson(160 + 170 + 180, 600))
    assert row.intervals["clean_accuracy"] == pytest.approx((81.9206, 87.6340), abs=1e-3)  # 510 of 600
    legacy = record(0, 80.0, 200)
    del legacy["clean"]["n"]  # written before records carried n: no interval, nothing invented
    (old,), _ = aggregate([legacy])
    assert "clean_accuracy" not in old.intervals and old.metrics["clean_accuracy"] == 80.0


def test_collapse_is_judged_per_evaluated_set(tmp_path):
    """A point that puts 95 % of the robust set's predictions in one class is collapsed there (its robust
    accuracy rises toward chance, the AdvGLUE trap) though not on the clean set: ES_robust and Spearman on
    the robust set leave it out and say so."""
    def record(sparsity, clean, robust, robust_top):
        method = "dense" if sparsity == 0 else "magnitude"
        return {"key": f"{method}|{sparsity}", "fingerprint": "f", "method": method,
                "pattern": "dense" if sparsity == 0 else "unstructured", "sparsity": sparsity,
                "clean": {"accuracy": clean, "f1": clean, "n": 200, "majority_rate": 50.0,
                          "prediction_balance": {"0": 0.5, "1": 0.5}},
                "robust_set": {"accuracy": robust, "f1": robust, "n": 100, "majority_rate": 60.0,
                               "prediction_balance": {"0": robust_top, "1": 1 - robust_top}}}

    results = tmp_path / "results.jsonl"
    results.write_text("\n".join(json.dumps(r) for r in [
        record(0.0, 90.0, 30.0, 0.5), record(0.3, 89.5, 29.5, 0.55), record(0.5, 88.0, 30.0, 0.6),
        record(0.7, 80.0, 58.0, 0.95)]) + "\n")
    report = build_report(results, tmp_path / "r", plots=False)
    table = report.results_md.read_text()
    assert "| magnitude | unstructured | 0.70 |" in table and "| robust set |" in table.split("0.70")[1]
    assert table.count("| no |") == 3
    import csv

    (line,) = list(csv.DictReader(report.analysis_csv.read_text().splitlines()))
    assert line["collapsed on clean"] == "0"
    assert line["excluded as collapsed (robust set acc)"] == "1"
    assert line["ES_robust (robust set acc)"] == "0.50"  # 0.7 left out, not read as a robustness gain


def test_spearman_p_is_holm_adjusted_over_every_spearman_test_in_the_table(tmp_path):
    """Each method's Spearman test of clean vs robust is one of a family: the Holm column adjusts the raw
    permutation p-values over all of them, so a sweep of many methods and shifts claims no correlation by
    multiplicity alone."""
    import csv

    from robustprune.eval.analysis import holm

    def record(method, sparsity, clean, robust):
        entry = {"accuracy": clean, "f1": clean, "n": 200, "majority_rate": 50.0,
                 "prediction_balance": {"0": 0.5, "1": 0.5}}
        return {"key": f"{method}|{sparsity}", "fingerprint": "f", "method": method,
                "pattern": "dense" if method == "dense" else "unstructured", "sparsity": sparsity,
                "clean": entry, "robust_set": {**entry, "accuracy": robust}}

    sparsities = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
    clean = (89.0, 88.0, 86.0, 83.0, 79.0, 74.0)
    records = [record("dense", 0.0, 90.0, 40.0)]
    records += [record("tracking", s, c, c - 50.0) for s, c in zip(sparsities, clean)]  # rho = 1
    records += [record("scrambled", s, c, r) for s, c, r in zip(sparsities, clean, (31, 39, 33, 36, 30, 38))]
    (tmp_path / "results.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    report = build_report(tmp_path / "results.jsonl", tmp_path / "r", plots=False)
    lines = list(csv.DictReader(report.analysis_csv.read_text().splitlines()))
    raw = [float(line["Spearman p (robust set acc, permutation)"]) for line in lines]
    adjusted = [float(line["Spearman p (robust set acc, Holm)"]) for line in lines]
    assert adjusted == pytest.approx(holm(raw), abs=1e-4)
    tracking = next(line for line in lines if line["method"] == "tracking")
    assert float(tracking["Spearman clean vs robust set acc"]) == pytest.approx(1.0)
    # the smallest of two p-values is doubled: rho = 1 over 7 points has exact p = 2/7! = 1/2520
    assert float(tracking["Spearman p (robust set acc, Holm)"]) == pytest.approx(2 / 2520, abs=1e-4)
    assert "Holm-adjusted over all the Spearman" in report.analysis_md.read_text()


def write_point_record(folder, labels, method, pattern, sparsity, clean_right, robust_right):
    """A results record whose clean and robust-set accuracies come from per-example correctness vectors, its
    predictions file written under ``folder`` (what a sweep writes, made by hand for the report tests)."""
    key = f"{method}|{pattern}|{sparsity}"
    predictions = {name: {"predictions": [y if ok else 1 - y for y, ok in zip(labels, vector)], "labels": labels}
                   for name, vector in (("clean", clean_right), ("robust_set", robust_right))}
    path = folder / "predictions" / f"{key.replace('|', '_')}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(predictions))
    entry = {"accuracy": 100.0 * clean_right.mean(), "f1": 0.0, "n": len(labels), "majority_rate": 50.0,
             "prediction_balance": {"0": 0.5, "1": 0.5}}
    return {"key": key, "fingerprint": "f", "seed": 0, "method": method, "pattern": pattern,
            "sparsity": sparsity, "clean": entry, "robust_set": {**entry, "accuracy": 100.0 * robust_right.mean()},
            "files": {"predictions": f"predictions/{path.name}"}}


def flipped(right, gained, lost):
    """A copy of the correctness vector ``right`` with its first ``gained`` wrong answers made right and its
    first ``lost`` right answers made wrong: the discordant pairs of a McNemar test against ``right``."""
    import numpy as np

    out = right.copy()
    out[np.flatnonzero(~right)[:gained]] = True
    out[np.flatnonzero(right)[:lost]] = False
    return out


def test_analysis_says_in_words_what_the_paired_tests_support(tmp_path):
    import numpy as np

    n = 400
    labels = [i % 2 for i in range(n)]
    dense_right = np.arange(n) % 5 != 0  # 80 %

    def write(method, pattern, sparsity, right, robust_right):
        return write_point_record(tmp_path, labels, method, pattern, sparsity, right, robust_right)

    def worse(count):
        right = dense_right.copy()
        right[np.flatnonzero(right)[:count]] = False
        return right

    robust_dense = np.arange(n) % 4 == 0  # 25 %: below chance, as adversarial sets are
    robust_better = robust_dense.copy()
    robust_better[np.flatnonzero(~robust_dense)[:60]] = True  # +15 points, predictions still balanced
    records = [write("dense", "dense", 0.0, dense_right, robust_dense)]
    for sparsity in (0.3, 0.5, 0.7):
        records.append(write("steady", "unstructured", sparsity, dense_right, robust_dense))
        records.append(write("fragile", "unstructured", sparsity, worse(80), robust_better))
    (tmp_path / "results.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    text = build_report(tmp_path / "results.jsonl", plots=False).analysis_md.read_text()
    assert "steady keeps clean accuracy to a significantly higher sparsity than fragile" in text
    assert "fragile: robust set acc rises significantly above the dense model's 25.0 at sparsity 0.30 (40.0)" in text
    assert "steady: robust set acc never rises significantly" in text


def test_analysis_counts_the_per_point_tests_and_says_which_survive_holm(tmp_path):
    """Three robust-set gains on 100 examples, each against the dense model on the same examples: 6 vs 0
    discordant pairs (exact one-sided McNemar p = 1/64), 5 vs 0 (1/32) and 6 vs 1 (8/128 = 0.0625). Alone,
    the first two are below 5 %; Holm over the three (3 * 1/64 = 0.047; 2 * 1/32 = 0.0625; 0.0625) keeps
    only the first. Clean accuracy is unchanged: three tests, p = 1, none survives."""
    import numpy as np

    n = 100
    labels = [i % 2 for i in range(n)]
    clean_right = np.arange(n) % 5 != 0
    robust_dense = np.arange(n) % 4 == 0  # 25 %

    def changed(gained, lost):
        right = robust_dense.copy()
        right[np.flatnonzero(~robust_dense)[:gained]] = True
        right[np.flatnonzero(robust_dense)[:lost]] = False
        return right

    def write(method, pattern, sparsity, robust_right):
        return write_point_record(tmp_path, labels, method, pattern, sparsity, clean_right, robust_right)

    records = [write("dense", "dense", 0.0, robust_dense), write("omp", "unstructured", 0.3, changed(6, 0)),
               write("omp", "unstructured", 0.5, changed(5, 0)), write("omp", "unstructured", 0.7, changed(6, 1))]
    (tmp_path / "results.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    text = build_report(tmp_path / "results.jsonl", plots=False).analysis_md.read_text()
    assert "- clean acc: 3 tests, 0 survive Holm at 0.05.\n" in text
    assert "- robust set acc: 3 tests, 1 survives Holm at 0.05: omp 0.30.\n" in text
    table = {(cells[0], cells[2]): cells[3:] for cells in
             ([c.strip() for c in line.strip("|").split("|")] for line in text.splitlines())
             if len(cells) == 8 and cells[1] == "omp"}
    expected = {"0.30": (0, 6, 1 / 64, 3 / 64, "yes"), "0.50": (0, 5, 1 / 32, 2 / 32, "no"),
                "0.70": (1, 6, 8 / 128, 8 / 128, "no")}
    for sparsity, (lost, gained, p, adjusted, survives) in expected.items():
        cells = table[("robust set acc", sparsity)]
        assert (int(cells[0]), int(cells[1]), cells[4]) == (lost, gained, survives)
        assert float(cells[2]) == pytest.approx(p, rel=1e-3) and float(cells[3]) == pytest.approx(adjusted, rel=1e-3)
        assert table[("clean acc", sparsity)] == ["0", "0", "1", "1", "no"]
    assert ("omp: robust set acc rises significantly above the dense model's 25.0 at sparsity 0.30 (31.0), at "
            "points not collapsed on that set (exact McNemar, one-sided, Holm over the 3 tests of robust set acc)") in text


def test_each_method_is_tested_against_random_pruning_at_the_same_sparsity_and_pattern(tmp_path):
    """The control: on a robust set where the dense model scores 25 %, random pruning drifts toward chance
    (35 %) and so does every method; only a gain over random pruning at the same pattern and sparsity counts.
    By hand, on 100 examples: omp 0.50 vs random 0.50: 8 gained, 0 lost (one-sided p = 1/256); omp 2:4 vs
    random 2:4: 6 vs 0 (1/64); wanda 0.50 vs random 0.50: 5 vs 1 (7/64). Holm over the three: 3/256, 2/64,
    7/64: omp survives at both, wanda does not. omp 0.30 has no random point: not tested; random 0.70 has no
    partner. Clean accuracy is not a control metric."""
    import numpy as np
    from scipy.stats import binomtest

    n = 100
    labels = [i % 2 for i in range(n)]
    clean_right = np.arange(n) % 5 != 0
    robust_dense = np.arange(n) % 4 == 0  # 25 %: below chance
    robust_random = robust_dense.copy()
    robust_random[np.flatnonzero(~robust_dense)[:10]] = True  # 35 %: drift toward chance

    def against_random(gained, lost):
        return flipped(robust_random, gained, lost)

    def write(method, pattern, sparsity, robust_right):
        return write_point_record(tmp_path, labels, method, pattern, sparsity, clean_right, robust_right)

    records = [write("dense", "dense", 0.0, robust_dense),
               write("random", "unstructured", 0.5, robust_random), write("random", "2:4", 0.5, robust_random),
               write("random", "unstructured", 0.7, robust_random),
               write("omp", "unstructured", 0.3, against_random(9, 0)),
               write("omp", "unstructured", 0.5, against_random(8, 0)), write("omp", "2:4", 0.5, against_random(6, 0)),
               write("wanda", "unstructured", 0.5, against_random(5, 1))]
    (tmp_path / "results.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    text = build_report(tmp_path / "results.jsonl", plots=False).analysis_md.read_text()
    p = {"omp 0.5": binomtest(8, 8, 0.5, "greater").pvalue, "omp 2:4": binomtest(6, 6, 0.5, "greater").pvalue,
         "wanda 0.5": binomtest(5, 6, 0.5, "greater").pvalue}
    assert p == pytest.approx({"omp 0.5": 1 / 256, "omp 2:4": 1 / 64, "wanda 0.5": 7 / 64})
    holm = {"omp 0.5": 3 * p["omp 0.5"], "omp 2:4": max(3 * p["omp 0.5"], 2 * p["omp 2:4"]),
            "wanda 0.5": max(2 * p["omp 2:4"], p["wanda 0.5"])}
    assert ("- robust set acc vs random pruning: 3 tests, 2 survive Holm at 0.05: omp 0.50, omp 2:4 (0.50).\n"
            in text)
    rows = {(cells[1], cells[2], cells[3]): cells[4:] for cells in
            ([c.strip() for c in line.strip("|").split("|")]
             for line in text.split("Against random pruning")[1].splitlines()) if len(cells) == 12}
    assert set(rows) == {("method", "pattern", "sparsity"), ("---", "---", "---"), ("omp", "unstructured", "0.50"),
                         ("omp", "2:4", "0.50"), ("wanda", "unstructured", "0.50")}
    for (method, pattern), (lost, gained, key, survives) in {
            ("omp", "unstructured"): (0, 8, "omp 0.5", "yes"), ("omp", "2:4"): (0, 6, "omp 2:4", "yes"),
            ("wanda", "unstructured"): (1, 5, "wanda 0.5", "no")}.items():
        cells = rows[(method, pattern, "0.50")]
        assert (int(cells[2]), int(cells[3]), cells[6]) == (lost, gained, survives)
        assert float(cells[4]) == pytest.approx(p[key], rel=1e-3)
        assert float(cells[5]) == pytest.approx(holm[key], rel=1e-3)
        assert float(cells[1]) == 35.0  # random's accuracy on the same examples
    assert "omp: robust set acc is significantly above random pruning's at the same sparsity and pattern at 0.50 " \
           "(43.0 vs 35.0), 2:4 (0.50) (41.0 vs 35.0)" in text
    assert "wanda: robust set acc is never significantly above random pruning's" in text


def test_compared_methods_are_tested_point_by_point(tmp_path):
    """The papers' own comparisons as tests, two-sided, one Holm family per metric. Shin et al.'s Section 6:
    each ``wanda@adv`` point against plain ``wanda`` (calibrated on the sweep's own source); Jaiswal et al.'s
    Figure 9: ``imp`` against OMP (``magnitude``). By hand, on 100 robust-set examples: wanda@adv at 0.50
    gains 8 and loses 0 (p = 2/256), at 0.70 gains 1 and loses 1 (p = 1); imp at 0.50 gains 2, loses 0
    against magnitude (p = 2/4 = 0.5). Holm over the three: 6/256 survives, 1 and 1 do not. Clean
    predictions are identical (p = 1 three times). wanda@adv at 0.90 has no plain partner, magnitude 0.70 no
    imp: not tested; the dense model, plain wanda and magnitude are never the first of a pair."""
    import numpy as np

    n = 100
    labels = [i % 2 for i in range(n)]
    clean_right = np.arange(n) % 5 != 0
    plain_robust = np.arange(n) % 4 == 0

    def changed(gained, lost):
        return flipped(plain_robust, gained, lost)

    def write(method, pattern, sparsity, robust_right):
        return write_point_record(tmp_path, labels, method, pattern, sparsity, clean_right, robust_right)

    records = [write("dense", "dense", 0.0, plain_robust),
               write("wanda", "unstructured", 0.5, plain_robust), write("wanda", "unstructured", 0.7, plain_robust),
               write("wanda@adv", "unstructured", 0.5, changed(8, 0)),
               write("wanda@adv", "unstructured", 0.7, changed(1, 1)),
               write("wanda@adv", "unstructured", 0.9, changed(3, 0)),
               write("magnitude", "unstructured", 0.5, plain_robust),
               write("magnitude", "unstructured", 0.7, plain_robust),
               write("imp", "unstructured", 0.5, changed(2, 0))]
    (tmp_path / "results.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    text = build_report(tmp_path / "results.jsonl", plots=False).analysis_md.read_text()
    section = text.split("Methods compared")[1]
    assert "- clean acc between methods: 3 tests, 0 survive Holm at 0.05.\n" in section
    assert ("- robust set acc between methods: 3 tests, 1 survives Holm at 0.05: wanda@adv vs wanda 0.50.\n"
            in section)
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| robust set acc |")]
    assert sorted((r[1], r[3], r[4], r[5], r[6], r[7]) for r in rows) == [
        ("imp vs magnitude", "0.50", "27.0", "25.0", "0", "2"),
        ("wanda@adv vs wanda", "0.50", "33.0", "25.0", "0", "8"),
        ("wanda@adv vs wanda", "0.70", "25.0", "25.0", "1", "1")]
    p = {(r[1], r[3]): (float(r[8]), float(r[9])) for r in rows}
    assert p[("wanda@adv vs wanda", "0.50")] == pytest.approx((2 / 256, 6 / 256), rel=1e-3)
    assert p[("imp vs magnitude", "0.50")] == pytest.approx((0.5, 1.0), rel=1e-3)
    assert p[("wanda@adv vs wanda", "0.70")] == pytest.approx((1.0, 1.0), rel=1e-3)
    assert ("wanda@adv vs wanda: robust set acc differs significantly at 0.50 (33.0 vs 25.0); at the other 1 of 2 "
            "points it does not (exact McNemar, two-sided, Holm over the 3 comparisons of robust set acc)." in text)
    assert "imp vs magnitude: clean acc never differs significantly at the same sparsity and pattern (1 point;" in text


def test_models_are_tested_against_their_dense_baselines(tmp_path):
    """Xi et al.'s Table 1 as tests: adversarial training (PGD, FreeLB: two points of ``adversarial``) against
    plain fine-tuning, and the EarlyRobust ticket against all three, model against model whatever their
    sparsity: 5 comparisons per metric, two-sided. By hand, on 100 robust-set examples: PGD equals the dense
    model (p = 1), FreeLB gains 6 (p = 2/64), EarlyRobust loses 3 against both (p = 2/8) and 9 against FreeLB
    (p = 2/512); Holm over the five: only 10/512 survives."""
    import numpy as np

    n = 100
    labels = [i % 2 for i in range(n)]
    clean_right = np.arange(n) % 5 != 0
    dense_robust = np.arange(n) % 4 == 0
    records = [write_point_record(tmp_path, labels, method, pattern, sparsity, clean_right, robust)
               for method, pattern, sparsity, robust in (
                   ("dense", "dense", 0.0, dense_robust), ("adversarial", "pgd", 0.0, dense_robust),
                   ("adversarial", "freelb", 0.0, flipped(dense_robust, 6, 0)),
                   ("early_robust", "heads=0.2+neurons=0.3", 0.25, flipped(dense_robust, 0, 3)))]
    (tmp_path / "results.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    text = build_report(tmp_path / "results.jsonl", plots=False).analysis_md.read_text()
    assert ("- robust set acc between methods: 5 tests, 1 survives Holm at 0.05: early_robust vs adversarial "
            "(freelb).\n" in text)
    rows = {r[1]: r for r in ([c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
                              if line.startswith("| robust set acc |") and " vs " in line)}
    assert set(rows) == {"adversarial (pgd) vs dense", "adversarial (freelb) vs dense", "early_robust vs dense",
                         "early_robust vs adversarial (pgd)", "early_robust vs adversarial (freelb)"}
    assert float(rows["early_robust vs adversarial (freelb)"][9]) == pytest.approx(10 / 512, rel=1e-3)
    assert ("early_robust vs adversarial (freelb): robust set acc differs significantly (22.0 vs 31.0; exact "
            "McNemar, two-sided, Holm over the 5 comparisons of robust set acc)." in text)
    assert "adversarial (pgd) vs dense: robust set acc does not differ significantly (25.0 vs 25.0;" in text
