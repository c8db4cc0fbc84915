"""``python -m bench.gpu``: one line and a non-zero exit without CUDA; the whole harness on tiny CPU shapes
(``--smoke``), so the first GPU run does not meet an untested code path of the script."""

from __future__ import annotations

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
