"""Plain text from files and hubs: UTF-8 reading that names the line of a bad byte, and text lines
(e.g. calibration text) from a plain file, a column of a GLUE-style TSV, or a Hugging Face dataset.

:func:`calibration_texts` resolves every kind of text source by one rule (a shipped set, a file, a Hub
dataset); ``robustprune prune --calibration`` and a sweep's ``pruning.calibration.source`` both read
their texts through it."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

_TEXT_FIELDS = ("text", "sentence", "content", "document")


def read_utf8(path: str | Path, encoding: str = "utf-8") -> str:
    """The text of ``path``, universal newlines; bytes that are not ``encoding`` (UTF-8) raise a
    ``ValueError`` naming the file, line and column instead of a bare ``UnicodeDecodeError``."""
    data = Path(path).read_bytes()
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise ValueError(f"{str(path)!r} line {line} column {column}: byte {data[error.start]:#04x} is not valid "
                         f"{encoding.upper().replace('-SIG', '')} ({error.reason}); re-save the file as UTF-8") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_text_lines(path: str | Path, column: str | None = None) -> list[str]:
    """Read calibration texts from a file.

    Args:
        path: a plain text file (one sample per non-empty line) or, when ``column`` is given, a
            GLUE-style tab-separated file with a header row (e.g. SST-2's ``sentence<TAB>label``).
        column: header name of the TSV column holding the text. None reads ``path`` as plain text.

    Returns:
        The texts in file order, newline characters removed; empty (or all-whitespace) lines and
        fields are skipped.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``column`` is not in the header, a row is too short, or no text was found.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"calibration text file not found: {str(path)!r}")
    texts: list[str] = []
    with io.StringIO(read_utf8(path), newline="") as f:
        if column is None:
            for line in f:
                text = line.rstrip("\r\n")
                if text.strip():
                    texts.append(text)
        else:
            csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = next(reader, None)
            if header is None:
                raise ValueError(f"{str(path)!r} is empty: expected a header row naming column {column!r}")
            if column not in header:
                raise ValueError(f"column {column!r} is not in the header of {str(path)!r}; "
                                 f"the header is {header}")
            index = header.index(column)
            for row in reader:
                if not row:
                    continue
                if len(row) <= index:
                    raise ValueError(f"{str(path)!r} line {reader.line_num}: {len(row)} field(s), "
                                     f"column {column!r} is field {index + 1} of header {header}")
                text = row[index]
                if text.strip():
                    texts.append(text)
    if not texts:
        what = f"column {column!r} of " if column is not None else ""
        raise ValueError(f"no calibration text found in {what}{str(path)!r} (all lines empty)")
    return texts


def texts_from_hf_dataset(name: str, split: str = "train", column: str | tuple[str, ...] = "text",
                          limit: int | None = None, config: str | None = None) -> list[str]:
    """Texts from a Hugging Face dataset by name (needs the optional ``datasets`` package and network).

    Args:
        name: dataset name on the Hub (e.g. ``"allenai/c4"``, ``"glue"``).
        split: split to read.
        column: field holding the text, or a tuple of candidates (the first the dataset has is read).
        limit: read at most this many non-empty texts (the dataset is streamed when given).
        config: dataset configuration name (e.g. ``"sst2"`` for ``"glue"``).
    """
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is deliberately not a dependency
        raise ImportError("texts_from_hf_dataset needs the optional 'datasets' package "
                          "(pip install datasets); or save the texts to a file and use read_text_lines"
                          ) from exc
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    dataset = datasets.load_dataset(name, config, split=split, streaming=limit is not None)
    texts: list[str] = []
    candidates = (column,) if isinstance(column, str) else tuple(column)
    for row in dataset:
        if column not in row:
            present = [c for c in candidates if c in row]
            if not present:
                raise ValueError(f"dataset {name!r} has no column {' or '.join(map(repr, candidates))}; its "
                                 f"columns are {sorted(row)}")
            column = present[0]
        text = row[column]
        if isinstance(text, str) and text.strip():
            texts.append(text)
            if limit is not None and len(texts) >= limit:
                break
    if not texts:
        raise ValueError(f"no text found in column {column!r} of dataset {name!r} split {split!r}")
    return texts


