"""Dataset loaders: real GLUE SST-2 files, and small files of every format and every error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from robustprune.data.datasets import (
    GLUE_TASKS,
    TextDataset,
    load_advglue_json,
    load_csv,
    load_glue_task,
    load_glue_tsv,
    load_hf_dataset,
    load_jsonl,
    save_advglue_json,
    task_spec,
)
from robustprune.data.texts import read_text_lines
from tests.conftest import SST2_DIR


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------
# GLUE TSV


def test_real_sst2_dev_and_train():
    dev = load_glue_task(SST2_DIR.parent, "sst2", "dev")  # a GLUE root holding sst2/
    assert len(dev) == 872 and not dev.is_pair and dev.num_labels == 2
    assert dev.label_names == ["negative", "positive"]
    assert dev.texts[0] == "it 's a charming and often affecting journey ."
    assert dev.labels[:2] == [1, 0]
    assert 0.45 < sum(dev.labels) / len(dev) < 0.56  # SST-2 dev is close to balanced
    same = load_glue_tsv(SST2_DIR / "dev.tsv")
    assert same.texts == dev.texts and same.labels == dev.labels
    train = load_glue_task(SST2_DIR, "SST-2", "train")  # the task's own folder works too
    assert len(train) == 3_000 and set(train.labels) == {0, 1}  # the repository's sample of 67,349


def test_glue_task_specs():
    assert set(GLUE_TASKS) == {"cola", "sst2", "mrpc", "qqp", "mnli", "qnli", "rte", "wnli"}
    assert GLUE_TASKS["mnli"].num_labels == 3 and GLUE_TASKS["mnli"].is_pair
    assert GLUE_TASKS["cola"].metric == "mcc" and GLUE_TASKS["mrpc"].metric == "f1"
    assert GLUE_TASKS["qqp"].metric == "f1" and GLUE_TASKS["rte"].metric == "accuracy"
    assert task_spec("MNLI-MM") is GLUE_TASKS["mnli"] and task_spec("SST-2") is GLUE_TASKS["sst2"]
    with pytest.raises(ValueError, match="regression"):
        task_spec("stsb")
    with pytest.raises(ValueError, match="known tasks"):
        task_spec("squad")


def test_glue_pair_tasks_with_string_labels(tmp_path):
    header = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
              "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n")
    rows = ["0\t1\t1n\tfiction\t(x)\t(y)\t(x)\t(y)\tA man sleeps.\tA person rests.\tentailment\tentailment",
            "1\t2\t2c\tfiction\t(x)\t(y)\t(x)\t(y)\tA man sleeps.\tA man runs.\tcontradiction\tcontradiction",
            "2\t3\t3n\tfiction\t(x)\t(y)\t(x)\t(y)\tA man sleeps.\tHe is tired.\tneutral\tneutral"]
    _write(tmp_path / "MNLI" / "dev_matched.tsv", header + "\n".join(rows) + "\n")
    mnli = load_glue_task(tmp_path, "mnli", "dev_matched")
    assert mnli.inputs()[1] == ("A man sleeps.", "A man runs.")
    assert mnli.labels == [0, 2, 1] and mnli.num_labels == 3
    assert mnli.label_names == ["entailment", "neutral", "contradiction"]
    _write(tmp_path / "RTE" / "dev.tsv",
           "index\tsentence1\tsentence2\tlabel\n0\tA b.\tC d.\tnot_entailment\n")
    assert load_glue_task(tmp_path, "rte").labels == [1]


def test_cola_has_no_header(tmp_path):
    _write(tmp_path / "CoLA" / "train.tsv", "gj04\t1\t\tOur friends won't buy this analysis.\n"
                                            "gj04\t0\t*\tThey drank the pub.\n")
    cola = load_glue_task(tmp_path, "cola", "train")
    assert cola.texts == ["Our friends won't buy this analysis.", "They drank the pub."]
    assert cola.labels == [1, 0] and cola.label_names == ["unacceptable", "acceptable"]


def test_glue_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_glue_tsv(tmp_path / "nope.tsv")
    with pytest.raises(ValueError, match="is empty"):
        load_glue_tsv(_write(tmp_path / "empty.tsv", ""))
    with pytest.raises(ValueError, match="no examples"):
        load_glue_tsv(_write(tmp_path / "header.tsv", "sentence\tlabel\n"))
    with pytest.raises(ValueError, match=r"column\(s\) \['label'\] not in the header "
                                         r"\['sentence', 'score'\]"):
        load_glue_tsv(_write(tmp_path / "cols.tsv", "sentence\tscore\nfine\t1\n"))
    with pytest.raises(ValueError, match="line 3: 1 field"):
        load_glue_tsv(_write(tmp_path / "short.tsv", "sentence\tlabel\nfine\t1\nbroken\n"))
    with pytest.raises(ValueError, match=r"line 2: label 'positive' is not an integer; "
                                         r"labels found: \['negative', 'positive'\]"):
        load_glue_tsv(_write(tmp_path / "names.tsv", "sentence\tlabel\nfine\tpositive\nbad\tnegative\n"))
    with pytest.raises(ValueError, match=r"labels \[3\] outside \[0, 2\)"):
        load_glue_tsv(_write(tmp_path / "range.tsv", "sentence\tlabel\nfine\t1\nodd\t3\n"), num_labels=2)
    with pytest.raises(ValueError, match="negative labels"):
        load_glue_tsv(_write(tmp_path / "neg.tsv", "sentence\tlabel\nfine\t-1\n"))
    with pytest.raises(ValueError, match="not in label_map"):
        load_glue_tsv(tmp_path / "names.tsv", label_map={"positive": 1})
    with pytest.raises(ValueError, match="no labels"):
        load_glue_task(tmp_path, "sst2", "test")
    with pytest.raises(ValueError, match=r"\['dev_matched', 'dev_mismatched', 'train'\]"):
        load_glue_task(tmp_path, "mnli", "dev")
    with pytest.raises(FileNotFoundError, match="tried"):
        load_glue_task(tmp_path, "qnli", "dev")


def test_glue_label_map_gives_names(tmp_path):
    data = load_glue_tsv(_write(tmp_path / "names.tsv", "sentence\tlabel\nfine\tpositive\nbad\tnegative\n"),
                         label_map={"negative": 0, "positive": 1})
    assert data.labels == [1, 0] and data.label_names == ["negative", "positive"]


# ---------------------------------------------------------------------------------------------------
# AdvGLUE JSON

ADVGLUE = {
    "sst2": [{"idx": 0, "label": 0, "sentence": "it 's an uneasy mis-mash of styles .",
              "method": "TextBugger", "data_construction": "word"},
             {"idx": 1, "label": 1, "sentence": "a gorgeous , witty film ."}],
    "qqp": [{"idx": 0, "label": 1, "question1": "How do I learn?", "question2": "How can I learn?"}],
    "mnli": [{"idx": 0, "label": 2, "premise": "A man sleeps.", "hypothesis": "A man runs."}],
    "mnli-mm": [{"idx": 5, "label": 1, "premise": "A dog barks.", "hypothesis": "It is loud."}],
    "qnli": [{"idx": 0, "label": 0, "question": "Who won?", "sentence": "Ann won."}],
    "rte": [{"idx": 0, "label": 1, "sentence1": "Cats purr.", "sentence2": "Dogs purr."}],
}


@pytest.fixture()
def advglue_file(tmp_path) -> Path:
    return _write(tmp_path / "dev.json", json.dumps(ADVGLUE, indent=1))


def test_advglue_every_task(advglue_file):
    sst2 = load_advglue_json(advglue_file, "sst2")
    assert sst2.texts[1] == "a gorgeous , witty film ." and sst2.labels == [0, 1] and not sst2.is_pair
    assert sst2.meta == {"idx": [0, 1], "method": ["TextBugger", None], "data_construction": ["word", None]}
    assert load_advglue_json(advglue_file, "qqp").inputs() == [("How do I learn?", "How can I learn?")]
    mnli = load_advglue_json(advglue_file, "mnli")
    assert mnli.inputs() == [("A man sleeps.", "A man runs.")] and mnli.num_labels == 3 and mnli.labels == [2]
    mm = load_advglue_json(advglue_file, "mnli-mm")
    assert mm.num_labels == 3 and mm.meta["idx"] == [5]
    assert load_advglue_json(advglue_file, "qnli").inputs() == [("Who won?", "Ann won.")]
    assert load_advglue_json(advglue_file, "rte").inputs() == [("Cats purr.", "Dogs purr.")]


def test_advglue_written_and_read_back(tmp_path, advglue_file):
    loaded = {task: load_advglue_json(advglue_file, task) for task in ADVGLUE}
    path = save_advglue_json(loaded, tmp_path / "out.json")
    assert list(json.loads(path.read_text(encoding="utf-8"))) == list(ADVGLUE)  # every task, in order
    for task, dataset in loaded.items():
        again = load_advglue_json(path, task)
        assert (again.texts, again.text_pairs, again.labels, again.meta) == \
            (dataset.texts, dataset.text_pairs, dataset.labels, dataset.meta), task
    entry = json.loads(path.read_text(encoding="utf-8"))["qqp"][0]
    assert entry == {"question1": "How do I learn?", "question2": "How can I learn?", "label": 1, "idx": 0}
    single = TextDataset(["fine"], [1])
    with pytest.raises(ValueError, match="task 'qqp' holds sentence pairs"):
        save_advglue_json({"qqp": single}, tmp_path / "x.json")
    with pytest.raises(ValueError, match=r"meta column\(s\) \['label'\] would overwrite"):
        save_advglue_json({"sst2": TextDataset(["fine"], [1], meta={"label": [0]})}, tmp_path / "x.json")
    with pytest.raises(ValueError, match="no task to write"):
        save_advglue_json({}, tmp_path / "x.json")


def test_the_shipped_adversarial_set_is_real_attacks_on_sst2_dev():
    """sst2-adv-sample: every example is an SST-2 dev sentence changed by one of robustprune's attacks, with
    that sentence's own label (checked against the shipped dev split, not against the file's own claims)."""
    from robustprune.data.bundled import BUNDLED_ROBUST_SETS, robust_set_file

    path = robust_set_file("sst2-adv-sample")
    assert path == BUNDLED_ROBUST_SETS["sst2-adv-sample"][0] and path.is_file()
    assert (path.parent / "PROVENANCE.md").is_file()
    data = load_advglue_json(path, "sst2")
    dev = load_glue_task(SST2_DIR, "sst2", "dev")
    assert len(data) >= 100 and set(data.meta["method"]) <= {"textfooler", "textbugger", "pwws", "deepwordbug"}
    assert len(set(data.meta["idx"])) <= 100
    for text, label, idx, original in zip(data.texts, data.labels, data.meta["idx"], data.meta["original_sentence"]):
        assert dev.texts[idx] == original and dev.labels[idx] == label
        assert text != original
    assert len(set(zip(data.meta["idx"], data.meta["method"]))) == len(data)  # one example per sentence and attack
    assert robust_set_file("my/file.json") == Path("my/file.json")


def test_advglue_unknown_task_detects_fields(tmp_path):
    custom = {"paws": [{"label": 1, "sentence1": "a", "sentence2": "b"}]}
    path = _write(tmp_path / "custom.json", json.dumps(custom))
    assert load_advglue_json(path, "paws").inputs() == [("a", "b")]


def test_advglue_errors(tmp_path, advglue_file):
    with pytest.raises(FileNotFoundError):
        load_advglue_json(tmp_path / "none.json", "sst2")
    with pytest.raises(ValueError, match="is empty"):
        load_advglue_json(_write(tmp_path / "empty.json", "  \n"), "sst2")
    with pytest.raises(ValueError, match="line 2 column"):
        load_advglue_json(_write(tmp_path / "bad.json", '{"sst2": [\n  {"label": 1,, }]}'), "sst2")
    with pytest.raises(ValueError, match=r"task 'cola' not in .*tasks present: "
                                         r"\['mnli', 'mnli-mm', 'qnli', 'qqp', 'rte', 'sst2'\]"):
        load_advglue_json(advglue_file, "cola")
    broken = {"qqp": [{"idx": 0, "label": 1, "question1": "Why?", "q2": "How?"}]}
    with pytest.raises(ValueError, match=r"example 0: field\(s\) \['question2'\] missing; fields present: "
                                         r"\['idx', 'label', 'q2', 'question1'\]"):
        load_advglue_json(_write(tmp_path / "fields.json", json.dumps(broken)), "qqp")
    wide = {"sst2": [{"label": 2, "sentence": "x"}]}
    with pytest.raises(ValueError, match=r"labels \[2\] outside \[0, 2\)"):
        load_advglue_json(_write(tmp_path / "wide.json", json.dumps(wide)), "sst2")
    with pytest.raises(ValueError, match="JSON object keyed by task"):
        load_advglue_json(_write(tmp_path / "list.json", "[1, 2]"), "sst2")


# ---------------------------------------------------------------------------------------------------
# CSV and JSONL


def test_csv(tmp_path):
    path = _write(tmp_path / "reviews.csv", 'id,review,summary,stars\n1,"Great, really great",ok,pos\n'
                                           '2,"Dull ""film""",meh,neg\n')
    data = load_csv(path, "review", "stars", pair_column="summary", label_map={"neg": 0, "pos": 1})
    assert data.inputs() == [("Great, really great", "ok"), ('Dull "film"', "meh")]
    assert data.labels == [1, 0] and data.label_names == ["neg", "pos"]
    ints = load_csv(_write(tmp_path / "ints.csv", "text,label\na,0\nb,2\n"), "text", "label")
    assert ints.labels == [0, 2] and ints.num_labels == 3


