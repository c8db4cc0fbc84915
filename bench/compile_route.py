"""Why the CPU kernels are native LLVM IR and not ``torch.compile``: ``python -m bench.compile_route``.

One workload, the 2:4 mask of a 4096x4096 fp32 matrix, three ways, each probed in a fresh process (the
first call of an op is what a one-shot pruning script pays):

- ours: ``robustprune.ops.nm_mask`` (the native kernel: machine code from the on-disk cache, or compiled
  when the cache has none yet);
- Inductor: ``torch.compile(fullgraph=True)`` of the same mask written as elementwise comparisons Inductor
  can fuse into one loop (each lane's rank in its group, ties to the lower lane), first with an empty
  Inductor cache (a new machine), then again in another process with the cache that run filled;
- eager: the op's torch fallback (a sorting network over integer bit patterns).

Reported per probe: the import it needs (``robustprune.ops``, or ``torch._dynamo`` for Inductor), the first
call after it (compiling or loading machine code), the warm median, its effective bandwidth (read fp32 +
write 1 B per element) as a fraction of ``copy_`` of the same matrix timed in the same process, and whether
the mask equals ours (on the benchmark's matrix and on a small one full of ties). Inductor needs a C++
compiler at run time.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

from bench.timing import Case, fmt_time, median_times, print_table

SHAPE = (4096, 4096)
N, M = 2, 4
REPEATS = 15


def rank_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """The N:M keep-mask as elementwise expressions Inductor can fuse into one loop over groups: lane i is
    kept when fewer than ``n`` lanes of its group beat it (larger ``|score|``, or equal and at a lower
    lane); the comparisons are unrolled over the ``m`` lanes."""
    lanes = scores.abs().view(-1, m).unbind(dim=1)
    kept = []
    for i, this in enumerate(lanes):
        beaten = sum(((other >= this) if j < i else (other > this)).to(torch.int32)
                     for j, other in enumerate(lanes) if j != i)
        kept.append(beaten < n)
    return torch.stack(kept, dim=1).view(scores.shape)


def probe(route: str) -> dict[str, float | bool]:
    """Import, first call, warm median and copy time of one route in this (fresh) process."""
    scores = torch.empty(SHAPE).normal_(generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    if route == "inductor":
        importlib.import_module("torch._dynamo")  # what torch.compile imports on its first call

        mask_of = torch.compile(rank_mask, dynamic=False, fullgraph=True)
    else:
        import robustprune.ops
        from robustprune.sparse_ops.nm import nm_mask_eager

        mask_of = robustprune.ops.nm_mask if route == "ours" else nm_mask_eager
    imported = time.perf_counter()
    mask = mask_of(scores, N, M)
    first = time.perf_counter() - imported
    target = torch.empty_like(scores)
    times = median_times({"route": Case(lambda: mask_of(scores, N, M)),
                          "copy": Case(lambda: target.copy_(scores))}, REPEATS)
    import robustprune.ops

    tied = torch.randint(-3, 4, (64, 64), generator=torch.Generator().manual_seed(1)).float()
    equal = all(torch.equal(route_mask, robustprune.ops.nm_mask(x, N, M))
                for x, route_mask in ((scores, mask), (tied, mask_of(tied, N, M))))
    return {"import": imported - start, "first": first, "warm": times["route"], "copy": times["copy"],
            "equal": equal}


def run_probe(route: str, inductor_cache: str) -> dict[str, float | bool]:
    environment = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=inductor_cache)
    finished = subprocess.run([sys.executable, "-m", "bench.compile_route", "--probe", route], env=environment,
                              capture_output=True, text=True, check=False)
    if finished.returncode != 0:  # e.g. no C++ compiler for Inductor: say so instead of a bare exit status
        lines = finished.stderr.strip().splitlines() or ["(no output)"]
        raise SystemExit(f"the {route} probe failed: {lines[-1]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def report() -> None:
    elements = SHAPE[0] * SHAPE[1]
    print(f"{N}:{M} mask of a {SHAPE[0]}x{SHAPE[1]} fp32 matrix, each route in a fresh process "
          f"({torch.get_num_threads()} torch threads; warm = median of {REPEATS} after one warm-up)")
    rows = []
    with tempfile.TemporaryDirectory() as inductor_cache:
        for label, route in (("ours (native kernel)", "ours"),
                             ("torch.compile, empty Inductor cache", "inductor"),
                             ("torch.compile, Inductor cache filled by the run above", "inductor"),
                             ("eager torch path (sorting network)", "eager")):
            result = run_probe(route, inductor_cache)
            of_copy = (elements * 5 / result["warm"]) / (elements * 8 / result["copy"])
            rows.append([label, fmt_time(result["import"]), fmt_time(result["first"]), fmt_time(result["warm"]),
                         f"{of_copy:.2f}", "yes" if result["equal"] else "NO"])
    print_table(["route", "import", "first call", "warm", "of copy", "mask equals ours"], rows)
    print("import: robustprune.ops (ours, eager; it also loads transformers) or torch._dynamo (torch.compile); "
          "first call: after the import, compiling or loading machine code included")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.compile_route", description=__doc__.splitlines()[0])
    parser.add_argument("--probe", choices=("ours", "inductor", "eager"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(probe(args.probe)))
    else:
        report()


if __name__ == "__main__":
    main()
