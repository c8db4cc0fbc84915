"""Labelled text-classification data: one type for every source (GLUE TSV, AdvGLUE JSON, CSV, JSONL, HF).

:class:`TextDataset` holds single sentences (``text_pairs is None``) or sentence pairs, integer labels
``0..num_labels-1`` and optional per-example metadata (e.g. which attack made an adversarial example).
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
        bad = [label for label in self.labels if not (isinstance(label, int) and 0 <= label < self.num_labels)]
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


def load_glue_tsv(path: str | Path, text_column: str = "sentence", pair_column: str | None = None,
                  label_column: str = "label", num_labels: int | None = None) -> TextDataset:
    """A GLUE-format TSV (header row; e.g. SST-2's ``sentence<TAB>label``) as a :class:`TextDataset`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a named column is missing from the header, a row has too few fields, a label is
            not an integer, or the file has no examples.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GLUE TSV file not found: {str(path)!r}")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    texts, pairs, labels = [], [], []
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{str(path)!r} is empty: expected a header row")
        wanted = [text_column, label_column] + ([pair_column] if pair_column else [])
        missing = [column for column in wanted if column not in header]
        if missing:
            raise ValueError(f"{str(path)!r}: column(s) {missing} not in the header {header}")
        where = {column: header.index(column) for column in wanted}
        for row in reader:
            if not row:
                continue
            if len(row) < len(header):
                raise ValueError(f"{str(path)!r} line {reader.line_num}: {len(row)} field(s), header has "
                                 f"{len(header)} ({header})")
            raw = row[where[label_column]].strip()
            try:
                labels.append(int(raw))
            except ValueError:
                raise ValueError(f"{str(path)!r} line {reader.line_num}: label {raw!r} in column "
                                 f"{label_column!r} is not an integer") from None
            texts.append(row[where[text_column]])
            if pair_column:
                pairs.append(row[where[pair_column]])
    if not texts:
        raise ValueError(f"{str(path)!r} has a header but no examples")
    return TextDataset(texts=texts, labels=labels, text_pairs=pairs if pair_column else None,
                       num_labels=num_labels or max(2, max(labels) + 1), name=str(path))


__all__ = ["ClassifierInput", "TextDataset", "load_glue_tsv"]
