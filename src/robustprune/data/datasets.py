"""Labelled text-classification data: one type for every source (GLUE TSV, AdvGLUE JSON, CSV, JSONL, HF).

:class:`TextDataset` holds single sentences (``text_pairs is None``) or sentence pairs, integer labels
``0..num_labels-1`` and optional per-example metadata (e.g. which attack made an adversarial example).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from robustprune.data.texts import read_utf8

ClassifierInput = str | tuple[str, str]


@dataclass(frozen=True)
class TextDataset:
    """A labelled text-classification set.

    Attributes:
        texts: the first (or only) sentence of every example.
        labels: integer class ids in ``range(num_labels)``.
        text_pairs: the second sentence of every example for pair tasks, else None.
        num_labels: number of classes (at least 2).
        name: where the data came from (file path or dataset name), for messages and reports.
        label_names: optional human-readable class names, ``len == num_labels``.
        meta: optional per-example metadata columns (e.g. ``{"method": [...]}``), each ``len == len(texts)``.
    """

    texts: list[str]
    labels: list[int]
    text_pairs: list[str] | None = None
    num_labels: int = 2
    name: str = ""
    label_names: list[str] | None = None
    meta: dict[str, list[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.texts)
        if len(self.labels) != n:
            raise ValueError(f"{self.name or 'dataset'}: {n} texts but {len(self.labels)} labels")
        if self.text_pairs is not None and len(self.text_pairs) != n:
            raise ValueError(f"{self.name or 'dataset'}: {n} texts but {len(self.text_pairs)} text_pairs")
        if self.num_labels < 2:
            raise ValueError(f"{self.name or 'dataset'}: num_labels must be >= 2, got {self.num_labels}")
        bad = [label for label in self.labels
               if not (isinstance(label, int) and 0 <= label < self.num_labels)]
        if bad:
            raise ValueError(f"{self.name or 'dataset'}: labels must be integers in [0, {self.num_labels}), "
                             f"found {bad[:5]}")
        if self.label_names is not None and len(self.label_names) != self.num_labels:
            raise ValueError(f"{self.name or 'dataset'}: {len(self.label_names)} label_names for "
                             f"{self.num_labels} labels")
        for key, column in self.meta.items():
            if len(column) != n:
                raise ValueError(f"{self.name or 'dataset'}: meta column {key!r} has {len(column)} values, "
                                 f"expected {n}")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def is_pair(self) -> bool:
        return self.text_pairs is not None

    def inputs(self) -> list[ClassifierInput]:
        """Classifier inputs: the sentences, or ``(first, second)`` tuples for pair tasks."""
        if self.text_pairs is None:
            return list(self.texts)
        return list(zip(self.texts, self.text_pairs))

    def subset(self, indices: Sequence[int]) -> TextDataset:
        """The examples at ``indices`` (in that order), metadata included."""
        pick = list(indices)
        return TextDataset(
            texts=[self.texts[i] for i in pick],
            labels=[self.labels[i] for i in pick],
            text_pairs=None if self.text_pairs is None else [self.text_pairs[i] for i in pick],
            num_labels=self.num_labels,
            name=self.name,
            label_names=self.label_names,
            meta={key: [column[i] for i in pick] for key, column in self.meta.items()},
        )


# ---------------------------------------------------------------------------------------------------
# GLUE task specifications


@dataclass(frozen=True)
class TaskSpec:
    """How one GLUE classification task is laid out on disk and scored.

    Attributes:
        name: task key (``"sst2"``, ``"mnli"``, ...).
        directory: the task's folder in the GLUE distribution (``"SST-2"``, ``"MNLI"``, ...).
        text_column / pair_column: TSV columns of the first and second sentence (pair None: single).
        label_column: TSV column of the label.
        label_names: class names; the index is the label id (Hugging Face ``glue`` order).
        metric: the task's headline GLUE metric: ``"accuracy"``, ``"f1"`` or ``"mcc"``.
        splits: split name -> TSV file name (labelled splits only).
        fields: field names of the first and second sentence in JSON sources (AdvGLUE, Hugging Face).
        label_map: TSV label strings -> ids, for tasks whose files hold names instead of numbers.
        columns: column names of a header-less TSV (CoLA), else None.
    """

    name: str
    directory: str
    text_column: str
    pair_column: str | None
    label_column: str
    label_names: tuple[str, ...]
    metric: str
    splits: Mapping[str, str]
    fields: tuple[str, str | None]
    label_map: Mapping[str, int] | None = None
    columns: tuple[str, ...] | None = None

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def is_pair(self) -> bool:
        return self.pair_column is not None


_TRAIN_DEV = {"train": "train.tsv", "dev": "dev.tsv"}
_NLI_LABELS = {"entailment": 0, "not_entailment": 1}

GLUE_TASKS: dict[str, TaskSpec] = {
    "cola": TaskSpec("cola", "CoLA", "sentence", None, "label", ("unacceptable", "acceptable"), "mcc",
                     _TRAIN_DEV, ("sentence", None),
                     columns=("source", "label", "original_label", "sentence")),
    "sst2": TaskSpec("sst2", "SST-2", "sentence", None, "label", ("negative", "positive"), "accuracy",
                     _TRAIN_DEV, ("sentence", None)),
    "mrpc": TaskSpec("mrpc", "MRPC", "#1 String", "#2 String", "Quality", ("not_equivalent", "equivalent"),
                     "f1", _TRAIN_DEV, ("sentence1", "sentence2")),
    "qqp": TaskSpec("qqp", "QQP", "question1", "question2", "is_duplicate", ("not_duplicate", "duplicate"),
                    "f1", _TRAIN_DEV, ("question1", "question2")),
    "mnli": TaskSpec("mnli", "MNLI", "sentence1", "sentence2", "gold_label",
                     ("entailment", "neutral", "contradiction"), "accuracy",
                     {"train": "train.tsv", "dev_matched": "dev_matched.tsv",
                      "dev_mismatched": "dev_mismatched.tsv"},
                     ("premise", "hypothesis"),
                     label_map={"entailment": 0, "neutral": 1, "contradiction": 2}),
    "qnli": TaskSpec("qnli", "QNLI", "question", "sentence", "label", ("entailment", "not_entailment"),
                     "accuracy", _TRAIN_DEV, ("question", "sentence"), label_map=_NLI_LABELS),
    "rte": TaskSpec("rte", "RTE", "sentence1", "sentence2", "label", ("entailment", "not_entailment"),
                    "accuracy", _TRAIN_DEV, ("sentence1", "sentence2"), label_map=_NLI_LABELS),
    "wnli": TaskSpec("wnli", "WNLI", "sentence1", "sentence2", "label", ("not_entailment", "entailment"),
                     "accuracy", _TRAIN_DEV, ("sentence1", "sentence2")),
}
# STS-B is left out on purpose: it is a regression task and TextDataset holds class labels.

# AdvGLUE names its MNLI mismatched set "mnli-mm"; the fields and labels are MNLI's.
_ADVGLUE_ALIASES = {"mnli-mm": "mnli", "mnli_mismatched": "mnli", "mnli-m": "mnli", "mnli_matched": "mnli"}
# Field conventions of GLUE-style JSON, tried in order for tasks without a spec.
_FIELD_CONVENTIONS = (("premise", "hypothesis"), ("question1", "question2"), ("question", "sentence"),
                      ("sentence1", "sentence2"), ("sentence", None))


def task_spec(task: str) -> TaskSpec:
    """The :data:`GLUE_TASKS` entry for ``task`` (case-insensitive; ``"sst-2"``, ``"mnli-mm"`` accepted)."""
    lowered = task.lower()
    key = _ADVGLUE_ALIASES.get(lowered, lowered.replace("-", ""))
    if key == "stsb":
        raise ValueError("task 'stsb' is a regression task; TextDataset holds class labels, so it is not "
                         "supported")
    if key not in GLUE_TASKS:
        raise ValueError(f"unknown GLUE task {task!r}; known tasks: {sorted(GLUE_TASKS)}")
    return GLUE_TASKS[key]


# ---------------------------------------------------------------------------------------------------
# labels


def _label_names_from_map(label_map: Mapping[str, int] | None) -> list[str] | None:
    """Class names when ``label_map`` is a one-to-one map onto ``0..n-1``."""
    if not label_map:
        return None
    ids = sorted(label_map.values())
    if ids != list(range(len(ids))):
        return None
    by_id = {v: k for k, v in label_map.items()}
    return [str(by_id[i]) for i in range(len(ids))]


def _check_label_map(label_map: Mapping[Any, int] | None) -> None:
    if label_map is None:
        return
    if not isinstance(label_map, Mapping) or not label_map:
        raise TypeError(f"label_map must be a non-empty mapping of raw label -> int id, got {label_map!r}")
    bad = {k: v for k, v in label_map.items() if not isinstance(v, int) or isinstance(v, bool) or v < 0}
    if bad:
        raise ValueError(f"label_map values must be non-negative ints, got {bad}")


def _as_int(raw: Any) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and re.fullmatch(r"\s*-?\d+\s*", raw):
        return int(raw)
    return None


def _convert_labels(raw: Sequence[Any], where: Sequence[str], label_map: Mapping[Any, int] | None,
                    source: str) -> list[int]:
    """Integer ids for raw labels; an error names the first bad location and lists the labels found."""
    if label_map is not None:
        out = []
        for value, at in zip(raw, where):
            key = value.strip() if isinstance(value, str) else value
            if key in label_map:
                out.append(label_map[key])
            elif str(key) in label_map:
                out.append(label_map[str(key)])
            else:
                unknown = sorted({str(v) for v in raw
                                  if v not in label_map and str(v).strip() not in label_map})
                raise ValueError(f"{source} {at}: label {value!r} is not in label_map (keys "
                                 f"{sorted(map(str, label_map))}); unmapped labels found: {unknown[:20]}")
        return out
    out = []
    for value, at in zip(raw, where):
        number = _as_int(value)
        if number is None:
            found = sorted({str(v) for v in raw})
            raise ValueError(f"{source} {at}: label {value!r} is not an integer; labels found: {found[:20]}"
                             f"{' ...' if len(found) > 20 else ''}. Pass label_map={{label: id, ...}}")
        out.append(number)
    return out


def _dataset(texts: list[str], pairs: list[str] | None, labels: list[int], source: str,
             num_labels: int | None, label_names: Sequence[str] | None,
             meta: dict[str, list[Any]] | None = None) -> TextDataset:
    if not texts:
        raise ValueError(f"{source} holds no examples")
    names = list(label_names) if label_names is not None else None
    if num_labels is None:
        num_labels = len(names) if names is not None else max(2, max(labels) + 1)
    negative = sorted({label for label in labels if label < 0})
    if negative:
        raise ValueError(f"{source}: negative labels {negative} (an unlabelled test split?); "
                         f"labels must be in [0, {num_labels})")
    outside = sorted({label for label in labels if label >= num_labels})
    if outside:
        raise ValueError(f"{source}: labels {outside[:10]} outside [0, {num_labels}) for "
                         f"num_labels={num_labels}")
    return TextDataset(texts=texts, labels=labels, text_pairs=pairs, num_labels=num_labels, name=source,
                       label_names=names, meta=meta or {})


def _text(value: Any, source: str, at: str, field_name: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{source} {at}: {field_name!r} must be a string, got "
                         f"{type(value).__name__} {value!r}")
    return value


def _existing_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {str(path)!r}")
    return path


# ---------------------------------------------------------------------------------------------------
# GLUE TSV


def load_glue_tsv(path: str | Path, text_column: str = "sentence", pair_column: str | None = None,
                  label_column: str = "label", num_labels: int | None = None, *,
                  label_map: Mapping[str, int] | None = None, label_names: Sequence[str] | None = None,
                  columns: Sequence[str] | None = None) -> TextDataset:
    """A GLUE-format TSV (e.g. SST-2's ``sentence<TAB>label``) as a :class:`TextDataset`.

    Fields are tab-separated with no quoting (as GLUE writes them). Labels are integers, or strings
    mapped through ``label_map`` (MNLI's ``entailment`` / ``neutral`` / ``contradiction``).

    Args:
        path: the TSV file.
        text_column, pair_column, label_column: column names (pair None for single-sentence tasks).
        num_labels: number of classes (default: ``len(label_names)``, else largest label + 1, at least 2).
        label_map: raw label string -> class id.
        label_names: class names (default: from a one-to-one ``label_map``).
        columns: column names for a header-less file (CoLA's ``source, label, original_label, sentence``);
            None when the first row is the header.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a named column is missing, a row has too few fields, a label is not an integer and
            not in ``label_map`` (the labels found are listed), a label is outside ``[0, num_labels)``,
            or the file has no examples.
    """
    path = _existing_file(path, "GLUE TSV file")
    _check_label_map(label_map)
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    texts, pairs, raw_labels, where = [], [], [], []
    with io.StringIO(read_utf8(path), newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = list(columns) if columns is not None else next(reader, None)
        if header is None:
            raise ValueError(f"{str(path)!r} is empty: expected a header row")
        wanted = [text_column, label_column] + ([pair_column] if pair_column else [])
        missing = [column for column in wanted if column not in header]
        if missing:
            raise ValueError(f"{str(path)!r}: column(s) {missing} not in the header {header}")
        at = {column: header.index(column) for column in wanted}
        needed = max(at.values()) + 1
        for row in reader:
            if not row:
                continue
            if len(row) < needed:
                raise ValueError(f"{str(path)!r} line {reader.line_num}: {len(row)} field(s), header has "
                                 f"{len(header)} ({header})")
            raw_labels.append(row[at[label_column]].strip())
            where.append(f"line {reader.line_num}")
            texts.append(row[at[text_column]])
            if pair_column:
                pairs.append(row[at[pair_column]])
    if not texts:
        raise ValueError(f"{str(path)!r} has {'a header but ' if columns is None else ''}no examples")
    labels = _convert_labels(raw_labels, where, label_map, repr(str(path)))
    return _dataset(texts, pairs if pair_column else None, labels, str(path), num_labels,
                    label_names if label_names is not None else _label_names_from_map(label_map))


def glue_task_file(data_dir: str | Path, task: str, split: str = "dev") -> Path:
    """The file :func:`load_glue_task` reads for ``task``'s ``split`` under ``data_dir`` (not read here).

    Raises:
        ValueError: ``split`` is not a labelled split of the task.
        FileNotFoundError: the directory or the file is missing (the message lists the places tried).
    """
    spec = task_spec(task)
    if split not in spec.splits:
        hint = " (GLUE test files carry no labels)" if split.startswith("test") else ""
        raise ValueError(f"split {split!r} is not a labelled split of {spec.name}{hint}; "
                         f"choose one of {sorted(spec.splits)}")
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"GLUE data directory not found: {str(root)!r}")
    file_name = spec.splits[split]
    tried = [root / file_name, root / spec.directory / file_name, root / spec.name / file_name]
    path = next((p for p in tried if p.is_file()), None)
    if path is None:
        raise FileNotFoundError(f"{spec.name} {split} file not found; tried {[str(p) for p in tried]}")
    return path


def load_glue_task(data_dir: str | Path, task: str, split: str = "dev") -> TextDataset:
    """One labelled split of a GLUE task from the standard GLUE distribution files.

    Args:
        data_dir: the GLUE root (holding ``SST-2/``, ``MNLI/``, ...), the task's own folder, or a
            folder named by the task key (``sst2/``).
        task: a key of :data:`GLUE_TASKS` (``"sst2"``, ``"mnli"``, ...; ``"SST-2"`` works too).
        split: ``"train"`` or ``"dev"`` (MNLI: ``"train"``, ``"dev_matched"``, ``"dev_mismatched"``).
            GLUE test files carry no labels and are not loadable.
    """
    spec = task_spec(task)
    path = glue_task_file(data_dir, task, split)
    dataset = load_glue_tsv(path, spec.text_column, spec.pair_column, spec.label_column, spec.num_labels,
                            label_map=spec.label_map, label_names=spec.label_names, columns=spec.columns)
    return replace(dataset, name=f"glue/{spec.name}/{split} ({path})")


HUB_PREFIX = "hub:"
_HUB_GLUE_SPLITS = {"dev": "validation", "dev_matched": "validation_matched", "dev_mismatched": "validation_mismatched"}


def hub_dataset_name(data_dir: str) -> str | None:
    """The Hugging Face dataset a ``data_dir`` of the form ``hub:NAME`` names, or None for any other source.

    Raises:
        ValueError: ``hub:`` with no name.
    """
    if not data_dir.startswith(HUB_PREFIX):
        return None
    name = data_dir[len(HUB_PREFIX):]
    if not name.strip():
        raise ValueError(f"{data_dir!r} names no dataset; a Hugging Face dataset is hub:NAME (e.g. hub:nyu-mll/glue)")
    return name


def load_task_split(data_dir: str, task: str, split: str = "dev") -> TextDataset:
    """One labelled split of a GLUE task wherever a sweep config's ``data.data_dir`` points: a bundled set
    (``embedded``, ``sst2-sample``), a GLUE-format folder (:func:`load_glue_task`), or ``hub:NAME``, the
    Hugging Face dataset ``NAME`` with the task as its config (``hub:nyu-mll/glue``: GLUE in full; the
    split names ``dev*`` are the Hub's ``validation*``; needs ``datasets`` and the Hub or its cache).
    """
    from robustprune.data.bundled import bundled_data_dir

    name = hub_dataset_name(data_dir)
    if name is None:
        return load_glue_task(bundled_data_dir(data_dir), task, split)
    spec = task_spec(task)
    dataset = load_hf_dataset(name, _HUB_GLUE_SPLITS.get(split, split), config=spec.name, num_labels=spec.num_labels)
    return replace(dataset, name=f"glue/{spec.name}/{split} ({data_dir})")


# ---------------------------------------------------------------------------------------------------
# AdvGLUE-style JSON


def _read_json(path: Path) -> Any:
    text = read_utf8(path)
    if not text.strip():
        raise ValueError(f"{str(path)!r} is empty: expected a JSON object keyed by task")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{str(path)!r} is not valid JSON: {e.msg} at line {e.lineno} "
                         f"column {e.colno}") from None


def load_advglue_json(path: str | Path, task: str) -> TextDataset:
    """One task of an AdvGLUE-style JSON file (``{"sst2": [{"idx": 0, "label": 1, "sentence": ...}], ...}``).

    Sentence fields by task: ``sentence`` (sst2), ``question1`` + ``question2`` (qqp), ``premise`` +
    ``hypothesis`` (mnli, mnli-mm), ``question`` + ``sentence`` (qnli), ``sentence1`` + ``sentence2``
    (rte and others). Tasks outside :data:`GLUE_TASKS` are read with whichever of these conventions
    their first example uses. Labels are integer ids in GLUE's order. Every other field of an example
    (``idx``, ``method``, ``data_construction``, ...) is kept in ``meta`` (None where an example lacks it).

    Raises:
        FileNotFoundError, ValueError: missing file, empty file, malformed JSON (line and column named),
            task not in the file (the tasks present are listed), a missing field (the fields present are
            listed), or labels outside the task's range.
    """
    path = _existing_file(path, "AdvGLUE JSON file")
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r}: expected a JSON object keyed by task, got a {type(data).__name__}")
    if task not in data:
        raise ValueError(f"task {task!r} not in {str(path)!r}; tasks present: {sorted(data)}")
    examples = data[task]
    source = f"{str(path)!r} task {task!r}"
    if not isinstance(examples, list) or not examples:
        raise ValueError(f"{source}: expected a non-empty list of examples")
    spec = None
    try:
        spec = task_spec(task)
    except ValueError:
        pass
    if spec is not None:
        text_field, pair_field = spec.fields
    else:
        first = examples[0] if isinstance(examples[0], dict) else {}
        text_field, pair_field = next(((a, b) for a, b in _FIELD_CONVENTIONS
                                       if a in first and (b is None or b in first)), ("sentence", None))
    wanted = [text_field, "label"] + ([pair_field] if pair_field else [])
    texts, pairs, raw_labels, where = [], [], [], []
    extra: dict[str, list[Any]] = {}
    for i, example in enumerate(examples):
        at = f"example {i}"
        if not isinstance(example, dict):
            raise ValueError(f"{source} {at}: expected an object, got {type(example).__name__}")
        missing = [name for name in wanted if name not in example]
        if missing:
            raise ValueError(f"{source} {at}: field(s) {missing} missing; fields present: {sorted(example)}")
        texts.append(_text(example[text_field], source, at, text_field))
        if pair_field:
            pairs.append(_text(example[pair_field], source, at, pair_field))
        raw_labels.append(example["label"])
        where.append(at)
        for key, value in example.items():
            if key not in wanted:
                extra.setdefault(key, [None] * i).append(value)
        for column in extra.values():
            if len(column) < i + 1:
                column.append(None)
    labels = _convert_labels(raw_labels, where, None, source)
    return _dataset(texts, pairs if pair_field else None, labels, f"{path}:{task}",
                    spec.num_labels if spec else None, spec.label_names if spec else None, meta=extra)


def advglue_entries(dataset: TextDataset, task: str) -> list[dict[str, Any]]:
    """``dataset`` as the example list of one task of an AdvGLUE-style JSON file, the inverse of
    :func:`load_advglue_json`: per example the task's sentence field(s) (``sentence`` for sst2,
    ``question1`` / ``question2`` for qqp, ...), ``label`` and every ``meta`` column (``idx``, ``method``,
    ...), in dataset order.

    Raises:
        ValueError: an unknown task, a pair task for single sentences (or the reverse), or a meta column named
            like a sentence field or ``label``.
    """
    spec = task_spec(task)
    text_field, pair_field = spec.fields
    if (pair_field is not None) != dataset.is_pair:
        raise ValueError(f"task {task!r} holds {'sentence pairs' if pair_field else 'single sentences'}, "
                         f"{dataset.name or 'the dataset'} {'pairs' if dataset.is_pair else 'single sentences'}")
    taken = {text_field, "label", *([pair_field] if pair_field else [])}
    clash = sorted(taken & set(dataset.meta))
    if clash:
        raise ValueError(f"meta column(s) {clash} would overwrite the example's own field(s)")
    entries = []
    for i in range(len(dataset)):
        entry: dict[str, Any] = {text_field: dataset.texts[i]}
        if pair_field is not None:
            entry[pair_field] = dataset.text_pairs[i]  # type: ignore[index]
        entry["label"] = dataset.labels[i]
        entry.update({key: column[i] for key, column in dataset.meta.items()})
        entries.append(entry)
    return entries


def save_advglue_json(datasets: Mapping[str, TextDataset], path: str | Path) -> Path:
    """Write ``{task: dataset}`` as an AdvGLUE-style JSON file (:func:`advglue_entries` per task) that
    :func:`load_advglue_json` reads back, UTF-8, one example per line for readable diffs.

    Raises:
        ValueError: as :func:`advglue_entries`, or no task given.
    """
    if not datasets:
        raise ValueError("no task to write: pass {task: dataset}")
    blocks = []
    for task, dataset in datasets.items():
        lines = [json.dumps(entry, ensure_ascii=False) for entry in advglue_entries(dataset, task)]
        blocks.append(f"{json.dumps(task)}: [\n  " + ",\n  ".join(lines) + "\n]")
    path = Path(path)
    path.write_text("{\n" + ",\n".join(blocks) + "\n}\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------
# CSV and JSONL


def load_csv(path: str | Path, text_column: str, label_column: str, pair_column: str | None = None,
             label_map: Mapping[str, int] | None = None, *, num_labels: int | None = None,
             label_names: Sequence[str] | None = None, delimiter: str = ",") -> TextDataset:
    """A CSV file with a header row (standard quoting) as a :class:`TextDataset`.

    Labels are integers, or strings mapped through ``label_map`` (an error lists the labels found
    otherwise). ``num_labels`` defaults to ``len(label_names)``, else the largest label + 1.
    """
    path = _existing_file(path, "CSV file")
    _check_label_map(label_map)
    texts, pairs, raw_labels, where = [], [], [], []
    reader = csv.reader(io.StringIO(read_utf8(path, "utf-8-sig"), newline=""), delimiter=delimiter, strict=True)
    header = None
    while True:
        start = reader.line_num + 1  # a quoted field may run over several lines: report where the row starts
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise ValueError(f"{str(path)!r} line {start}: malformed CSV ({e}); a quote opened on that line may "
                             "never be closed") from None
        if header is None:
            header = row
            wanted = [text_column, label_column] + ([pair_column] if pair_column else [])
            missing = [column for column in wanted if column not in header]
            if missing:
                raise ValueError(f"{str(path)!r}: column(s) {missing} not in the header {header}")
            at = {column: header.index(column) for column in wanted}
            continue
        if not row:
            continue
        if len(row) != len(header):
            spans = f" (the row runs to line {reader.line_num}: an unbalanced quote?)" if reader.line_num > start else ""
            raise ValueError(f"{str(path)!r} line {start}: {len(row)} field(s), header has {len(header)} "
                             f"({header}){spans}")
        texts.append(row[at[text_column]])
        if pair_column:
            pairs.append(row[at[pair_column]])
        raw_labels.append(row[at[label_column]])
        where.append(f"line {start}")
    if header is None:
        raise ValueError(f"{str(path)!r} is empty: expected a header row")
    if not texts:
        raise ValueError(f"{str(path)!r} has a header but no examples")
    labels = _convert_labels(raw_labels, where, label_map, repr(str(path)))
    return _dataset(texts, pairs if pair_column else None, labels, str(path), num_labels,
                    label_names if label_names is not None else _label_names_from_map(label_map))


def load_jsonl(path: str | Path, text_field: str, label_field: str, pair_field: str | None = None,
               label_map: Mapping[Any, int] | None = None, *, num_labels: int | None = None,
               label_names: Sequence[str] | None = None) -> TextDataset:
    """A JSON-lines file (one object per line; blank lines skipped) as a :class:`TextDataset`.

    Labels are integers (or integer strings), or any values mapped through ``label_map``.
    """
    path = _existing_file(path, "JSONL file")
    _check_label_map(label_map)
    source = repr(str(path))
    texts, pairs, raw_labels, where = [], [], [], []
    wanted = [text_field, label_field] + ([pair_field] if pair_field else [])
    with io.StringIO(read_utf8(path, "utf-8-sig")) as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            at = f"line {line_no}"
            try:
                example = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{source} {at} column {e.colno}: invalid JSON: {e.msg}") from None
            if not isinstance(example, dict):
                raise ValueError(f"{source} {at}: expected a JSON object, got {type(example).__name__}")
            missing = [name for name in wanted if name not in example]
            if missing:
                raise ValueError(f"{source} {at}: field(s) {missing} missing; "
                                 f"fields present: {sorted(example)}")
            texts.append(_text(example[text_field], source, at, text_field))
            if pair_field:
                pairs.append(_text(example[pair_field], source, at, pair_field))
            raw_labels.append(example[label_field])
            where.append(at)
    if not texts:
        raise ValueError(f"{source} is empty: expected one JSON object per line")
    labels = _convert_labels(raw_labels, where, label_map, source)
    return _dataset(texts, pairs if pair_field else None, labels, str(path), num_labels,
                    label_names if label_names is not None else _label_names_from_map(label_map))


# ---------------------------------------------------------------------------------------------------
# Hugging Face datasets


def load_hf_dataset(name: str, split: str, config: str | None = None, text_column: str | None = None,
                    pair_column: str | None = None, label_column: str = "label",
                    label_map: Mapping[Any, int] | None = None, *, num_labels: int | None = None,
                    **load_kwargs: Any) -> TextDataset:
    """A split of a Hugging Face dataset, by name (needs the optional ``datasets`` package and network,
    or a populated local cache).

    For ``glue`` / ``nyu-mll/glue`` with a task config the columns come from :data:`GLUE_TASKS`;
    otherwise ``text_column`` defaults to ``"text"`` or ``"sentence"``, whichever exists. Class names
    come from the label column's ``ClassLabel`` feature when it has one. Extra keyword arguments go
    to ``datasets.load_dataset``.

    Raises:
        ImportError: ``datasets`` is not installed.
        RuntimeError: the dataset could not be loaded (offline, unknown name, ...): the cause is named.
        ValueError: missing columns (the present ones are listed), or an unlabelled split.
    """
    try:
        import datasets
    except ImportError:
        raise ImportError(f"loading the Hugging Face dataset {name!r} needs the 'datasets' package: "
                          "pip install datasets") from None
    spec = None
    if name in ("glue", "nyu-mll/glue") and config:
        spec = task_spec(config)
        text_column = text_column or spec.fields[0]
        pair_column = pair_column or spec.fields[1]
    try:
        data = datasets.load_dataset(name, config, split=split, **load_kwargs)
    except Exception as e:  # datasets raises many types (ConnectionError, DatasetNotFoundError, ...)
        offline = [v for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
                   if os.environ.get(v, "0") not in ("", "0")]
        note = f" ({' and '.join(offline)} set: only locally cached datasets load)" if offline else ""
        raise RuntimeError(f"could not load Hugging Face dataset {name!r} (config {config!r}, "
                           f"split {split!r})"
                           f"{note}: {type(e).__name__}: {e}") from e
    present = list(data.column_names)
    if text_column is None:
        text_column = next((c for c in ("text", "sentence") if c in present), None)
        if text_column is None:
            raise ValueError(f"{name}: pass text_column=; columns present: {present}")
    wanted = [text_column, label_column] + ([pair_column] if pair_column else [])
    missing = [c for c in wanted if c not in present]
    if missing:
        raise ValueError(f"{name}/{split}: column(s) {missing} not in the dataset; "
                         f"columns present: {present}")
    feature = data.features[label_column]
    label_names = list(feature.names) if hasattr(feature, "names") else None
    if spec is not None:
        label_names = list(spec.label_names)
    raw = list(data[label_column])
    source = f"{name}{'/' + config if config else ''}/{split}"
    labels = _convert_labels(raw, [f"row {i}" for i in range(len(raw))], label_map, source)
    if label_names is None:
        label_names = _label_names_from_map(label_map)
    return _dataset(list(data[text_column]), list(data[pair_column]) if pair_column else None, labels, source,
                    num_labels, label_names)


__all__ = ["GLUE_TASKS", "HUB_PREFIX", "ClassifierInput", "TaskSpec", "TextDataset", "advglue_entries",
           "glue_task_file", "hub_dataset_name", "load_advglue_json", "load_csv", "load_glue_task", "load_glue_tsv",
           "load_hf_dataset", "load_jsonl", "load_task_split", "save_advglue_json", "task_spec"]
