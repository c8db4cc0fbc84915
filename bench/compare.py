"""Side-by-side ratios measured in ONE process run: ``python -m bench.compare [--quick]``.

Prints, for each workload, the median time of robustprune and of the baseline a user would otherwise
write, their ratio, and for N:M masks the effective bandwidth as a fraction of a plain copy's measured
in the same run. Peak extra memory of global masking is measured per method in a fresh subprocess.
Absolute times on a shared machine are noise; the ratios are what is judged. Goals are printed next to the results, marked MET / NOT MET.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from bench import sparse_linear, sparsegpt
from bench.timing import Case, fmt_time, median_times, print_table, status
from bench.workloads import (
    bert_base_weights,
    ours_global,
    ours_nm,
    pruned_count,
    square_matrix,
    topk_scatter_nm,
    torch_prune_global,
    total_bytes,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
GLOBAL_SPARSITY = 0.5
NM_PATTERNS = ((2, 4), (4, 8), (2, 8))
NM_DTYPES = (torch.float32, torch.float16)
MATRIX_SIZE = 4096

GOAL_GLOBAL_SPEEDUP = 50.0
GOAL_GLOBAL_PEAK_EXTRA = 0.05  # of the weights' bytes
GOAL_NM_SPEEDUP = 3.0
GOAL_NM_BANDWIDTH = 0.5  # of the copy bandwidth

MEMORY_METHODS = ("ours", "torch")


@dataclass(frozen=True)
class Budget:
    """How many timed repeats each measurement gets (every measurement has one untimed warm-up first,
    except the ~20 s torch global baseline in quick mode, which runs exactly once)."""

    global_ours: int
    global_torch: int
    global_torch_warmup: bool
    nm: int

    @classmethod
    def for_mode(cls, quick: bool) -> Budget:
        if quick:
            return cls(global_ours=2, global_torch=1, global_torch_warmup=False, nm=5)
        return cls(global_ours=5, global_torch=2, global_torch_warmup=True, nm=15)


# ------------------------------------------------------------------------------------------- peak memory

def _status_kib(field: str) -> int:
    """A ``kB`` field (VmRSS, VmHWM, ...) of /proc/self/status, in KiB."""
    with open("/proc/self/status") as status_file:
        for line in status_file:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs); False if not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def memory_probe(method: str) -> dict[str, float | int | bool]:
    """Run in a fresh process: peak extra RSS of one global-masking call over BERT-base weights.

    The weights are filled in place (no temporaries) so the RSS before the call is the peak so far; on
    top of that VmHWM is reset when the kernel allows it. Both methods first run once on a tiny model so
    one-off lazy initialisation (thread pools, dispatch caches) is not counted. The call's outputs stay
    alive until VmHWM is read: the extra memory includes the masks (and, for torch, the fp32
    ``weight_mask`` buffers and the new pruned ``weight`` tensors).
    """
    run = {"ours": lambda ws: ours_global(ws, GLOBAL_SPARSITY, packed=True),
           "torch": lambda ws: torch_prune_global(ws, GLOBAL_SPARSITY)}[method]
    run(bert_base_weights(seed=1, layers=1)[:2])
    weights = bert_base_weights(seed=0)
    checksum = float(sum(float(w.sum()) for w in weights))  # touch every page (normal_ already did)
    reset = _reset_peak_rss()
    rss_before = _status_kib("VmRSS")
    hwm_before = _status_kib("VmHWM")
    result = run(weights)
    hwm_after = _status_kib("VmHWM")
    del result
    return {"method": method, "weights_bytes": total_bytes(weights), "rss_before_kib": rss_before,
            "hwm_before_kib": hwm_before, "hwm_after_kib": hwm_after, "hwm_reset": reset,
            "checksum": checksum}


def _in_fresh_process(call: str, what: str) -> dict:
    """Run ``call`` (an expression of :mod:`bench.compare` returning a JSON-able dict) in a fresh interpreter."""
    code = f"import json, bench.compare as c; print(json.dumps(c.{call}))"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_peak_extra(method: str) -> dict[str, float | int | bool]:
    """Run :func:`memory_probe` in a fresh interpreter and return its result."""
    return _in_fresh_process(f"memory_probe({method!r})", f"memory probe for {method!r}")


def cold_prune_probe() -> dict[str, float]:
    """Run in a fresh process: ``magnitude_prune`` as a user calls it, once, on a model of BERT-base's 72
    encoder Linears (masks applied): the first call, with every one-off cost of the ops in it."""
    from bench.workloads import as_linear
    from robustprune import magnitude_prune

    model = torch.nn.Sequential(*(as_linear(w) for w in bert_base_weights(seed=0)))
    start = time.perf_counter()
    masks = magnitude_prune(model, GLOBAL_SPARSITY, targets="*")
    first_call_s = time.perf_counter() - start
    pruned = sum(int((~mask).sum()) for mask in masks.values())
    return {"first_call_s": first_call_s, "pruned": pruned, "dynamo_imported": "torch._dynamo" in sys.modules}


def measure_cold_prune() -> dict[str, float]:
    """Run :func:`cold_prune_probe` in a fresh interpreter and return its result."""
    return _in_fresh_process("cold_prune_probe()", "cold magnitude_prune probe")


# Ops probed for their first call in a fresh process (item: a user's first call pays nothing big beyond its
# own work); each gets a process of its own, so no op profits from another's one-off costs.
FIRST_CALL_OPS = ("nm_mask", "nm_compress", "nm_decompress", "nm_linear", "hard_concrete_gate",
                  "magnitude_mask_", "score_keep_mask", "pack_mask", "sparsegpt_prune_")
# Allowed one-off cost of a first call beyond the op's own (warm) time.
GOAL_FIRST_CALL_S = 0.2


def _first_call_workload(op: str):
    """A zero-argument call of ``robustprune.ops.<op>`` on a moderate input (1024 x 1024 fp32)."""
    from robustprune import ops

    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(1024, 1024, generator=generator)
    if op == "nm_mask":
        return lambda: ops.nm_mask(weight, 2, 4)
    masked = weight * (torch.arange(4).repeat(256) < 2)  # a 2:4 weight, built without the ops
    if op == "nm_compress":
        return lambda: ops.nm_compress(masked, 2, 4)
    values, metadata = ops.nm_compress(masked, 2, 4) if op in ("nm_decompress", "nm_linear") else (None, None)
    if op == "nm_decompress":
        return lambda: ops.nm_decompress(values, metadata, 2, 4, 1024)
    if op == "nm_linear":
        x = torch.randn(1, 1024, generator=generator)
        return lambda: ops.nm_linear(x, values, metadata, None, 2, 4)
    if op == "hard_concrete_gate":
        log_alpha = torch.zeros(1024, 1024, requires_grad=True)
        noise = ops.sample_hard_concrete_noise(weight)
        return lambda: ops.hard_concrete_gate(weight, log_alpha, noise).sum().backward()
    if op == "magnitude_mask_":
        return lambda: ops.magnitude_mask_(weight.clone(), 1.0)
    if op == "score_keep_mask":
        return lambda: ops.score_keep_mask(weight, 1.0)
    if op == "pack_mask":
        mask = weight > 0
        return lambda: ops.pack_mask(mask)
    if op == "sparsegpt_prune_":
        inputs = torch.randn(2048, 1024, generator=generator)
        hinv, _ = ops.sparsegpt_hinv(inputs.t() @ inputs / 2048)
        return lambda: ops.sparsegpt_prune_(weight[:128].clone(), hinv, 0.5)
    raise ValueError(f"no first-call workload for {op!r}")


def first_call_probe(op: str) -> dict[str, float | str | bool]:
    """Run in a fresh process: the first call of ``op`` (all its one-off costs: loading or compiling compiled
    kernels, torch's first-call machinery) and the median of five later calls (its own work)."""
    call = _first_call_workload(op)
    start = time.perf_counter()
    call()
    first_s = time.perf_counter() - start
    warm = []
    for _ in range(5):
        start = time.perf_counter()
        call()
        warm.append(time.perf_counter() - start)
    return {"op": op, "first_s": first_s, "warm_s": statistics.median(warm),
            "numba_imported": "numba" in sys.modules, "dynamo_imported": "torch._dynamo" in sys.modules}


def measure_first_calls() -> list[dict[str, float | str | bool]]:
    """:func:`first_call_probe` for every op of :data:`FIRST_CALL_OPS`, each in a fresh interpreter."""
    return [_in_fresh_process(f"first_call_probe({op!r})", f"first-call probe of {op}") for op in FIRST_CALL_OPS]


def report_first_calls(probes: list[dict[str, float | str | bool]]) -> None:
    print("First call of each op in a fresh process (its own process each; 1024x1024 fp32 inputs; compiled kernels "
          "loaded from the on-disk cache, which an earlier process filled)")
    rows = [[probe["op"], fmt_time(probe["first_s"]), fmt_time(probe["warm_s"]),
             fmt_time(probe["first_s"] - probe["warm_s"]), f"<= {GOAL_FIRST_CALL_S} s",
             status(probe["first_s"] - probe["warm_s"] <= GOAL_FIRST_CALL_S)] for probe in probes]
    print_table(["op", "first call", "later calls", "one-off cost", "goal", "status"], rows)


# ------------------------------------------------------------------------------------------------ timing

@dataclass(frozen=True)
class GlobalResult:
    """Global magnitude masking over BERT-base-shaped weights."""

    numel: int
    weights_bytes: int
    ours_s: float
    torch_s: float
    ours_first_call_s: float  # the process's first call (cold allocator, page faults), not a median
    exact: bool  # ours pruned exactly round(sparsity * numel)


@dataclass(frozen=True)
class NMResult:
    """N:M masks and the copy reference on one square matrix per dtype, timed interleaved per dtype."""

    times: dict[str, float]  # "copy fp32", "ours N:M fp32", "eager N:M fp32", "topk N:M fp32", ... fp16
    copy_bytes: dict[str, int]  # per dtype name: read + written by the copy
    mask_bytes: dict[str, int]  # per dtype name: read + written by one N:M mask (scores in, bool out)
    matches_topk: bool  # ours == topk + scatter (fp32 randn: no ties) and ours == the eager path, bit for bit
    compiled: bool  # ours dispatched to the compiled (native) CPU kernel
    first_call_s: dict[str, float]  # per dtype name: first call of ours in this process (JIT or cache load)


def measure_global(budget: Budget) -> GlobalResult:
    """Time ours (packed masks, fresh weight copies each call) and torch.nn.utils.prune, and check ours."""
    weights = bert_base_weights(seed=0)
    numel = sum(w.numel() for w in weights)
    copies = [w.clone() for w in weights]
    start = time.perf_counter()
    masks = ours_global(copies, GLOBAL_SPARSITY)
    first_call_s = time.perf_counter() - start
    exact = pruned_count(masks, copies) == round(GLOBAL_SPARSITY * numel)
    del copies, masks
    ours_s = median_times({"ours": Case(ours_global, lambda: ([w.clone() for w in weights], GLOBAL_SPARSITY))},
                          budget.global_ours)["ours"]
    torch_s = median_times({"torch": Case(lambda: torch_prune_global(weights, GLOBAL_SPARSITY))},
                           budget.global_torch, warmup=budget.global_torch_warmup)["torch"]
    return GlobalResult(numel, total_bytes(weights), ours_s, torch_s, first_call_s, exact)


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]


