"""Whether this process is a forked copy of one that had loaded torch (standard library only).

OpenMP runtimes are not fork-safe: a child forked after its parent ran a parallel region inherits a thread
team whose threads do not exist, and the next parallel region can hang. :mod:`robustprune` imports this
module first, so a fork after ``import robustprune`` is always noticed (an at-fork hook). A fork before it
(``import torch``, a parallel op, ``fork``, then ``import robustprune`` in the child) leaves no hook: on
Linux the child is then recognised by still mapping torch's CPU library at the same address as its parent
does (a fresh process, even one exec'd from this one, maps it elsewhere); where that cannot be told (no
/proc, a parent that has exited), the process counts as not forked. With address-space randomisation off, a
process started by one that had loaded torch counts as forked: its kernels then run on Python threads,
slower but safe.
"""

from __future__ import annotations

import os

_forked = False


def _note_fork() -> None:
    global _forked
    _forked = True


os.register_at_fork(after_in_child=_note_fork)

_checked: dict[int, bool] = {}


def _torch_mapping(pid: int | str) -> str | None:
    try:
        with open(f"/proc/{pid}/maps") as maps:
            for line in maps:
                if "libtorch_cpu" in line.rsplit("/", 1)[-1]:
                    fields = line.split()
                    return f"{fields[0]} {fields[4]} {fields[-1]}"  # addresses, inode, path
    except OSError:
        return None
    return None


def forked_from_torch_process() -> bool:
    """Whether this process was forked (after ``import robustprune``, or from a parent that has torch's
    library mapped where this process has it)."""
    if _forked:
        return True
    pid = os.getpid()
    if pid not in _checked:
        mine = _torch_mapping("self")
        _checked[pid] = mine is not None and mine == _torch_mapping(os.getppid())
    return _checked[pid]