def _text_column(names: list[str], source: str, kind: str, where: str) -> str:
    for name in _TEXT_FIELDS:
        if name in names:
            return name
    raise ValueError(f"{where} {source}: the {kind} has no text column (looked for "
                     f"{', '.join(_TEXT_FIELDS)}; it has {names})")


def hub_dataset_spec(source: str, where: str = "--calibration") -> tuple[str, str | None]:
    """``(name, config)`` of a Hub dataset written ``NAME`` or ``NAME:CONFIG`` (``allenai/c4:en``,
    ``glue:sst2``); ``where`` (the flag or config key that named it) starts an error.

    Raises:
        ValueError: an empty name or configuration.
    """
    name, _, config = source.partition(":")
    if not name or (":" in source and not config):
        raise ValueError(f"{where} {source!r}: a Hugging Face dataset is NAME or NAME:CONFIG "
                         "(e.g. allenai/c4:en)")
    return name, config or None


def calibration_texts(source: str, hub_limit: int | None = None, where: str = "--calibration") -> list[str]:
    """Texts from a calibration source: a shipped set (``embedded``, ``sst2-sample``: their training
    sentences), a ``.tsv`` / ``.csv`` file with a header (column ``text``, ``sentence``, ``content`` or
    ``document``), a ``.jsonl`` file (the same fields), any other file as plain text (one text per
    non-empty line), or else a Hugging Face dataset ``NAME`` or ``NAME:CONFIG`` (e.g. ``allenai/c4:en``,
    the Wanda / SparseGPT papers' calibration set; its ``train`` split, the first of the text columns above
    that it has, streamed: the first ``hub_limit`` non-empty texts, all of them when None; needs the
    ``datasets`` package and the network). ``where``, the flag or config key that named the source, starts
    every error.

    Raises:
        FileNotFoundError: ``source`` looks like a path (has a suffix, or starts with ``.``, ``/``, ``~``)
            and is not a file.
        ValueError: the source holds no text, or a table has no text column.
    """
    from robustprune.data.bundled import BUNDLED_DATA

    if source in BUNDLED_DATA:
        texts = read_text_lines(BUNDLED_DATA[source][0] / "train.tsv", column="sentence")
    elif Path(source).is_file():
        path = Path(source)
        suffix = path.suffix.lower()
        if suffix in (".tsv", ".csv"):
            rows = list(csv.reader(io.StringIO(read_utf8(path), newline=""),
                                   delimiter="\t" if suffix == ".tsv" else ","))
            if not rows:
                raise ValueError(f"{where} {source}: empty file, no calibration text")
            column = rows[0].index(_text_column(rows[0], source, f"{suffix[1:].upper()} header", where))
            texts = [row[column] for row in rows[1:] if len(row) > column and row[column].strip()]
        elif suffix == ".jsonl":
            texts = []
            for number, line in enumerate(read_utf8(path).split("\n"), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{where} {source} line {number}: not JSON ({error})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{where} {source} line {number}: expected a JSON object")  # noqa: TRY004
                value = row.get(_text_column(sorted(row), source, f"object on line {number}", where))
                if isinstance(value, str) and value.strip():
                    texts.append(value)
        else:
            text = read_utf8(path)
            texts = [line for line in text.split("\n") if line.strip()]
    elif Path(source).suffix or source.startswith((".", "/", "~")):
        raise FileNotFoundError(f"{where}: no such file {source!r}")
    else:
        name, config = hub_dataset_spec(source, where)
        texts = texts_from_hf_dataset(name, config=config, column=_TEXT_FIELDS, limit=hub_limit)
    if not texts:
        raise ValueError(f"{where} {source}: empty calibration file (no text found)")
    return texts


__all__ = ["calibration_texts", "hub_dataset_spec", "read_text_lines", "read_utf8", "texts_from_hf_dataset"]
