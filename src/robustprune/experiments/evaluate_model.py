"""``robustprune eval``: the sweep's evaluation of one sequence-classification checkpoint (any directory
:func:`robustprune.sparse_ops.pretrained.load_pretrained` reads, including one written by ``robustprune prune``
in either format), optionally compared example by example with a baseline checkpoint.

The evaluation is the sweep runner's own (the same clean / robust-set / attack / shift code, the same seeded
attack subsets); this module turns the command's flags into that configuration, adds Wilson intervals, and
with a baseline runs paired tests on the same examples: the exact McNemar test on the discordant examples
and the paired-bootstrap 95 % interval of the accuracy difference, Holm-corrected over the tests made
(the sweep report's own tests, :mod:`robustprune.eval.analysis`).
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from robustprune.data.bundled import bundled_data_dir
from robustprune.data.datasets import TextDataset, load_csv, load_glue_task, load_glue_tsv, load_jsonl
from robustprune.data.texts import read_utf8
from robustprune.eval.analysis import holm, mcnemar_exact, wilson_interval
from robustprune.experiments.config import ConfigError, parse_config
from robustprune.sparse_ops.pretrained import load_pretrained

_FLAGS = {"data.robust_set": "--robust-set", "data.max_eval_examples": "--max-examples",
          "evaluation.attacks": "--attacks", "evaluation.shifts": "--shifts", "evaluation": "--data/--attacks"}


def _flag_error(error: ConfigError) -> ValueError:
    message = str(error)
    for key, flag in _FLAGS.items():
        message = re.sub(rf"config key '{re.escape(key)}[^']*'", flag, message)
    return ValueError(message)


def _load_classifier(source: str, device: str | None, what: str) -> tuple[nn.Module, Any]:
    from transformers import AutoTokenizer

    model = load_pretrained(source, device=device)
    num_labels = getattr(model.config, "num_labels", None)
    if not type(model).__name__.endswith("ForSequenceClassification"):
        raise ValueError(f"{what} {source} is a {type(model).__name__} ({model.config.model_type}), not a sequence "
                         "classifier: robustprune eval needs a checkpoint with its classification head "
                         f"(num_labels={num_labels})")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise ValueError(f"{what} {source} has no usable tokenizer: {error}") from None
    return model, tokenizer


def _text_field(names: list[str], data: str) -> str:
    for name in ("sentence", "text"):
        if name in names:
            return name
    raise ValueError(f"--data {data}: no 'sentence' or 'text' column/field (it has {names})")


def _evaluation_set(data: str, task: str, split: str) -> TextDataset:
    path = Path(data)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".csv":
            header = next(csv.reader(io.StringIO(read_utf8(path))), [])
            return load_csv(path, _text_field(header, data), "label")
        if suffix == ".jsonl":
            first = next((line for line in read_utf8(path).split("\n") if line.strip()), "{}")
            try:
                fields = sorted(json.loads(first))
            except (json.JSONDecodeError, TypeError):
                raise ValueError(f"--data {data}: the first line is not a JSON object") from None
            return load_jsonl(path, _text_field(fields, data), "label")
        return load_glue_tsv(path)
    directory = bundled_data_dir(data)
    if not directory.is_dir():
        raise FileNotFoundError(f"--data: no such directory or file {data!r} (give a GLUE-format directory, a "
                                "GLUE-format .tsv file, or a shipped set: embedded, sst2-sample)")
    return load_glue_task(directory, task, split)


def _with_intervals(record: dict[str, Any]) -> dict[str, Any]:
    """Wilson 95 % intervals beside every accuracy that has its ``n``."""
    def add(entry: dict[str, Any]) -> None:
        n = entry.get("n")
        if isinstance(n, int) and n > 0 and "accuracy" in entry:
            entry["accuracy_interval"] = list(wilson_interval(round(entry["accuracy"] * n / 100), n))

    for key in ("clean", "robust_set"):
        if key in record:
            add(record[key])
    for entry in record.get("shifts", {}).values():
        add(entry)
    return record


def _correct_vectors(predictions: dict[str, Any]) -> dict[str, list[bool]]:
    """Per evaluated set, whether each example came out right (attacks: the attack failed)."""
    vectors = {}
    for key in ("clean", "robust_set"):
        if key in predictions:
            vectors[key] = [p == y for p, y in zip(predictions[key]["predictions"], predictions[key]["labels"])]
    for name, entry in predictions.get("shifts", {}).items():
        vectors[f"shift:{name}"] = [p == y for p, y in zip(entry["predictions"], entry["labels"])]
    for recipe, entry in predictions.get("attacks", {}).items():
        vectors[f"attack:{recipe}"] = [status == "failed" for status in entry["status"]]
    return vectors


def paired_comparison(model_correct: dict[str, list[bool]], baseline_correct: dict[str, list[bool]],
                      resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Paired tests of a model against a baseline on the same examples, per evaluated set.

    Per set: both accuracies, their difference (model - baseline, points), the discordant counts, the
    exact two-sided McNemar p-value (:func:`robustprune.eval.analysis.mcnemar_exact`), its Holm-adjusted
    value over all sets tested (:func:`robustprune.eval.analysis.holm`), and the paired-bootstrap 95 %
    interval of the difference (``resamples`` resamples of the examples, the same for both models).
    """
    import numpy as np

    tests: dict[str, Any] = {}
    rng = np.random.default_rng(seed)
    for key, model_vector in model_correct.items():
        if key not in baseline_correct:
            continue
        a = np.asarray(model_vector, dtype=bool)
        b = np.asarray(baseline_correct[key], dtype=bool)
        if a.size != b.size or a.size == 0:
            raise ValueError(f"{key}: the model was evaluated on {a.size} examples, the baseline on {b.size}")
        test = mcnemar_exact(b, a)  # "dense" = the baseline: gained = right only for the model
        index = rng.integers(0, a.size, size=(resamples, a.size))
        differences = 100.0 * (a[index].mean(axis=1) - b[index].mean(axis=1))
        low, high = np.quantile(differences, [0.025, 0.975])
        tests[key] = {"n": int(a.size), "accuracy": 100.0 * float(a.mean()),
                      "baseline_accuracy": 100.0 * float(b.mean()), "difference": 100.0 * float(a.mean() - b.mean()),
                      "model_only_correct": test.gained, "baseline_only_correct": test.lost,
                      "mcnemar_p": test.pvalue, "difference_interval": [float(low), float(high)]}
    for key, adjusted in zip(tests, holm([t["mcnemar_p"] for t in tests.values()])):
        tests[key]["mcnemar_p_holm"] = adjusted
    return {"tests": len(tests), "correction": "holm", "sets": tests}


