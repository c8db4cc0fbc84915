"""The prepared GPU acceptance run behind ``python -m bench.gpu --acceptance [--out DIR] [--smoke]``.

One command for a GPU session (budget: 8 minutes on one H100). Each part runs as a child process, so a crash
or a hang in one is a failed part, not a lost run:

1. the kernel tests on CUDA: ``TRITON_INTERPRET=0 python -m pytest -m cuda`` over the kernel test modules
   (every kernel against the CPU path at the small ragged shapes and at BERT-base / LLaMA-7B layer shapes);
2. ``python -m bench.gpu --quick`` (the benchmark table, kept as ``DIR/bench-gpu.md``);
3. ``robustprune run essential-sparsity --quick --device cuda``;
4. ``robustprune run robust-tickets --quick --device cuda``.

Parts 2-4 run with ``ROBUSTPRUNE_LAUNCH_LOG`` set: each child writes the ops' launch counters and the devices
of the tensors each op received (:func:`robustprune.ops.launch_report`) when it exits. A part passes when
its command exits 0 (the tests: with at least one test passed), every op it called ran its Triton
implementation (no CPU kernel of any op), every tensor those ops received was on the run's device, and (the
benchmark) every op the benchmark times was launched. On CUDA the whole run must also fit the 8-minute
budget. ``DIR/acceptance.md`` has the verdict, one row per part (result, wall time, details), the device,
torch / CUDA / Triton versions and the per-op counts and devices; ``DIR/acceptance.json`` the same as data;
``DIR/logs/`` each child's output.

``--smoke`` runs the same driver on the CPU so that the tests cover it: the Triton kernels under the
interpreter (``TRITON_INTERPRET=1``, ``ROBUSTPRUNE_ROUTE=triton`` in the children), the interpreted kernel
tests instead of the CUDA ones, ``bench.gpu --smoke``, and the two shipped configs at ``--quick`` on a
2-layer BERT with random weights and MiniLM's vocabulary (the interpreter needs minutes for one of MiniLM's
selections), ``--device cpu``.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUDGET_S = 8 * 60
# Every kernel test module: each takes the kernel_device / cuda_device fixtures of tests/conftest.py.
KERNEL_TESTS = ("tests/kernels/test_mask_kernels.py", "tests/kernels/test_nm_kernels.py",
                "tests/kernels/test_obs_kernel.py", "tests/kernels/test_hard_concrete_kernels.py",
                "tests/sparse_ops/test_route.py")
EXPERIMENTS = ("essential-sparsity", "robust-tickets")
# The ops bench.gpu times (each must have launched its Triton kernel there).
BENCH_OPS = frozenset({"robustprune::nm_mask", "robustprune::magnitude_thresholds", "robustprune::magnitude_mask_",
                       "robustprune::nm_compress", "robustprune::nm_linear", "robustprune::sparsegpt_prune_",
                       "robustprune::hard_concrete_gate", "robustprune::hard_concrete_gate_backward"})
LAUNCH_LOG_ENV = "ROBUSTPRUNE_LAUNCH_LOG"  # read by robustprune.sparse_ops.backend


@dataclass
class Part:
    """One child process of the run and what it showed."""

    name: str
    command: list[str]
    returncode: int | None  # None: it did not finish within its timeout
    seconds: float
    detail: str = ""  # e.g. pytest's summary line
    launches: dict | None = None  # the child's launch report (robustprune.ops.launch_report), if it wrote one
    required_ops: list[str] = field(default_factory=list)
    checks_launches: bool = True  # False: a test run (its tests call the CPU kernels on purpose)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def launch_problems(report: dict | None, device_type: str, required: Sequence[str] = ()) -> list[str]:
    """What a child's launch report says against "every op ran its Triton kernel on ``device_type``":
    a missing report, no launch at all, an op that ran its CPU kernel, a tensor an op received on another
    device, a ``required`` op never launched."""
    if report is None:
        return ["no launch log: the child never imported the ops, or did not exit normally"]
    problems = []
    triton, cpu = report["launches"].get("triton", {}), report["launches"].get("cpu", {})
    if not triton:
        problems.append("no op launched its Triton kernel")
    for op, count in sorted(cpu.items()):
        problems.append(f"{op} ran its CPU kernel {count} time(s)")
    for kind in ("triton", "cpu"):
        for op, devices in sorted(report["devices"].get(kind, {}).items()):
            elsewhere = [d for d in devices if d.split(":")[0] != device_type]
            if elsewhere:
                problems.append(f"{op} received tensors on {', '.join(elsewhere)} (expected {device_type})")
    for op in sorted(set(required) - set(triton)):
        problems.append(f"{op} never launched its Triton kernel")
    return problems


def judge(part: Part, device_type: str) -> Part:
    """Fill ``part.problems`` from its exit status, its test summary and its launch report."""
    problems = []
    if part.returncode is None:
        problems.append("timed out")
    elif part.returncode != 0:
        problems.append(f"exit status {part.returncode}")
    if not part.checks_launches and not re.search(r"\b[1-9]\d* passed", part.detail):
        problems.append("no test passed")
    if part.checks_launches:
        problems.extend(launch_problems(part.launches, device_type, part.required_ops))
    part.problems = problems
    return part


def verdict(parts: Sequence[Part], total_s: float, budget_s: float | None) -> tuple[bool, list[str]]:
    """(passed, reasons it did not): every part passed, and the run fit the budget (None: no budget)."""
    reasons = [f"{part.name}: {problem}" for part in parts for problem in part.problems]
    if budget_s is not None and total_s > budget_s:
        reasons.append(f"took {_duration(total_s)}, over the {_duration(budget_s)} budget")
    return not reasons, reasons


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{seconds:.1f} s"


def environment(smoke: bool) -> dict[str, str]:
    """Device and versions, as the summary states them."""
    import torch
    import triton

    if smoke:
        device = f"CPU ({platform.processor() or platform.machine()}; Triton interpreter, smoke run)"
    else:
        device = torch.cuda.get_device_name(0)
    return {"device": device, "torch": torch.__version__, "cuda": str(torch.version.cuda),
            "triton": triton.__version__, "python": platform.python_version(), "host": platform.node()}


def summary_markdown(parts: Sequence[Part], env: dict[str, str], total_s: float, budget_s: float | None) -> str:
    """The Markdown of ``acceptance.md``."""
    passed, reasons = verdict(parts, total_s, budget_s)
    budget = "" if budget_s is None else f" (budget {_duration(budget_s)})"
    lines = [f"# GPU acceptance run: {'PASS' if passed else 'FAIL'}", "",
             f"Device: {env['device']}; torch {env['torch']}, CUDA {env['cuda']}, Triton {env['triton']}, "
             f"Python {env['python']}; host {env['host']}.", "",
             f"Total wall time: {_duration(total_s)}{budget}.", "",
             "| part | result | time | details |", "|---|---|---|---|"]
    for part in parts:
        detail = part.detail
        if part.launches is not None:
            launched = part.launches["launches"].get("triton", {})
            detail = (detail + "; " if detail else "") + f"{len(launched)} ops, {sum(launched.values())} Triton launches"
        lines.append(f"| {part.name} | {'pass' if part.ok else 'FAIL'} | {_duration(part.seconds)} | {detail} |")
    if reasons:
        lines += ["", "## Why it failed", ""] + [f"- {reason}" for reason in reasons]
    lines += ["", "## Launches per op", "",
              "Each op's Triton implementation (CUDA kernels, or the interpreter in a smoke run) and the devices of "
              "the tensors it received; `cpu kernel` counts calls of the op's CPU implementation (must be 0).", "",
              "| part | op | Triton launches | devices | cpu kernel |", "|---|---|---|---|---|"]
    for part in parts:
        if part.launches is None:
            continue
        triton, cpu = part.launches["launches"].get("triton", {}), part.launches["launches"].get("cpu", {})
        devices = {**part.launches["devices"].get("cpu", {}), **part.launches["devices"].get("triton", {})}
        for op in sorted(set(triton) | set(cpu)):
            lines.append(f"| {part.name} | {op} | {triton.get(op, 0)} | {', '.join(devices.get(op, [])) or '-'} | "
                         f"{cpu.get(op, 0)} |")
    lines += ["", "## Commands", ""] + [f"- {part.name}: `{shlex.join(part.command)}`" for part in parts]
    return "\n".join(lines) + "\n"


def write_summary(out: Path, parts: Sequence[Part], env: dict[str, str], total_s: float,
                  budget_s: float | None) -> bool:
    """Write ``acceptance.md`` and ``acceptance.json`` into ``out``; returns the verdict."""
    passed, reasons = verdict(parts, total_s, budget_s)
    out.mkdir(parents=True, exist_ok=True)
    (out / "acceptance.md").write_text(summary_markdown(parts, env, total_s, budget_s), encoding="utf-8")
    data = {"passed": passed, "reasons": reasons, "total_s": total_s, "budget_s": budget_s, "environment": env,
            "parts": [{**asdict(part), "ok": part.ok} for part in parts]}
    (out / "acceptance.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    return passed


# ------------------------------------------------------------------------------------------------ the run

def _run_part(name: str, command: list[str], out: Path, env: dict[str, str], timeout_s: float,
              launch_log: bool = True) -> Part:
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    log_path = logs / f"{slug}.launches.json"
    log_path.unlink(missing_ok=True)
    child_env = dict(env)
    if launch_log:
        child_env[LAUNCH_LOG_ENV] = str(log_path)
    print(f"acceptance: {name}: {shlex.join(command)}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        result = subprocess.run(command, cwd=REPO, env=child_env, capture_output=True, text=True, timeout=timeout_s,
                                check=False)
        returncode, stdout, stderr = result.returncode, result.stdout, result.stderr
    except subprocess.TimeoutExpired as expired:
        returncode = None
        stdout = expired.stdout.decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
        stderr = expired.stderr.decode() if isinstance(expired.stderr, bytes) else (expired.stderr or "")
    seconds = time.perf_counter() - start
    (logs / f"{slug}.log").write_text(f"$ {shlex.join(command)}\n\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
                                      encoding="utf-8")
    launches = json.loads(log_path.read_text()) if launch_log and log_path.is_file() else None
    detail = ""
    summary = [line for line in stdout.splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
    if summary:
        detail = summary[-1].strip("= ")
    elif returncode not in (0, None):
        detail = (stderr.strip().splitlines() or ["(no output)"])[-1][:200]
    print(f"acceptance: {name}: exit {returncode}, {_duration(seconds)}", file=sys.stderr, flush=True)
    return Part(name, command, returncode, seconds, detail, launches, checks_launches=launch_log)


def _smoke_config(name: str, out: Path) -> str:
    """The shipped config ``name`` with the tiny BERT of :func:`bench.workloads.write_tiny_bert` as its model:
    a file ``robustprune run`` takes (with ``--quick``, as on the GPU)."""
    import yaml

    from bench.workloads import write_tiny_bert
    from robustprune.experiments.catalog import resolve_config
    from robustprune.experiments.config import read_config_file

    model = out / "tiny-bert"
    if not (model / "config.json").is_file():
        write_tiny_bert(model)
    raw = read_config_file(resolve_config(name))
    raw["model"] = {**(raw.get("model") or {}), "name": str(model)}
    path = out / "configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return str(path)


def run_acceptance(out: Path, smoke: bool) -> bool:
    """Run every part, write the summary into ``out``; returns the verdict (see the module docstring)."""
    out = out.resolve()  # the children run in the repository root
    out.mkdir(parents=True, exist_ok=True)
    env = {key: value for key, value in os.environ.items() if key not in ("ROBUSTPRUNE_ROUTE", LAUNCH_LOG_ENV)}
    env["TRITON_INTERPRET"] = "1" if smoke else "0"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    # the smoke run's children take the Triton route on CPU tensors; the tests choose their routes themselves
    routed = {**env, "ROBUSTPRUNE_ROUTE": "triton"} if smoke else env
    device_type = "cpu" if smoke else "cuda"
    timeout_s = 3600.0 if smoke else 1200.0
    python = sys.executable
    start = time.perf_counter()
    parts = []
    marker = "not cuda and not slow" if smoke else "cuda"
    parts.append(_run_part("kernel tests", [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", marker,
                                            *KERNEL_TESTS], out, env, timeout_s, launch_log=False))
    bench = _run_part("bench.gpu", [python, "-m", "bench.gpu", "--smoke" if smoke else "--quick", "--out",
                                    str(out / "bench-gpu.md")], out, routed, timeout_s)
    bench.required_ops = sorted(BENCH_OPS)
    parts.append(bench)
    for name in EXPERIMENTS:
        config = _smoke_config(name, out) if smoke else name
        results = out / "runs" / name
        shutil.rmtree(results, ignore_errors=True)  # a resumed sweep would skip its points and launch nothing
        parts.append(_run_part(f"run {name}", [python, "-m", "robustprune.cli", "run", config, "--quick", "--device",
                                               device_type, "--out", str(results), "--no-progress"],
                               out, routed, timeout_s))
    total = time.perf_counter() - start
    for part in parts:
        judge(part, device_type)
    passed = write_summary(out, parts, environment(smoke), total, None if smoke else BUDGET_S)
    print(f"acceptance: {'PASS' if passed else 'FAIL'}; summary in {out / 'acceptance.md'}", file=sys.stderr)
    return passed
