"""Splitting a compiled CPU kernel over Python threads, shared by the numba kernels of ``sparse_ops``.

The kernels release the GIL (numba ``nogil``), so plain Python threads run them in parallel. numba's own
parallel threading layer is deliberately not used: its GNU OpenMP layer aborts a child process that calls
it after a ``fork()`` (torch DataLoader workers, ``multiprocessing``), and its fallback layer is not
thread-safe. The pool here is rebuilt in a forked child, where the parent's threads do not exist.

Also here: :func:`eager_cpu_forced`, which reads the ``ROBUSTPRUNE_..._CPU=eager|compiled`` switches.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

# Up to this many pieces per thread on large inputs: pieces are handed out one at a time, so a core that is
# busy (e.g. torch's OpenMP threads still spinning after the previous op) does fewer pieces instead of
# holding everyone up.
PIECES_PER_WORKER = 8

_pool_lock = threading.Lock()
_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, workers, executor)


def _executor(workers: int) -> ThreadPoolExecutor:
    """A thread pool of ``workers`` threads, new after a fork (the parent's threads do not exist there)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid() or _pool[1] != workers:
            _pool = (os.getpid(), workers, ThreadPoolExecutor(workers, thread_name_prefix="robustprune-cpu"))
        return _pool[2]


def piece_bounds(items: int, pieces: int, align: int) -> list[int]:
    """``pieces + 1`` increasing bounds from 0 to ``items``; every inner bound is a multiple of ``align``."""
    return [min(items, (items * piece // pieces) // align * align) for piece in range(pieces)] + [items]


def run_split(run: Callable[[int, int], None], items: int, min_items: int, align: int = 1) -> None:
    """Call ``run(lo, hi)`` on ranges that together cover ``range(items)`` exactly once.

    Below ``2 * min_items`` items the calling thread does it all in one call (a thread hand-off costs tens
    of microseconds). Otherwise up to ``torch.get_num_threads()`` threads (the caller and pool threads)
    share pieces of at least ``min_items`` items whose bounds are multiples of ``align``. ``run`` must
    release the GIL to run in parallel.
    """
    workers = max(1, min(torch.get_num_threads(), items // min_items))
    if workers == 1:
        run(0, items)
        return
    pieces = max(workers, min(PIECES_PER_WORKER * workers, items // min_items))
    bounds = piece_bounds(items, pieces, align)
    next_piece = itertools.count()

    def work() -> None:
        while (piece := next(next_piece)) < pieces:  # next() on a count is atomic under the GIL
            run(bounds[piece], bounds[piece + 1])

    pool = _executor(workers - 1)
    futures = [pool.submit(work) for _ in range(workers - 1)]
    work()
    for future in futures:
        future.result()


def eager_cpu_forced(variable: str) -> bool:
    """Whether the environment switch ``variable`` (``eager``, ``compiled`` or unset: compiled) asks for
    the eager torch CPU path; any other value is refused, naming the variable."""
    choice = os.environ.get(variable, "").strip().lower()
    if choice not in ("", "compiled", "eager"):
        raise ValueError(f"environment variable {variable} must be 'eager' or 'compiled' (or unset), "
                         f"got {choice!r}")
    return choice == "eager"
