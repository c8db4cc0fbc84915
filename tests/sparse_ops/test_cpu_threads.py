"""run_split: every item exactly once, on torch's OpenMP team and on Python threads, in pieces of the
asked alignment; a forked child falls back to Python threads."""

import itertools
import multiprocessing
import sys

import numpy as np
import pytest
import torch
from llvmlite import ir

from robustprune.sparse_ops import cpu_threads, native
from robustprune.sparse_ops.native import I64

RECORD_ARGUMENTS = native.Arguments("counts", "log", "length")


def recording_kernel() -> int:
    """``record(arguments, lo, hi)``: ``counts[i] += 1`` for every item, and ``(lo, hi)`` appended to a log.

    ``arguments``: the counts' address, the log's address, the address of the log's length (taken with an
    atomic add, as pieces run concurrently)."""
    module = native.new_module("test_record")
    function = ir.Function(module, native.KERNEL_TYPE, "record")
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    arguments, lo, hi = function.args
    read = RECORD_ARGUMENTS.reader(builder, arguments)
    counts, log, length = (read(name, pointer=True) for name in RECORD_ARGUMENTS.names)
    slot = builder.mul(builder.atomic_rmw("add", length, ir.Constant(I64, 1), "monotonic"), ir.Constant(I64, 2))
    builder.store(lo, native.address(builder, I64, log, slot))
    builder.store(hi, native.address(builder, I64, log, builder.add(slot, ir.Constant(I64, 1))))
    with native.loop(builder, lo, hi) as index:
        count = native.address(builder, I64, counts, index)
        builder.store(builder.add(builder.load(count, typ=I64), ir.Constant(I64, 1)), count)
    builder.ret_void()
    return native.load(module).address("record")


def covered(items: int, min_items: int, align: int = 1) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """(per-item call counts, sorted pieces) of one split."""
    counts = np.zeros(items, dtype=np.int64)
    log = np.zeros(2 * (items + 1), dtype=np.int64)
    length = np.zeros(1, dtype=np.int64)
    arguments = RECORD_ARGUMENTS.pack(counts=counts.ctypes.data, log=log.ctypes.data, length=length.ctypes.data)
    cpu_threads.run_split(recording_kernel(), arguments, items, min_items, align)
    return counts, sorted(map(tuple, log[:2 * length[0]].reshape(-1, 2).tolist()))


def assert_exact_cover(counts, pieces, items, align):
    assert (counts == 1).all()
    assert pieces[0][0] == 0 and pieces[-1][1] == items
    assert all(a[1] == b[0] for a, b in itertools.pairwise(pieces))
    assert all(lo % align == 0 for lo, _ in pieces)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="torch runs GNU OpenMP on Linux")
def test_torch_openmp_team_is_found_here():
    assert cpu_threads.openmp_team_usable()


@pytest.mark.parametrize("threads", [2, 3])  # 3: more threads than this machine's cores
@pytest.mark.parametrize("team", [True, False], ids=["openmp-team", "python-threads"])
def test_every_item_exactly_once(monkeypatch, team, threads):
    if not team:
        monkeypatch.setattr(cpu_threads, "openmp_team_usable", lambda: False)
    threads_before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        for items, min_items, align in [(1, 1, 1), (10, 100, 1), (1000, 100, 1), (1000, 7, 64),
                                        (12345, 1000, 8), (100_003, 10, 8)]:
            counts, pieces = covered(items, min_items, align)
            assert_exact_cover(counts, pieces, items, align)
            if items >= 2 * min_items:
                assert len(pieces) > 1
            else:
                assert pieces == [(0, items)]
    finally:
        torch.set_num_threads(threads_before)


def test_a_forked_child_uses_python_threads():
    covered(1000, 10)  # the parent's OpenMP team exists now
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_split, args=(queue,))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert queue.get(timeout=10) == (False, True)


def _child_split(queue):
    counts, pieces = covered(1000, 10)
    queue.put((cpu_threads.openmp_team_usable(), bool((counts == 1).all()) and len(pieces) > 1))


# Forks after a parallel torch op (torch's OpenMP team exists in the parent) and runs nm_mask in the child, with
# robustprune imported before the fork ("before") or only in the child ("after"). The child must not enter the
# inherited team (that hangs: torch's own parallel ops hang there too, so the child runs none of them).
_FORK_AFTER_PARALLEL_OP = """
import os, sys
import numpy as np
import torch
order = sys.argv[1]
if order == "before":
    from robustprune.ops import nm_mask
torch.set_num_threads(2)
scores = torch.randn(256, 4096, generator=torch.Generator().manual_seed(0))
(scores * 2).sum()  # a parallel torch op: the OpenMP team now exists
pid = os.fork()
if pid == 0:
    from robustprune.ops import nm_mask
    from robustprune.sparse_ops import cpu_threads
    mask = nm_mask(scores, 2, 4)
    np.save(sys.argv[2], mask.numpy())
    os._exit(0 if not cpu_threads.openmp_team_usable() else 3)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.slow
@pytest.mark.parametrize("order", ["before", "after"], ids=["imported-before-fork", "imported-in-child"])
def test_a_child_forked_after_a_parallel_torch_op_runs_the_op(tmp_path, order):
    import subprocess

    from robustprune.sparse_ops.nm import nm_mask_eager

    saved = tmp_path / "mask.npy"
    done = subprocess.run([sys.executable, "-c", _FORK_AFTER_PARALLEL_OP, order, str(saved)], check=False,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    scores = torch.randn(256, 4096, generator=torch.Generator().manual_seed(0))
    assert np.array_equal(np.load(saved), nm_mask_eager(scores, 2, 4).numpy())


def test_the_team_is_torch_own_openmp_runtime():
    runtime = cpu_threads.openmp_runtime()
    if runtime is None:
        pytest.skip("torch's library resolves no GOMP_parallel here")
    # The runtime libtorch_cpu itself links against (its directory or the system's), never a guess.
    assert "omp" in runtime.rsplit("/", 1)[-1]
    assert cpu_threads._torch_openmp() is cpu_threads._torch_openmp()


def test_a_replaced_pool_is_shut_down():
    first = cpu_threads._executor(1)
    second = cpu_threads._executor(2)
    assert second is not first and first._shutdown
    assert cpu_threads._executor(2) is second