def test_csv_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_csv(tmp_path / "none.csv", "text", "label")
    with pytest.raises(ValueError, match="is empty"):
        load_csv(_write(tmp_path / "empty.csv", ""), "text", "label")
    with pytest.raises(ValueError, match=r"\['label'\] not in the header \['text', 'y'\]"):
        load_csv(_write(tmp_path / "cols.csv", "text,y\na,1\n"), "text", "label")
    with pytest.raises(ValueError, match=r"line 2: label 'pos' is not an integer; "
                                         r"labels found: \['neg', 'pos'\]"):
        load_csv(_write(tmp_path / "str.csv", "text,label\na,pos\nb,neg\n"), "text", "label")
    with pytest.raises(ValueError, match="line 3: 3 field"):
        load_csv(_write(tmp_path / "ragged.csv", "text,label\na,1\nb,1,extra\n"), "text", "label")
    with pytest.raises(ValueError, match="no examples"):
        load_csv(_write(tmp_path / "header.csv", "text,label\n"), "text", "label")
    # an unterminated quote swallows the rest of the file: reported at the line where it opened
    with pytest.raises(ValueError, match=r"line 3: malformed CSV .* a quote opened on that line"):
        load_csv(_write(tmp_path / "quote.csv", 'text,label\na,1\n"b,1\nc,0\nd,1\n'), "text", "label")
    with pytest.raises(ValueError, match=r"line 3: 1 field\(s\), header has 2 .* runs to line 4: an unbalanced"):
        load_csv(_write(tmp_path / "spans.csv", 'text,label\na,1\n"b\nc"\nd,1\n'), "text", "label")


