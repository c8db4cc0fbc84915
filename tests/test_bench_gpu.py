"""``python -m bench.gpu``: one line and a non-zero exit without CUDA; the whole harness on tiny CPU shapes
(``--smoke``), so the first GPU run does not meet an untested code path of the script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-m", "bench.gpu", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the real benchmark would run")
def test_without_cuda_one_line_and_exit_1():
    result = run()
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "no CUDA device" in result.stderr


def test_smoke_run_fills_every_row(tmp_path):
    result = run("--smoke", "--out", str(tmp_path / "gpu.md"))
    assert result.returncode == 0, result.stderr[-3000:]
    table = (tmp_path / "gpu.md").read_text()
    assert table == result.stdout.rstrip("\n") + "\n"
    for op in ("N:M mask 2:4", "N:M mask 4:8", "global magnitude 50 %", "nm_linear 2:4", "SparseGPT OBS update",
               "hard-concrete gate fwd + bwd"):
        assert f"| {op}" in table, op
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| op")]
    assert len(rows) == 26 and all(row.count("|") == 10 for row in rows)
    assert all("x |" in row for row in rows)  # every row has a speedup against its baseline


# ------------------------------------------------------------------------------------- --acceptance

def _reports():
    """Launch reports of real op calls: every op on its Triton kernel (the route), and a second where
    nm_mask also ran its CPU kernel."""
    from robustprune import ops

    w = torch.randn(8, 32, generator=torch.Generator().manual_seed(0))
    ops.reset_launch_counts()
    with ops.route("triton"), ops.record_devices():
        ops.nm_compress(w * ops.nm_mask(w, 2, 4), 2, 4)
    routed = ops.launch_report()
    with ops.record_devices():
        ops.nm_mask(w, 2, 4)
    mixed = ops.launch_report()
    ops.reset_launch_counts()
    return routed, mixed


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET", "0") in ("", "0"), reason="needs TRITON_INTERPRET=1")
def test_acceptance_verdict_and_summary(tmp_path):
    from bench.acceptance import Part, judge, write_summary

    routed, mixed = _reports()
    assert routed["launches"] == {"triton": {"robustprune::nm_mask": 1, "robustprune::nm_compress": 1}, "cpu": {}}
    env = {"device": "CPU", "torch": torch.__version__, "cuda": "None", "triton": "3", "python": "3", "host": "h"}

    def parts(bench_report, tests_detail="12 passed, 3 skipped in 4.20s"):
        return [judge(Part("kernel tests", ["pytest"], 0, 4.2, tests_detail, None, checks_launches=False), "cpu"),
                judge(Part("bench.gpu", ["bench"], 0, 2.0, "", bench_report,
                           required_ops=["robustprune::nm_mask"]), "cpu"),
                judge(Part("run essential-sparsity", ["run"], 0, 61.0, "", routed), "cpu")]

    good = parts(routed)
    assert all(part.ok for part in good)
    assert write_summary(tmp_path / "ok", good, env, 67.2, None)
    summary = (tmp_path / "ok" / "acceptance.md").read_text()
    assert summary.startswith("# GPU acceptance run: PASS\n")
    assert "| kernel tests | pass | 4.2 s | 12 passed, 3 skipped in 4.20s |" in summary
    assert "| run essential-sparsity | pass | 1 min 01 s | 2 ops, 2 Triton launches |" in summary
    assert "| bench.gpu | robustprune::nm_mask | 1 | cpu | 0 |" in summary and "Why it failed" not in summary
    data = json.loads((tmp_path / "ok" / "acceptance.json").read_text())
    assert data["passed"] and data["parts"][2]["launches"] == routed

    # an op that ran its CPU kernel fails its part and the run; so do the other failures the verdict knows
    bad = parts(mixed, tests_detail="15 skipped in 1.00s")
    assert bad[1].problems == ["robustprune::nm_mask ran its CPU kernel 1 time(s)"]
    assert bad[0].problems == ["no test passed"]
    assert not write_summary(tmp_path / "bad", bad, env, 67.2, 60.0)
    summary = (tmp_path / "bad" / "acceptance.md").read_text()
    assert summary.startswith("# GPU acceptance run: FAIL\n")
    for reason in ("- bench.gpu: robustprune::nm_mask ran its CPU kernel 1 time(s)", "- kernel tests: no test passed",
                   "- took 1 min 07 s, over the 1 min 00 s budget"):
        assert reason in summary, reason
    assert "| bench.gpu | robustprune::nm_mask | 1 | cpu | 1 |" in summary
    assert judge(Part("run", ["run"], 0, 1.0, "", routed), "cuda").problems == [
        "robustprune::nm_compress received tensors on cpu (expected cuda)",
        "robustprune::nm_mask received tensors on cpu (expected cuda)"]
    assert judge(Part("run", ["run"], None, 1.0, "", None), "cpu").problems == [
        "timed out", "no launch log: the child never imported the ops, or did not exit normally"]
    assert judge(Part("run", ["run"], 2, 1.0, "", routed, required_ops=["robustprune::nm_linear"]), "cpu").problems == [
        "exit status 2", "robustprune::nm_linear never launched its Triton kernel"]


@pytest.mark.slow
def test_acceptance_smoke_runs_every_part_on_the_interpreter(tmp_path):
    from bench.acceptance import BENCH_OPS, EXPERIMENTS

    result = subprocess.run([sys.executable, "-m", "bench.gpu", "--acceptance", "--smoke", "--out", str(tmp_path)],
                            cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=3600, check=False)
    summary = (tmp_path / "acceptance.md").read_text()
    assert result.returncode == 0, summary + result.stderr[-3000:]
    assert summary.startswith("# GPU acceptance run: PASS\n")
    data = json.loads((tmp_path / "acceptance.json").read_text())
    assert [part["name"] for part in data["parts"]] == ["kernel tests", "bench.gpu",
                                                        *(f"run {name}" for name in EXPERIMENTS)]
    assert data["environment"]["device"].startswith("CPU")
    tests, bench, *runs = data["parts"]
    assert tests["ok"] and " passed" in tests["detail"] and tests["launches"] is None
    assert set(bench["launches"]["launches"]["triton"]) >= BENCH_OPS
    for part in (bench, *runs):
        assert part["ok"] and part["launches"]["route"] == "triton", part["name"]
        assert part["launches"]["launches"]["cpu"] == {} and part["launches"]["launches"]["triton"]
        assert {d for devices in part["launches"]["devices"]["triton"].values() for d in devices} == {"cpu"}
    for name in EXPERIMENTS:
        assert (tmp_path / "runs" / name / "results.jsonl").is_file()
    assert "| N:M mask 2:4" in (tmp_path / "bench-gpu.md").read_text()
