"""Splitting a native CPU kernel over threads, shared by the compiled kernels of ``sparse_ops``.

The kernels are plain C-ABI functions (:mod:`robustprune.sparse_ops.native`) that never touch Python, so
several threads run them in parallel. Each thread runs a small native "team member" that takes the next
piece with an atomic counter and calls the kernel on it: no thread waits for the GIL between pieces
(a Python callback per piece measured 5-15 % slower at decode, the team threads blocking on the GIL).
Where torch runs on GNU OpenMP (its Linux wheels), the members run on torch's own OpenMP thread team
(``GOMP_parallel`` through ctypes): after any torch op those threads spin for a while waiting for more
work, and a second pool of our own would have to share the cores with them (measured: ``nm_linear`` at
batch 16 right after a dense ``F.linear``, 0.9x dense on Python threads, 1.3x on torch's team).
Elsewhere, and in a child process forked after this module was imported (where GNU OpenMP's team does
not exist and calls can hang), Python threads from a pool that is rebuilt after a fork, each calling the
member through ctypes (which releases the GIL for the call).

Also here: :func:`compiled_module`, which loads a kernel module on first use, and
:func:`eager_cpu_forced`, which reads the ``ROBUSTPRUNE_..._CPU=eager|compiled`` switches.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from llvmlite import ir

from robustprune.sparse_ops import native

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


_forked = False


def _note_fork() -> None:
    global _forked
    _forked = True


os.register_at_fork(after_in_child=_note_fork)


@functools.cache
def _torch_openmp():
    """torch's GNU OpenMP runtime (a ctypes library with ``GOMP_parallel``) if this process has loaded one,
    else None (macOS, Windows, other OpenMP runtimes: Python threads then)."""
    try:
        with open("/proc/self/maps") as maps:
            path = next((line.split()[-1] for line in maps if "libgomp" in line.rsplit("/", 1)[-1]), None)
        if path is None:
            return None
        runtime = ctypes.CDLL(path)  # already loaded by torch: the same library, not a second copy
        # GOMP_parallel(void (*member)(void *), void *data, unsigned threads, unsigned flags)
        runtime.GOMP_parallel.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
        runtime.GOMP_parallel.restype = None
    except (OSError, AttributeError):
        return None
    return runtime


def openmp_team_usable() -> bool:
    """Whether :func:`run_split` runs its pieces on torch's OpenMP team (see the module docstring)."""
    return not _forked and _torch_openmp() is not None


def piece_bounds(items: int, pieces: int, align: int) -> list[int]:
    """``pieces + 1`` increasing bounds from 0 to ``items``; every inner bound is a multiple of ``align``."""
    return [min(items, (items * piece // pieces) // align * align) for piece in range(pieces)] + [items]


def _split_plan(items: int, min_items: int, align: int) -> tuple[int, list[int]]:
    """(threads, piece bounds) for ``items``: see :func:`run_split`. Up to ``PIECES_PER_WORKER`` pieces
    per thread on large inputs."""
    workers = max(1, min(torch.get_num_threads(), items // min_items))
    if workers == 1:
        return 1, [0, items]
    pieces = max(workers, min(PIECES_PER_WORKER * workers, items // min_items))
    return workers, piece_bounds(items, pieces, align)


_TEAM_CTYPE = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


@functools.cache
def _team() -> tuple[int, Callable[[int], None]]:
    """(address, ctypes caller) of the native team member ``void team(int64_t *data)``.

    ``data`` is ``[kernel, arguments, pieces, next piece, bounds[0] .. bounds[pieces]]``; each thread
    takes the next piece with an atomic add and calls ``kernel(arguments, lo, hi)`` on it, never touching
    Python (so no thread waits for the GIL between pieces).
    """
    module = native.new_module("robustprune_team")
    team = ir.Function(module, ir.FunctionType(ir.VoidType(), [native.I64.as_pointer()]), "team")
    builder = ir.IRBuilder(team.append_basic_block("entry"))
    data = team.args[0]
    read = native.argument_reader(builder, data)
    kernel = read(0, native.KERNEL_TYPE.as_pointer())
    arguments, pieces = read(1, native.I64.as_pointer()), read(2)
    counter = builder.gep(data, [ir.Constant(native.I64, 3)], inbounds=True)
    take = builder.append_basic_block("take")
    run = builder.append_basic_block("run")
    done = builder.append_basic_block("done")
    builder.branch(take)
    builder.position_at_end(take)
    piece = builder.atomic_rmw("add", counter, ir.Constant(native.I64, 1), "monotonic")
    builder.cbranch(builder.icmp_signed("<", piece, pieces), run, done)
    builder.position_at_end(run)
    bound = builder.add(piece, ir.Constant(native.I64, 4))
    lo = builder.load(builder.gep(data, [bound], inbounds=True))
    hi = builder.load(builder.gep(data, [builder.add(bound, ir.Constant(native.I64, 1))], inbounds=True))
    builder.call(kernel, [arguments, lo, hi])
    builder.branch(take)
    builder.position_at_end(done)
    builder.ret_void()
    address = native.load(module).address("team")
    return address, _TEAM_CTYPE(address)


@functools.cache
def _kernel_caller(address: int) -> Callable[[int, int, int], None]:
    return native.KERNEL_CTYPE(address)


def run_split(kernel: int, arguments: np.ndarray, items: int, min_items: int, align: int = 1) -> None:
    """Call the native kernel at address ``kernel`` (C signature
    ``void kernel(const int64_t *arguments, int64_t lo, int64_t hi)``, :mod:`robustprune.sparse_ops.native`)
    on ranges that together cover ``range(items)`` exactly once, passing ``arguments`` (an int64 array)
    to every call.

    Below ``2 * min_items`` items the calling thread does it all in one call (a thread hand-off costs tens
    of microseconds). Otherwise up to ``torch.get_num_threads()`` threads (torch's OpenMP team, or the
    caller and pool threads) share pieces of at least ``min_items`` items whose bounds are multiples of
    ``align``. No thread holds the GIL while kernels run.
    """
    workers, bounds = _split_plan(items, min_items, align)
    if workers == 1:
        _kernel_caller(kernel)(arguments.ctypes.data, 0, items)
        return
    data = np.empty(4 + len(bounds), dtype=np.int64)
    data[:4] = (kernel, arguments.ctypes.data, len(bounds) - 1, 0)
    data[4:] = bounds
    address, call_team = _team()
    if openmp_team_usable():
        # ctypes releases the GIL for the call; the calling thread is the team's first member.
        _torch_openmp().GOMP_parallel(address, data.ctypes.data, workers, 0)
        return
    pool = _executor(workers - 1)
    futures = [pool.submit(call_team, data.ctypes.data) for _ in range(workers - 1)]
    call_team(data.ctypes.data)
    for future in futures:
        future.result()


@functools.cache
def compiled_module(name: str):
    """The compiled kernel module ``robustprune.sparse_ops.<name>``, imported on first use, or None when
    it cannot be imported (no llvmlite: the ops then run their eager torch path)."""
    try:
        return importlib.import_module(f"robustprune.sparse_ops.{name}")
    except ImportError:
        return None


def eager_cpu_forced(variable: str) -> bool:
    """Whether the environment switch ``variable`` (``eager``, ``compiled`` or unset: compiled) asks for
    the eager torch CPU path; any other value is refused, naming the variable."""
    choice = os.environ.get(variable, "").strip().lower()
    if choice not in ("", "compiled", "eager"):
        raise ValueError(f"environment variable {variable} must be 'eager' or 'compiled' (or unset), "
                         f"got {choice!r}")
    return choice == "eager"