def measure_nm(budget: Budget) -> NMResult:
    """Per dtype: time the copy reference, ours (the op as dispatched), the eager torch CPU path and (fp32)
    topk+scatter for every N:M pattern, interleaved in each round."""
    from robustprune.sparse_ops.nm import compiled_cpu_available, nm_mask_eager

    times: dict[str, float] = {}
    copy_bytes, mask_bytes, first_call_s = {}, {}, {}
    matches = True
    for dtype in NM_DTYPES:
        name = dtype_name(dtype)
        matrix = square_matrix(MATRIX_SIZE, dtype)
        dst = torch.empty_like(matrix)
        start = time.perf_counter()
        ours_nm(matrix, *NM_PATTERNS[0])
        first_call_s[name] = time.perf_counter() - start
        cases: dict[str, Case] = {f"copy {name}": Case(lambda matrix=matrix, dst=dst: dst.copy_(matrix))}
        for n, m in NM_PATTERNS:
            cases[f"ours {n}:{m} {name}"] = Case(lambda n=n, m=m, matrix=matrix: ours_nm(matrix, n, m))
            cases[f"eager {n}:{m} {name}"] = Case(lambda n=n, m=m, matrix=matrix: nm_mask_eager(matrix, n, m))
            if dtype == torch.float32:
                cases[f"topk {n}:{m} {name}"] = Case(lambda n=n, m=m, matrix=matrix: topk_scatter_nm(matrix, n, m))
                matches &= torch.equal(ours_nm(matrix, n, m), topk_scatter_nm(matrix, n, m))
            matches &= torch.equal(ours_nm(matrix, n, m), nm_mask_eager(matrix, n, m))
        times.update(median_times(cases, budget.nm))
        numel, itemsize = matrix.numel(), matrix.element_size()
        copy_bytes[name], mask_bytes[name] = 2 * numel * itemsize, numel * itemsize + numel
        del matrix, dst, cases
    return NMResult(times, copy_bytes, mask_bytes, matches, compiled_cpu_available(), first_call_s)