@pytest.mark.parametrize("loader, name, text", [
    (lambda p: load_glue_tsv(p), "bad.tsv", b"sentence\tlabel\ngood\t1\ncaf\xe9\t0\n"),
    (lambda p: load_csv(p, "text", "label"), "bad.csv", b"text,label\ngood,1\ncaf\xe9,0\n"),
    (lambda p: load_jsonl(p, "text", "label"), "bad.jsonl",
     b'{"text": "good", "label": 1}\n\n{"text": "caf\xe9", "label": 0}\n'),
    (lambda p: read_text_lines(p, column="sentence"), "lines.tsv", b"sentence\tlabel\nok\t1\ncaf\xe9\t0\n"),
])
def test_undecodable_bytes_name_the_file_and_line(tmp_path, loader, name, text):
    path = tmp_path / name
    path.write_bytes(text)
    with pytest.raises(ValueError, match=rf"{name}' line 3 column \d+: byte 0xe9 is not valid UTF-8"):
        loader(path)


def test_undecodable_advglue_names_the_file_and_line(tmp_path):
    path = tmp_path / "adv.json"
    path.write_bytes(b'{"sst2": [\n {"idx": 0, "label": 1, "sentence": "caf\xe9"}\n]}\n')
    with pytest.raises(ValueError, match=r"adv.json' line 2 column \d+: byte 0xe9 is not valid UTF-8"):
        load_advglue_json(path, "sst2")


