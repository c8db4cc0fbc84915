"""The results file of a sweep: one JSON object per finished point, appended atomically (JSON Lines).

Each record is written as one line with a single ``write`` followed by ``flush`` and ``fsync``, so a run
that is interrupted (Ctrl-C, kill, power loss) keeps every point it finished. A line cut short by a
kill mid-write is the only possible damage: it is reported and dropped when the file is opened again
(and cut off before the next append), never silently merged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class OutputLockedError(RuntimeError):
    """Another run is writing the same output folder."""


class ResultsMismatchError(ValueError):
    """A results file holds records that must not be mixed (another config, or duplicated points)."""


def point_key(seed: int, method: str, pattern: str, sparsity: float) -> str:
    """The identity of one point of a sweep (with the config fingerprint, what resuming compares).
    The sparsity keeps full float precision (``repr``), so distinct sparsities never share a key."""
    return f"seed={seed}|method={method}|pattern={pattern}|sparsity={float(sparsity)!r}"


@contextlib.contextmanager
def lock_output(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on the output folder ``out`` (created if needed) for the ``with`` body.

    The lock is an OS file lock (``filelock``), so it is released when the process ends in any way,
    kill -9 included: a killed run never blocks its own resumption. Who holds it (pid, host, start
    time, command) is written beside it, so a second run can say whom it waits for.

    Raises:
        OutputLockedError: another process holds the lock (the message names it).
        PermissionError: ``out`` cannot be created or written.
    """
    from filelock import FileLock, Timeout

    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(out / ".lock"), timeout=0)
        holder = out / ".lock.holder.json"
        lock.acquire()
    except Timeout:
        try:
            who = json.loads(holder.read_text(encoding="utf-8"))
            description = (f"pid {who['pid']} on {who['host']}, started {who['started']}: "
                           f"{' '.join(who['command'])}")
        except (OSError, ValueError, KeyError):
            description = "another process"
        raise OutputLockedError(f"{out} is in use by another run ({description}); wait for it to finish or "
                                "choose another output folder") from None
    except OSError as error:
        raise PermissionError(f"cannot create or lock the output folder {out}: {error}") from None
    try:
        holder.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                      "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": sys.argv}),
                          encoding="utf-8")
        yield
    finally:
        holder.unlink(missing_ok=True)
        lock.release()


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
                raise ResultsMismatchError(f"{str(self.path)!r} line {number} is not valid JSON ({error}): the file was "
                                           "edited or damaged; repair or delete that line (the point is then "
                                           "recomputed)") from None
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

    def check_writable(self) -> None:
        """Raise ``PermissionError`` now, before any work, if records could not be appended later."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self.path.open("ab"):
                pass
        except OSError as error:
            raise PermissionError(f"cannot write the results file {self.path}: {error}") from None

    def require_fingerprint(self, fingerprint: str) -> None:
        """Refuse to append to a file that holds records of another config (one sweep per results file).

        Raises:
            ResultsMismatchError: naming both fingerprints and the fix.
        """
        others = sorted({str(r.get("fingerprint")) for r in self.records()} - {fingerprint})
        if others:
            raise ResultsMismatchError(
                f"{self.path} holds results of another config (fingerprint {', '.join(others)}; this config is "
                f"{fingerprint}): a changed setting makes a new sweep; run it into a new output folder (--out), "
                "or move the old results away")

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


__all__ = ["OutputLockedError", "ResultsFile", "ResultsMismatchError", "lock_output", "point_key"]
