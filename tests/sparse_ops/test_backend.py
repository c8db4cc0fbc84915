"""The ops' first call in a fresh process does not import torch._dynamo (1-2 s), and dynamo's guard is back
in place as soon as dynamo is loaded."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

FRESH_PROCESS = textwrap.dedent("""
    import sys
    import torch
    from robustprune import magnitude_prune
    from robustprune.ops import hard_concrete_gate, nm_compress, nm_decompress, nm_mask, score_thresholds
    from robustprune.sparse_ops.nm_linear import nm_linear
    from robustprune.sparse_ops.obs import sparsegpt_hinv, sparsegpt_prune_

    w = torch.randn(16, 32)
    masks = magnitude_prune(torch.nn.Sequential(torch.nn.Linear(32, 16)), 0.5, targets="*")
    keep = nm_mask(w, 2, 4)
    values, metadata = nm_compress(w * keep, 2, 4)
    nm_decompress(values, metadata, 2, 4, 32)
    x = torch.randn(3, 32, requires_grad=True)
    nm_linear(x, values.requires_grad_(), metadata, None, 2, 4).sum().backward()
    score_thresholds([w], [0.5])
    gate_in = torch.randn(16, 32, requires_grad=True)
    hard_concrete_gate(gate_in, torch.zeros(16, 32, requires_grad=True)).sum().backward()
    hinv, _ = sparsegpt_hinv(torch.eye(32) * 2)
    sparsegpt_prune_(w.clone(), hinv, 0.5)
    assert masks and "torch._dynamo" not in sys.modules, "an op's first call imported torch._dynamo"

    import torch._dynamo  # from now on torch's own guard wraps every kernel again
    from robustprune.sparse_ops.nm import _nm_mask_op

    assert torch.equal(nm_mask(w, 2, 4), keep)
    kernel = _nm_mask_op._backend_fns["cpu"].__wrapped__
    assert getattr(kernel, "__dynamo_disable").__module__.startswith("torch._dynamo")
    print("ok")
""")


def test_first_calls_do_not_import_dynamo_and_its_guard_returns_once_loaded():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the CPU kernels, as users run them
    run = subprocess.run([sys.executable, "-c", FRESH_PROCESS], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-3000:]
