"""SparseGPT benchmarks: robustprune's blockwise OBS op against a straightforward per-column implementation.

The baseline is the straightforward per-column loop a user would otherwise write or copy:
:func:`robustprune.sparse_ops.sparsegpt_algorithm.sparsegpt_layer`, SparseGPT's Algorithm 1 as the paper
writes it (per column: mask, error, an outer-product update of the block's remaining columns; after a
block, one matmul for the later columns). The tests hold it bit-identical to a line-for-line
transcription of the reference ``fasterprune`` (with the exact-count unstructured rule robustprune uses:
the published threshold line prunes one more weight per block; see :mod:`robustprune.sparse_ops.obs`).

Workloads: BERT-base layer shapes ``[out, in]`` 768x768 (attention), 3072x768 (FFN in), 768x3072 (FFN
out), fp32, the same ``Hinv`` for both (from the Hessian of random activations), unstructured 50%, 2:4
and 4:8. Used by ``bench/test_bench_sparsegpt.py`` (pytest-benchmark) and :func:`report` (side-by-side
ratios in one process, in the style of ``python -m bench.compare``).
"""

from __future__ import annotations

import functools

import torch

from bench.timing import Case, fmt_time, median_times, print_table, status
from robustprune.sparse_ops.obs import sparsegpt_hinv, sparsegpt_prune_
from robustprune.sparse_ops.sparsegpt_algorithm import sparsegpt_layer

SHAPES = ((768, 768), (3072, 768), (768, 3072))  # [out, in]
PATTERNS = (("unstructured", 0.5), ("2:4", None), ("4:8", None))
BLOCKSIZE = 128
TOKENS = 2048
GOAL_SPEEDUP = 2.0


@functools.cache
def layer_problem(rows: int, columns: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight ~ N(0, 0.02^2) ``[rows, columns]``, Hinv of 2 X^T X / tokens for random correlated X).
    Cached: read-only, callers clone the weight."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.empty(rows, columns).normal_(0.0, 0.02, generator=g)
    x = torch.randn(TOKENS, columns, generator=g) * torch.rand(columns, generator=g).add_(0.1)
    x[:, 1:] += 0.5 * x[:, :-1]  # neighbouring inputs correlate, as real activations do
    hinv, _ = sparsegpt_hinv(2 * x.t() @ x / TOKENS)
    return weight, hinv


def ours(weight: torch.Tensor, hinv: torch.Tensor, pattern: str, sparsity: float | None) -> torch.Tensor:
    """robustprune: prune ``weight`` in place, return the keep-mask."""
    return sparsegpt_prune_(weight, hinv, sparsity, pattern=pattern, blocksize=BLOCKSIZE)


def baseline(weight: torch.Tensor, hinv: torch.Tensor, pattern: str,
             sparsity: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-column algorithm as the paper writes it, with the same pattern."""
    return sparsegpt_layer(weight, hinv, sparsity, pattern=pattern, blocksize=BLOCKSIZE)


@functools.cache
def baseline_result(rows: int, columns: int, pattern: str, sparsity: float | None):
    weight, hinv = layer_problem(rows, columns)
    return baseline(weight, hinv, pattern, sparsity)


def check(rows: int, columns: int, pattern: str, sparsity: float | None) -> tuple[bool, float]:
    """(identical masks, max |weight difference|) of ours against the baseline on one workload."""
    weight, hinv = layer_problem(rows, columns)
    expected_w, expected_keep = baseline_result(rows, columns, pattern, sparsity)
    pruned = weight.clone()
    keep = ours(pruned, hinv, pattern, sparsity)
    return torch.equal(keep, expected_keep), float((pruned - expected_w).abs().max())


def label(rows: int, columns: int, pattern: str, sparsity: float | None) -> str:
    name = f"{sparsity:.0%} unstructured" if pattern == "unstructured" else pattern
    return f"{rows}x{columns} {name}"


def report(repeats: int) -> bool:
    """Print ours vs the straightforward per-column SparseGPT on BERT-base shapes; return the
    correctness check (identical masks and weights within fp32 tolerance), never a timing verdict."""
    print(f"SparseGPT CPU (blocksize {BLOCKSIZE}, same Hinv; ours vs the per-column Algorithm 1, "
          f"sparsegpt_layer; median of {repeats} interleaved rounds after one warm-up, {torch.get_num_threads()} threads)")
    rows_out, correct = [], True
    for rows, columns in SHAPES:
        weight, hinv = layer_problem(rows, columns)
        for pattern, sparsity in PATTERNS:
            same_mask, max_diff = check(rows, columns, pattern, sparsity)
            ok = same_mask and max_diff <= 1e-5
            correct &= ok
            cases = {  # setup (untimed) hands ours a fresh copy: it prunes in place
                "ours": Case(ours, lambda w=weight, h=hinv, p=pattern, s=sparsity: (w.clone(), h, p, s)),
                "baseline": Case(baseline, lambda w=weight, h=hinv, p=pattern, s=sparsity: (w, h, p, s)),
            }
            times = median_times(cases, repeats)
            speedup = times["baseline"] / times["ours"]
            rows_out.append([label(rows, columns, pattern, sparsity), fmt_time(times["ours"]),
                             fmt_time(times["baseline"]), f"{speedup:.1f}x", f">= {GOAL_SPEEDUP:.0f}x",
                             status(speedup >= GOAL_SPEEDUP), "yes" if same_mask else "NO", f"{max_diff:.1e}"])
    print_table(["workload [out x in]", "ours", "per-column", "speedup", "goal", "status", "same masks",
                 "max |dW|"], rows_out)
    return correct


if __name__ == "__main__":
    import sys

    sys.exit(0 if report(3) else 1)