def test_jsonl(tmp_path):
    lines = [{"q": "Is it?", "a": "Yes.", "y": "entail"}, {"q": "Why?", "a": "No.", "y": "not"}]
    path = _write(tmp_path / "pairs.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    data = load_jsonl(path, "q", "y", pair_field="a", label_map={"entail": 0, "not": 1})
    assert data.inputs() == [("Is it?", "Yes."), ("Why?", "No.")] and data.labels == [0, 1]
    ints = load_jsonl(_write(tmp_path / "ints.jsonl", '{"t": "a", "l": 1}\n{"t": "b", "l": "0"}\n'), "t", "l",
                      num_labels=4)
    assert ints.labels == [1, 0] and ints.num_labels == 4


def test_jsonl_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_jsonl(tmp_path / "none.jsonl", "t", "l")
    with pytest.raises(ValueError, match="is empty"):
        load_jsonl(_write(tmp_path / "empty.jsonl", "\n"), "t", "l")
    with pytest.raises(ValueError, match="line 2 column 11: invalid JSON"):
        load_jsonl(_write(tmp_path / "bad.jsonl", '{"t": "a", "l": 1}\n{"t": "b" "l": 0}\n'), "t", "l")
    with pytest.raises(ValueError, match=r"line 1: field\(s\) \['l'\] missing; "
                                         r"fields present: \['label', 't'\]"):
        load_jsonl(_write(tmp_path / "field.jsonl", '{"t": "a", "label": 1}\n'), "t", "l")
    with pytest.raises(ValueError, match="expected a JSON object"):
        load_jsonl(_write(tmp_path / "list.jsonl", "[1]\n"), "t", "l")
    with pytest.raises(ValueError, match=r"labels found: \['1.5', 'x'\]"):
        load_jsonl(_write(tmp_path / "float.jsonl", '{"t": "a", "l": 1.5}\n{"t": "b", "l": "x"}\n'), "t", "l")
    with pytest.raises(ValueError, match="'t' must be a string"):
        load_jsonl(_write(tmp_path / "num.jsonl", '{"t": 5, "l": 1}\n'), "t", "l")


# ---------------------------------------------------------------------------------------------------
# Hugging Face datasets (no network here: only the error paths are testable)


def test_hf_dataset_needs_package_or_network(monkeypatch):
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install datasets"):
            load_hf_dataset("glue", "validation", "sst2")
        return
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="could not load Hugging Face dataset 'robustprune/none'"):
        load_hf_dataset("robustprune/none", "validation")


