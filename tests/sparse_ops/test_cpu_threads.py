"""run_split: every range exactly once, on torch's OpenMP team and on Python threads; errors surface;
a forked child falls back to Python threads."""

import multiprocessing
import sys
import threading

import pytest
import torch

from robustprune.sparse_ops import cpu_threads


def covered(items: int, min_items: int, align: int = 1) -> tuple[list[tuple[int, int]], set[int]]:
    calls, threads, lock = [], set(), threading.Lock()

    def run(lo: int, hi: int) -> None:
        with lock:
            calls.append((lo, hi))
            threads.add(threading.get_ident())

    cpu_threads.run_split(run, items, min_items, align)
    return sorted(calls), threads


def assert_exact_cover(calls, items, align):
    assert calls[0][0] == 0 and calls[-1][1] == items
    assert all(a[1] == b[0] for a, b in zip(calls, calls[1:]))
    assert all(lo % align == 0 for lo, _ in calls)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="torch runs GNU OpenMP on Linux")
def test_torch_openmp_team_is_found_here():
    assert cpu_threads.openmp_team_usable()


@pytest.mark.parametrize("team", [True, False], ids=["openmp-team", "python-threads"])
def test_every_item_exactly_once(monkeypatch, team):
    if not team:
        monkeypatch.setattr(cpu_threads, "openmp_team_usable", lambda: False)
    threads_before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        for items, min_items, align in [(10, 100, 1), (1000, 100, 1), (1000, 7, 64), (12345, 1000, 8)]:
            calls, threads = covered(items, min_items, align)
            assert_exact_cover(calls, items, align)
            if items >= 2 * min_items:
                assert len(calls) > 1
            else:
                assert calls == [(0, items)] and threads == {threading.get_ident()}
    finally:
        torch.set_num_threads(threads_before)


@pytest.mark.parametrize("team", [True, False], ids=["openmp-team", "python-threads"])
def test_an_error_in_a_piece_is_raised_to_the_caller(monkeypatch, team):
    if not team:
        monkeypatch.setattr(cpu_threads, "openmp_team_usable", lambda: False)

    def run(lo: int, hi: int) -> None:
        if lo > 0:
            raise ValueError(f"piece {lo}")

    with pytest.raises(ValueError, match="piece"):
        cpu_threads.run_split(run, 1000, 10)


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
    calls, _ = covered(1000, 10)
    queue.put((cpu_threads.openmp_team_usable(), calls[0][0] == 0 and calls[-1][1] == 1000))
