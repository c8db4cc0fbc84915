"""The results file of a sweep: one JSON object per finished point, appended atomically (JSON Lines).

Each record is written as one line with a single ``write`` followed by ``flush`` and ``fsync``, so a run
that is interrupted (Ctrl-C, kill, power loss) keeps every point it finished. A line cut short by a
kill mid-write is the only possible damage: it is reported and dropped when the file is opened again
(and cut off before the next append), never silently merged.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def point_key(seed: int, method: str, pattern: str, sparsity: float) -> str:
    """The identity of one point of a sweep (with the config fingerprint, what resuming compares)."""
    return f"seed={seed}|method={method}|pattern={pattern}|sparsity={sparsity:.4f}"


class ResultsFile:
    """Append-only JSON Lines results of one sweep.

    Args:
        path: the ``.jsonl`` file; created (with its directory) on the first append.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _read_lines(self) -> tuple[list[dict[str, Any]], int]:
        """(records, byte length of the valid prefix)."""
        if not self.path.is_file():
            return [], 0
        data = self.path.read_bytes()
        records, valid = [], 0
        for number, line in enumerate(data.split(b"\n"), start=1):
            end = valid + len(line) + 1
            if not line.strip():
                valid = min(end, len(data))
                continue
            complete = end <= len(data)
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                if not complete:  # torn final line: the process died mid-write
                    logger.warning("%s: dropping an incomplete last line (%d bytes; interrupted write)",
                                   self.path, len(line))
                    break
                raise ValueError(f"{str(self.path)!r} line {number} is not valid JSON: {error}") from None
            if not complete:  # valid JSON but no newline: written whole, newline lost; keep it
                records.append(record)
                valid = len(data)
                break
            records.append(record)
            valid = end
        return records, valid

    def records(self) -> list[dict[str, Any]]:
        """Every complete record, in the order written."""
        return self._read_lines()[0]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records())

    def done(self, fingerprint: str) -> set[str]:
        """Keys of the points finished under config ``fingerprint``."""
        return {r["key"] for r in self.records() if r.get("fingerprint") == fingerprint and "key" in r}

    def append(self, record: dict[str, Any]) -> None:
        """Write ``record`` as one line, durably (``fsync``) before returning."""
        line = json.dumps(record, sort_keys=True, allow_nan=True) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _, valid = self._read_lines()
        if self.path.is_file() and self.path.stat().st_size > valid:
            with self.path.open("r+b") as f:  # cut a torn tail before appending after it
                f.truncate(valid)
        with self.path.open("ab") as f:
            if valid and not self.path.read_bytes()[:valid].endswith(b"\n"):
                f.write(b"\n")
            f.write(line.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())


__all__ = ["ResultsFile", "point_key"]
