"""Splitting a native CPU kernel over threads, shared by the compiled kernels of ``sparse_ops``.

The kernels are plain C-ABI functions (:mod:`robustprune.sparse_ops.native`) that never touch Python, so
several threads run them in parallel. Each thread runs a small native "team member" that takes the next
piece with an atomic counter and calls the kernel on it: no thread waits for the GIL between pieces
(a Python callback per piece measured 5-15 % slower at decode, the team threads blocking on the GIL).

Where torch runs on OpenMP, the members run on torch's own OpenMP thread team: after any torch op those
threads spin for a while waiting for more work, and a second pool of our own would have to share the cores
with them (measured: ``nm_linear`` at batch 16 right after a dense ``F.linear``, 0.9x dense on Python
threads, 1.3x on torch's team). The team is entered through ``GOMP_parallel`` as ``libtorch_cpu`` itself
resolves it (``dlsym`` on torch's already loaded library, which searches its dependencies): GNU libgomp on
torch's Linux wheels; Intel's iomp5 and LLVM's libomp export the same entry point for GCC-compiled code and
run it on their own team, so they are handled alike. Whatever else the process has loaded is never used.

Python threads instead, from a pool of our own (each calling the member through ctypes, which releases the
GIL): where torch's library resolves no ``GOMP_parallel`` (Windows, an OpenMP-less build), and in a process
forked from one that had loaded torch (:mod:`robustprune._forks`: an OpenMP team does not survive a fork,
and entering it can hang). The pool is rebuilt after a fork and shut down when a pool of another size
replaces it.

Kernels reach this module only through :mod:`robustprune.sparse_ops.compiled` (the switch between a
kernel and its eager path), so it may import llvmlite.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from llvmlite import ir

from robustprune._forks import forked_from_torch_process
from robustprune.sparse_ops import native
from robustprune.sparse_ops.native import I64

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
            if _pool is not None and _pool[0] == os.getpid():
                _pool[2].shutdown(wait=False)  # its threads end once idle (in a forked child they never existed)
            _pool = (os.getpid(), workers, ThreadPoolExecutor(workers, thread_name_prefix="robustprune-cpu"))
        return _pool[2]


def _torch_cpu_libraries() -> list[str]:
    """Names under which ``import torch`` loaded ``libtorch_cpu``: the file beside torch's package (pip
    wheels), then the bare library names the dynamic loader matches against what is loaded (conda and
    system builds keep it elsewhere)."""
    return [*map(str, sorted((Path(torch.__file__).parent / "lib").glob("libtorch_cpu.*"))),
            "libtorch_cpu.so", "libtorch_cpu.dylib"]


@functools.cache
def _torch_openmp():
    """``GOMP_parallel`` as torch's own library resolves it (a ctypes function), or None (see the module
    docstring)."""
    # RTLD_NOLOAD: the copy torch loaded, or nothing; never a second one.
    mode = getattr(os, "RTLD_NOLOAD", 0) | getattr(os, "RTLD_LAZY", 1)
    for name in _torch_cpu_libraries():
        try:
            parallel = ctypes.CDLL(name, mode=mode).GOMP_parallel
        except (OSError, AttributeError):
            continue
        # GOMP_parallel(void (*member)(void *), void *data, unsigned threads, unsigned flags)
        parallel.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
        parallel.restype = None
        return parallel
    return None


class _SymbolInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p), ("dli_sname", ctypes.c_char_p),
                ("dli_saddr", ctypes.c_void_p)]


def openmp_runtime() -> str | None:
    """Path of the library whose ``GOMP_parallel`` :func:`run_split` enters (None: Python threads only)."""
    parallel = _torch_openmp()
    if parallel is None:
        return None
    info = _SymbolInfo()
    try:
        found = ctypes.CDLL(None).dladdr(ctypes.c_void_p(ctypes.cast(parallel, ctypes.c_void_p).value),
                                         ctypes.byref(info))
    except (OSError, AttributeError):
        return None
    return os.fsdecode(info.dli_fname) if found and info.dli_fname else None


def openmp_team_usable() -> bool:
    """Whether :func:`run_split` runs its pieces on torch's OpenMP team (see the module docstring)."""
    return _torch_openmp() is not None and not forked_from_torch_process()


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

# The team member's data block: the kernel's address, its argument block's address, the number of pieces, the
# next piece to take (an atomic counter), then the pieces' bounds.
TEAM_ARGUMENTS = native.Arguments("kernel", "arguments", "pieces", "next_piece", tail="bounds")


def build_team(target: native.Target | None = None) -> ir.Module:
    """IR of the native team member ``void team(int64_t *data)`` for ``target`` (default this machine).

    ``data`` is a :data:`TEAM_ARGUMENTS` block; each thread takes the next piece with an atomic add and
    calls ``kernel(arguments, lo, hi)`` on it, never touching Python (so no thread waits for the GIL
    between pieces).
    """
    module = native.new_module("robustprune_team", target)
    team = ir.Function(module, ir.FunctionType(ir.VoidType(), [native.PTR]), "team")
    builder = ir.IRBuilder(team.append_basic_block("entry"))
    data = team.args[0]
    read = TEAM_ARGUMENTS.reader(builder, data)
    kernel = native.function_pointer(builder, read("kernel"), native.KERNEL_TYPE)
    arguments, pieces = read("arguments", pointer=True), read("pieces")
    counter = read.slot("next_piece")
    take = builder.append_basic_block("take")
    run = builder.append_basic_block("run")
    done = builder.append_basic_block("done")
    builder.branch(take)
    builder.position_at_end(take)
    piece = builder.atomic_rmw("add", counter, ir.Constant(I64, 1), "monotonic")
    builder.cbranch(builder.icmp_signed("<", piece, pieces), run, done)
    builder.position_at_end(run)
    bound = builder.add(piece, ir.Constant(I64, TEAM_ARGUMENTS.index("bounds")))
    lo = native.load_at(builder, I64, data, bound)
    hi = native.load_at(builder, I64, data, builder.add(bound, ir.Constant(I64, 1)))
    builder.call(kernel, [arguments, lo, hi])
    builder.branch(take)
    builder.position_at_end(done)
    builder.ret_void()
    return module


@functools.cache
def _team() -> tuple[int, Callable[[int], None]]:
    """(address, ctypes caller) of :func:`build_team`'s member compiled for this machine."""
    address = native.load(build_team()).address("team")
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
    data = TEAM_ARGUMENTS.pack(kernel=kernel, arguments=arguments.ctypes.data, pieces=len(bounds) - 1,
                               next_piece=0, tail=bounds)
    address, call_team = _team()
    if openmp_team_usable():
        # ctypes releases the GIL for the call; the calling thread is the team's first member.
        _torch_openmp()(address, data.ctypes.data, workers, 0)
        return
    pool = _executor(workers - 1)
    futures = [pool.submit(call_team, data.ctypes.data) for _ in range(workers - 1)]
    call_team(data.ctypes.data)
    for future in futures:
        future.result()