# ------------------------------------------------------------------------------------------------ report

def report_speed(glob: GlobalResult, nm: NMResult, cold: dict[str, float]) -> None:
    print("Speed (ours vs the baseline a user would otherwise write)")
    speedup = glob.torch_s / glob.ours_s
    rows = [[f"global magnitude {GLOBAL_SPARSITY:.0%}, BERT-base {glob.numel / 1e6:.1f}M fp32, packed masks",
             fmt_time(glob.ours_s), fmt_time(glob.torch_s), "torch.nn.utils.prune.global_unstructured",
             f"{speedup:.1f}x", f">= {GOAL_GLOBAL_SPEEDUP:.0f}x", status(speedup >= GOAL_GLOBAL_SPEEDUP)]]
    for n, m in NM_PATTERNS:
        ours_s, base_s = nm.times[f"ours {n}:{m} fp32"], nm.times[f"topk {n}:{m} fp32"]
        rows.append([f"{n}:{m} mask, {MATRIX_SIZE}x{MATRIX_SIZE} fp32", fmt_time(ours_s), fmt_time(base_s),
                     "topk + scatter_", f"{base_s / ours_s:.1f}x", f">= {GOAL_NM_SPEEDUP:.0f}x",
                     status(base_s / ours_s >= GOAL_NM_SPEEDUP)])
    print_table(["workload", "ours", "baseline", "baseline is", "speedup", "goal", "status"], rows)
    print(f"  note: ours global, first call in this process (before any warm-up): {fmt_time(glob.ours_first_call_s)}"
          f" = {glob.torch_s / glob.ours_first_call_s:.1f}x the baseline's median (a one-shot pruner runs cold)")
    cold_ratio = glob.torch_s / cold["first_call_s"]
    print(f"  cold, as a user calls it: magnitude_prune(model, {GLOBAL_SPARSITY}) over the same 72 Linears in a fresh "
          f"process (masks applied): {fmt_time(cold['first_call_s'])} = "
          f"{cold_ratio:.1f}x the baseline's median (goal >= {GOAL_GLOBAL_SPEEDUP:.0f}x: "
          f"{status(cold_ratio >= GOAL_GLOBAL_SPEEDUP)}; torch._dynamo imported: {cold['dynamo_imported']})")