def evaluate_pretrained(model: str, *, data: str, task: str = "sst2", split: str = "dev",
                        attacks: list[str] | None = None, robust_set: str | None = None,
                        shifts: list[str] | None = None, max_examples: int | None = None,
                        device: str | None = None, out: str | Path | None = None, baseline: str | None = None,
                        seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Evaluate a sequence-classification checkpoint as a sweep point is evaluated (what ``robustprune eval``
    runs) and return the record; with ``out``, also write ``results.json`` (the record), ``predictions.json``
    (per example) and, with attacks, ``attack_examples.json``.

    Args:
        model: a checkpoint directory (dense, ``robustprune prune`` sparse, compressed-tensors) or Hub name.
        data: a GLUE-format directory, a GLUE-format ``.tsv`` file, a ``.csv`` / ``.jsonl`` file with a
            ``sentence`` (or ``text``) and a ``label`` column / field, or ``embedded`` / ``sst2-sample``.
        task, split: the GLUE task and split read from a directory.
        attacks: recipes (``textfooler``, ``pwws``, ``textbugger``, ``deepwordbug``); each attacks the first
            ``max_examples`` of a seeded order of the evaluation set (all of it without ``max_examples``).
        robust_set: an AdvGLUE-style JSON file (or the shipped ``sst2-adv-sample``) evaluated as an extra set.
        shifts: distribution shifts by name (``char_swap``, ``eda``, ``wordnet``, ``embedding_swap``,
            ``deletion``, ``back_translation``, ``clare``), each at its defaults.
        max_examples: evaluate (and attack) at most this many examples, the first ones of the set.
        device: where the model runs (``auto``, ``cpu``, ``cuda``, ``cuda:N``); None: where it loads (the CPU).
        baseline: a second checkpoint evaluated on the same examples; the record gains ``comparison``
            (:func:`paired_comparison`).
        seed: the seed of the attack subsets.

    Raises:
        ValueError / FileNotFoundError: bad input, named by its command-line flag.
    """
    from robustprune.experiments.points import Evaluator, SweepData, seeded_order

    if max_examples is not None and (isinstance(max_examples, bool) or not isinstance(max_examples, int)
                                     or max_examples < 1):
        raise ValueError(f"--max-examples must be a positive integer, got {max_examples!r}")
    evaluation = _evaluation_set(data, task, split)
    if max_examples is not None:
        evaluation = evaluation.subset(range(min(len(evaluation), max_examples)))
    raw = {"data": {"task": task, "robust_set": robust_set},
           "evaluation": {"attacks": [{"recipe": recipe, "max_examples": len(evaluation)} for recipe in attacks or []],
                          "shifts": list(shifts or []), "subset_seed": seed}}
    try:
        config = parse_config(raw)
    except ConfigError as error:
        raise _flag_error(error) from None
    config = replace(config, model=replace(config.model, name=str(model)))
    robust = None
    if robust_set is not None:
        from robustprune.data.bundled import robust_set_file
        from robustprune.data.datasets import load_advglue_json

        robust = load_advglue_json(robust_set_file(robust_set), task)
    sweep = SweepData(evaluation, evaluation, robust, seeded_order(len(evaluation), seed),
                      list(range(len(robust))) if robust is not None else None)
    evaluator = Evaluator(config, sweep, progress)
    if device is not None:
        from robustprune.devices import use_device

        device = str(use_device(device, where="--device"))
    loaded, tokenizer = _load_classifier(str(model), device, "MODEL")
    record, predictions, examples = evaluator.evaluate(loaded, tokenizer)
    record = {"model": str(model), "data": str(data), "task": task, "split": split, "examples": len(evaluation),
              **_with_intervals(record)}
    if baseline is not None:
        base_model, base_tokenizer = _load_classifier(str(baseline), device, "--baseline")
        base_record, base_predictions, _ = evaluator.evaluate(base_model, base_tokenizer)
        record["baseline"] = {"model": str(baseline), **_with_intervals(base_record)}
        record["comparison"] = paired_comparison(_correct_vectors(predictions), _correct_vectors(base_predictions),
                                                 seed=seed)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        (out / "predictions.json").write_text(json.dumps(predictions) + "\n", encoding="utf-8")
        if examples:
            (out / "attack_examples.json").write_text(json.dumps(examples) + "\n", encoding="utf-8")
    return record


def format_record(record: dict[str, Any]) -> str:
    """The record as a few plain-text lines (what ``robustprune eval`` prints)."""
    lines = [(f"{record['model']} on {record['data']} ({record['task']} {record['split']}, {record['examples']} "
              "examples)")]

    def accuracy(name: str, entry: dict[str, Any]) -> str:
        low, high = entry.get("accuracy_interval", [float("nan")] * 2)
        return (f"  {name}: accuracy {entry['accuracy']:.2f} [{low:.2f}, {high:.2f}] (n={entry['n']}), "
                f"F1 {entry['f1']:.2f}")

    for key in ("clean", "robust_set"):
        if key in record:
            lines.append(accuracy(key, record[key]))
    for name, entry in record.get("shifts", {}).items():
        lines.append(accuracy(f"shift {name}", entry))
    for recipe, entry in record.get("attacks", {}).items():
        m = entry["metrics"]
        lines.append(f"  attack {recipe}: Clean% {m['clean_accuracy']:.1f}, Aua% {m['accuracy_under_attack']:.1f}, "
                     f"Suc% {m['success_rate']:.1f}, #Query {m['avg_queries']:.1f} ({m['examples']} examples)")
    comparison = record.get("comparison")
    if comparison:
        lines.append(f"  vs baseline {record['baseline']['model']} ({comparison['tests']} paired tests, Holm):")
        for key, test in comparison["sets"].items():
            low, high = test["difference_interval"]
            lines.append(f"    {key}: {test['accuracy']:.2f} vs {test['baseline_accuracy']:.2f} "
                         f"({test['difference']:+.2f} [{low:+.2f}, {high:+.2f}]), McNemar p={test['mcnemar_p']:.3g} "
                         f"(Holm {test['mcnemar_p_holm']:.3g}; {test['model_only_correct']} vs "
                         f"{test['baseline_only_correct']} discordant)")
    return "\n".join(lines)


__all__ = ["evaluate_pretrained", "format_record", "paired_comparison"]