def test_subset_keeps_meta(advglue_file):
    data = load_advglue_json(advglue_file, "sst2").subset([1])
    assert isinstance(data, TextDataset) and data.meta["idx"] == [1] and data.labels == [1]


def test_calibration_texts_reads_every_kind_of_source_and_names_who_asked(tmp_path):
    from robustprune.data.texts import calibration_texts, hub_dataset_spec

    shipped = calibration_texts("sst2-sample")
    assert shipped == read_text_lines(SST2_DIR / "train.tsv", column="sentence") and len(shipped) == 3000
    table = _write(tmp_path / "c.tsv", "id\ttext\n1\tone\n2\t \n3\tthree\n")
    lines = _write(tmp_path / "c.jsonl", '{"sentence": "a"}\n\n{"sentence": "b"}\n')
    plain = _write(tmp_path / "c.txt", "x\n\ny\n")
    assert [calibration_texts(str(p)) for p in (table, lines, plain)] == [["one", "three"], ["a", "b"], ["x", "y"]]
    with pytest.raises(FileNotFoundError, match=r"^pruning.calibration.source: no such file 'missing.txt'"):
        calibration_texts("missing.txt", where="pruning.calibration.source")
    with pytest.raises(ValueError, match=r"^--calibration c.tsv|has no text column"):
        calibration_texts(str(_write(tmp_path / "bad.tsv", "id\tlabel\n1\t0\n")))
    assert hub_dataset_spec("allenai/c4:en") == ("allenai/c4", "en")
    with pytest.raises(ValueError, match=r"^pruning.calibration 'c4:': a Hugging Face dataset is NAME"):
        hub_dataset_spec("c4:", where="pruning.calibration")