def report_bandwidth(nm: NMResult) -> None:
    path = "compiled native kernel" if nm.compiled else "eager torch path (llvmlite not importable or switched off)"
    print(f"Bandwidth (ours = the op as dispatched: {path}; eager = the torch CPU path, for reference; "
          "read the scores + write 1 B per element; reference: dst.copy_(src) of the same matrix)")
    rows = []
    for dtype in NM_DTYPES:
        name = dtype_name(dtype)
        copy_bandwidth = nm.copy_bytes[name] / nm.times[f"copy {name}"]
        for n, m in NM_PATTERNS:
            bandwidth = nm.mask_bytes[name] / nm.times[f"ours {n}:{m} {name}"]
            eager = nm.mask_bytes[name] / nm.times[f"eager {n}:{m} {name}"] / copy_bandwidth
            fraction = bandwidth / copy_bandwidth
            rows.append([f"{n}:{m} mask, {MATRIX_SIZE}x{MATRIX_SIZE} {name}", f"{bandwidth / 1e9:.2f} GB/s",
                         f"{fraction:.2f}", f"{eager:.2f}", f"{fmt_time(nm.times[f'copy {name}'])}",
                         f">= {GOAL_NM_BANDWIDTH}", status(fraction >= GOAL_NM_BANDWIDTH)])
    print_table(["workload", "ours effective", "of copy", "eager of copy", "copy", "goal", "status"], rows)
    print("  note: first call of ours in this process (loading the kernel from its on-disk cache, or compiling it): "
          + ", ".join(f"{name} {fmt_time(seconds)}" for name, seconds in nm.first_call_s.items()))


