"""``robustprune eval``: a checkpoint written by ``robustprune prune`` (either format) evaluated by the sweep's
own evaluation, against a baseline with paired tests; bad input ends in one line."""

from __future__ import annotations

import json
import re

import pytest
import torch
import transformers

from robustprune.cli import main
from robustprune.data.bundled import SENTIMENT_DIR
from robustprune.data.datasets import load_glue_tsv
from robustprune.eval.classifier import TextClassifier, evaluate_classifier
from robustprune.experiments.evaluate_model import paired_comparison
from robustprune.sparse_ops.pretrained import load_pretrained
from tests.experiments.test_prune_model import word_tokenizer


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    """A tiny random-weight BERT sequence classifier with a word-level tokenizer over the embedded set."""
    directory = tmp_path_factory.mktemp("classifier") / "bert"
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=256, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=130, num_labels=2)).eval()
    model.save_pretrained(directory)
    texts = load_glue_tsv(SENTIMENT_DIR / "train.tsv").texts
    word_tokenizer(texts, 256).save_pretrained(directory)
    return directory


def command(capsys, *argv):
    status = main([*map(str, argv), "--no-progress"])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_sparse_and_dense_pruned_checkpoints_evaluate_identically(classifier_dir, tmp_path, capsys):
    for output_format in ("dense", "sparse"):
        status, _, stderr = command(capsys, "prune", classifier_dir, "--method", "magnitude", "--sparsity", 0.5,
                                    "--format", output_format, "--out", tmp_path / output_format)
        assert status == 0, stderr
    records = {}
    for output_format in ("dense", "sparse"):
        out = tmp_path / f"eval-{output_format}"
        status, stdout, stderr = command(capsys, "eval", tmp_path / output_format, "--data", "embedded",
                                         "--max-examples", 24, "--attacks", "deepwordbug", "--shifts", "char_swap",
                                         "--baseline", classifier_dir, "--out", out)
        assert status == 0, stderr
        assert "attack deepwordbug: Clean%" in stdout and "3 paired tests, Holm" in stdout
        records[output_format] = json.loads((out / "results.json").read_text())
        predictions = json.loads((out / "predictions.json").read_text())
        assert len(predictions["clean"]["predictions"]) == 24
        assert (out / "attack_examples.json").is_file()
    dense, sparse = records["dense"], records["sparse"]
    assert dense["clean"] == sparse["clean"] and dense["shifts"] == sparse["shifts"]
    assert dense["attacks"]["deepwordbug"]["metrics"]["accuracy_under_attack"] == \
        sparse["attacks"]["deepwordbug"]["metrics"]["accuracy_under_attack"]
    # the clean accuracy is the package's own evaluation of the loaded model, with its Wilson interval
    model = load_pretrained(tmp_path / "sparse")
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "sparse")
    subset = load_glue_tsv(SENTIMENT_DIR / "dev.tsv").subset(range(24))
    expected = evaluate_classifier(TextClassifier(model, tokenizer, max_length=128), subset)
    assert sparse["clean"]["accuracy"] == pytest.approx(expected.accuracy)
    low, high = sparse["clean"]["accuracy_interval"]
    assert 0 <= low <= expected.accuracy <= high <= 100
    comparison = sparse["comparison"]
    assert comparison["tests"] == 3 and set(comparison["sets"]) == {"clean", "shift:char_swap", "attack:deepwordbug"}
    clean = comparison["sets"]["clean"]
    assert clean["baseline_accuracy"] == pytest.approx(sparse["baseline"]["clean"]["accuracy"])


def test_paired_comparison_exact_mcnemar_and_holm():
    model = {"a": [True] * 6 + [False] * 94, "b": [True] * 50 + [False] * 50}
    baseline = {"a": [False] * 6 + [True] * 1 + [False] * 93, "b": [True] * 50 + [False] * 50}
    result = paired_comparison(model, baseline)
    a = result["sets"]["a"]
    assert (a["model_only_correct"], a["baseline_only_correct"]) == (6, 1)
    assert a["mcnemar_p"] == pytest.approx(0.125)  # two-sided exact: 2 * P(X >= 6 | n=7, 1/2) = 2 * 8/128
    assert a["mcnemar_p_holm"] == pytest.approx(0.25)  # two tests
    assert result["sets"]["b"]["mcnemar_p"] == 1.0 and result["sets"]["b"]["mcnemar_p_holm"] == 1.0
    low, high = a["difference_interval"]
    assert a["difference"] == pytest.approx(5.0) and low <= 5.0 <= high


def test_bad_input_is_one_line(classifier_dir, tmp_path, capsys):
    headless = tmp_path / "headless"
    transformers.BertModel(transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1,
                                                   num_attention_heads=4, intermediate_size=64)).save_pretrained(headless)
    capsys.readouterr()
    cases = [
        ([headless, "--data", "embedded"], "is a BertModel .*not a sequence classifier"),
        ([classifier_dir, "--data", tmp_path / "nothing"], "--data: no such directory or file"),
        ([classifier_dir, "--data", "embedded", "--attacks", "nosuch"], "--attacks"),
        ([classifier_dir, "--data", "embedded", "--max-examples", 0], "--max-examples must be a positive integer"),
    ]
    for argv, message in cases:
        status, _, stderr = command(capsys, "eval", *argv)
        lines = stderr.strip().splitlines()
        assert status == 2 and len(lines) == 1 and lines[0].startswith("robustprune eval: "), stderr
        assert re.search(message, lines[0]), (message, lines[0])


def test_csv_and_jsonl_data_give_the_tsv_result(classifier_dir, tmp_path, capsys):
    dev = load_glue_tsv(SENTIMENT_DIR / "dev.tsv").subset(range(12))
    tsv = tmp_path / "dev.tsv"
    tsv.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in zip(dev.texts, dev.labels)),
                   encoding="utf-8")
    csv_file = tmp_path / "dev.csv"
    csv_file.write_text("label,text\n" + "".join(f'{y},"{t}"\n' for t, y in zip(dev.texts, dev.labels)),
                        encoding="utf-8")
    jsonl = tmp_path / "dev.jsonl"
    jsonl.write_text("".join(json.dumps({"sentence": t, "label": y}) + "\n" for t, y in zip(dev.texts, dev.labels)),
                     encoding="utf-8")
    accuracies = []
    for data in (tsv, csv_file, jsonl):
        status, _, stderr = command(capsys, "eval", classifier_dir, "--data", data, "--out", tmp_path / data.suffix[1:])
        assert status == 0, stderr
        record = json.loads((tmp_path / data.suffix[1:] / "results.json").read_text())
        assert record["examples"] == 12
        accuracies.append(record["clean"])
    assert accuracies[0] == accuracies[1] == accuracies[2]
