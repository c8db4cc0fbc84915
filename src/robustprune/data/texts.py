"""Plain text from files and hubs: UTF-8 reading that names the line of a bad byte, and text lines
(e.g. calibration text) from a plain file, a column of a GLUE-style TSV, or a Hugging Face dataset."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path


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


__all__ = ["read_text_lines", "read_utf8", "texts_from_hf_dataset"]