def report_memory(memory: dict[str, dict[str, float | int | bool]], weights_bytes: int) -> None:
    print(f"Peak extra memory of global masking (fresh process per method; VmHWM after - VmRSS before; "
          f"weights = {weights_bytes / 2**20:.0f} MiB)")
    labels = {"ours": "ours (magnitude_thresholds + magnitude_mask_, packed)",
              "torch": "torch.nn.utils.prune.global_unstructured"}
    rows = []
    for method, probe in memory.items():
        extra = (int(probe["hwm_after_kib"]) - int(probe["rss_before_kib"])) * 1024
        fraction = extra / weights_bytes
        goal = ([f"<= {GOAL_GLOBAL_PEAK_EXTRA:.0%}", status(fraction <= GOAL_GLOBAL_PEAK_EXTRA)]
                if method == "ours" else ["", ""])
        rows.append([labels[method], f"{extra / 2**20:.1f} MiB", f"{fraction:.1%}", *goal])
    print_table(["method", "peak extra", "of weights", "goal", "status"], rows)
    for method, probe in memory.items():
        above = int(probe["hwm_before_kib"]) - int(probe["rss_before_kib"])
        if above:
            print(f"  note: {method}: VmHWM was {above} KiB above VmRSS before the call "
                  f"(peak reset {'done' if probe['hwm_reset'] else 'not permitted'})")


# ------------------------------------------------------------------------------------------- SparseLinear

def report_sparse_linear(repeats: int) -> bool:
    """Bytes at rest and CPU forward time of the compressed N:M layer; returns the correctness check."""
    print(f"SparseLinear bytes at rest ({sparse_linear.SIZE}x{sparse_linear.SIZE} weight, values + index "
          "metadata over dense)")
    rows = []
    for n, m in sparse_linear.PATTERNS:
        fp16 = sparse_linear.bytes_at_rest(n, m, torch.float16)
        goal = sparse_linear.GOAL_BYTES_FP16[(n, m)]
        rows.append([f"{n}:{m}", f"{fp16:.4f}x", f"{sparse_linear.bytes_at_rest(n, m, torch.float32):.4f}x",
                     f"<= {goal}x (fp16)", status(fp16 <= goal + 1e-9)])
    print_table(["pattern", "fp16/bf16", "fp32", "goal", "status"], rows)
    print()
    return report_sparse_forward(repeats)


