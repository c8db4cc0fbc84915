"""Shared helpers of the side-by-side benchmark scripts: interleaved median timing and plain tables."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    """A timed call; ``setup`` (untimed) returns its arguments, e.g. fresh copies for in-place ops."""

    fn: Callable[..., object]
    setup: Callable[[], tuple] = tuple


def median_times(cases: dict[str, Case], repeats: int, warmup: bool = True) -> dict[str, float]:
    """Median wall time (s) of each case over ``repeats`` rounds; the cases alternate within each round,
    so a change in machine load hits all of them alike."""
    if warmup:
        for case in cases.values():
            case.fn(*case.setup())
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, case in cases.items():
            args = case.setup()
            start = time.perf_counter()
            result = case.fn(*args)
            times[name].append(time.perf_counter() - start)
            del result, args
    return {name: statistics.median(samples) for name, samples in times.items()}


def status(met: bool) -> str:
    return "MET" if met else "NOT MET"


def fmt_time(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 1.0 else f"{seconds:.2f} s"


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))