def copy_bandwidth_of(nbytes: int, repeats: int) -> float:
    """Bytes read + written per second by ``dst.copy_(src)`` of ``nbytes`` of fp32 (median of rounds)."""
    source = torch.empty(nbytes // 4, dtype=torch.float32).normal_()
    target = torch.empty_like(source)
    return 2 * nbytes / median_times({"copy": Case(lambda: target.copy_(source))}, repeats)["copy"]


def report_sparse_forward(repeats: int) -> bool:
    """CPU forward of nm_linear against dense F.linear (streamed: every call a different copy of the layer,
    as in decoding; hot: the same copy); returns the correctness check."""
    print("SparseLinear CPU forward vs dense F.linear (ratio > 1: ours faster; streamed = each call reads another "
          f"copy of the layer, {sparse_linear.STREAM_BYTES >> 20} MiB of copies in all; hot = the same copy; "
          "'of copy' = compressed bytes read / time over the copy bandwidth)")
    # Measured once up front (interleaved, it would also flush the cache between the "hot" calls).
    copy_bandwidth = copy_bandwidth_of(sparse_linear.STREAM_BYTES // 2, repeats)
    rows, correct = [], True
    workloads = [(2, 4, dtype, shape) for shape in sparse_linear.SHAPES for dtype in sparse_linear.FORWARD_DTYPES]
    workloads += [(4, 8, dtype, (sparse_linear.SIZE, sparse_linear.SIZE)) for dtype in sparse_linear.FORWARD_DTYPES]
    first_calls = {}
    for n, m, dtype, shape in workloads:
        for batch in sparse_linear.BATCHES:
            for streamed in (True, False) if batch == 1 else (True,):
                case = sparse_linear.StreamedForward(n, m, dtype, shape, batch, streamed)
                key = (n, m, dtype_name(dtype))
                if key not in first_calls:
                    start = time.perf_counter()
                    case.ours()
                    first_calls[key] = time.perf_counter() - start
                correct &= case.matches()
                times = median_times({"dense": Case(case.dense), "ours": Case(case.ours)}, repeats)
                speedup = times["dense"] / times["ours"]
                goal = sparse_linear.GOAL_SPEEDUP.get(batch) if (n, m) == (2, 4) and streamed else None
                workload = (f"{n}:{m} {shape[0]}x{shape[1]} {dtype_name(dtype)}, batch {batch}, "
                            f"{'streamed' if streamed else 'hot'}")
                rows.append([workload, fmt_time(times["ours"]),
                             fmt_time(times["dense"]), f"{speedup:.2f}x",
                             f"{case.compressed_bytes / times['ours'] / copy_bandwidth:.2f}",
                             f">= {goal}x" if goal else "report", status(speedup >= goal) if goal else ""])
                del case
    print_table(["workload", "ours (nm_linear)", "dense F.linear", "speed ratio", "of copy", "goal", "status"],
                rows)
    print(f"copy bandwidth (read + write of a {sparse_linear.STREAM_BYTES >> 21} MiB fp32 copy, measured first): "
          f"{copy_bandwidth / 1e9:.1f} GB/s")
    print("first call in this process (loading the kernel from its on-disk cache, or compiling it): "
          + ", ".join(f"{n}:{m} {name} {fmt_time(seconds)}" for (n, m, name), seconds in first_calls.items()))
    return correct


# ------------------------------------------------------------------------------------------------ main

def main(argv: Sequence[str] | None = None) -> int:
    """Measure everything in this process (memory in one subprocess per method) and print the tables;
    exit status 1 if a correctness check failed (never because of a time)."""
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats; the torch global baseline runs once without warm-up")
    parser.add_argument("--sparse-linear-only", action="store_true",
                        help="only the SparseLinear forward table (with its correctness check)")
    parser.add_argument("--first-calls-only", action="store_true",
                        help="only the first-call table (each op in a fresh process)")
    parser.add_argument("--nm-only", action="store_true",
                        help="only the N:M mask bandwidth table (with its speed rows' correctness checks)")
    args = parser.parse_args(argv)
    budget = Budget.for_mode(args.quick)

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"robustprune bench.compare  (torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
          f"{os.cpu_count()} cores on the machine, {usable} usable by this process, "
          f"{'quick' if args.quick else 'full'} run)")
    print(f"timings: median of {budget.global_ours} (ours global) / {budget.global_torch} (torch global) / "
          f"{budget.nm} (N:M, copy) repeats after one warm-up"
          + ("" if budget.global_torch_warmup else " (no warm-up for the torch global baseline)"))
    print()

    if args.sparse_linear_only:
        ok = report_sparse_forward(budget.nm)
        print(f"Checks: nm_linear equals F.linear on the masked weight: {'ok' if ok else 'FAILED'}")
        return 0 if ok else 1

    if args.first_calls_only:
        report_first_calls(measure_first_calls())
        return 0

    if args.nm_only:
        nm = measure_nm(budget)
        report_bandwidth(nm)
        print(f"Checks: N:M equals topk+scatter on randn data and the eager path: "
              f"{'ok' if nm.matches_topk else 'FAILED'}")
        return 0 if nm.matches_topk else 1

    glob = measure_global(budget)
    nm = measure_nm(budget)
    memory = {method: measure_peak_extra(method) for method in MEMORY_METHODS}
    cold = measure_cold_prune()
    first_calls = measure_first_calls()

    report_speed(glob, nm, cold)
    print()
    report_first_calls(first_calls)
    print()
    report_bandwidth(nm)
    print()
    report_memory(memory, glob.weights_bytes)
    print()
    sparse_ok = report_sparse_linear(budget.nm)
    print()
    sparsegpt_ok = sparsegpt.report(max(2, budget.nm // 3))
    print()
    print(f"Checks: global prunes exactly round(s*n) = {round(GLOBAL_SPARSITY * glob.numel)}: "
          f"{'ok' if glob.exact else 'FAILED'}; N:M equals topk+scatter on randn data and the eager path: "
          f"{'ok' if nm.matches_topk else 'FAILED'}; nm_linear equals F.linear on the masked weight: "
          f"{'ok' if sparse_ok else 'FAILED'}; SparseGPT equals the per-column reference: "
          f"{'ok' if sparsegpt_ok else 'FAILED'}")
    return 0 if glob.exact and nm.matches_topk and sparse_ok and sparsegpt_ok else 1


if __name__ == "__main__":
    sys.exit(main())
