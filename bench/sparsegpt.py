"""SparseGPT benchmarks: robustprune's blockwise OBS op against a straightforward per-column implementation.

The baseline is SparseGPT's reference ``fasterprune`` loop as published (github.com/IST-DASLab/sparsegpt),
the code a user would otherwise copy: per column it clones and masks the column and updates the block's
remaining columns with an outer-product matmul; after a block, one matmul updates the remaining columns.
The reference's loss bookkeeping (``Losses1``, which does not affect the result) is left out, so the
baseline is slightly faster than the published loop. Its unstructured threshold line is replaced by the exact-count rule robustprune
uses (``int(numel * sparsity)`` per block, stable order), so that both produce the same masks (the
published line prunes one more weight per block; see :mod:`robustprune.sparse_ops.obs`).

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

SHAPES = ((768, 768), (3072, 768), (768, 3072))  # [out, in]
PATTERNS = (("unstructured", 0.5), ("2:4", None), ("4:8", None))
BLOCKSIZE = 128
TOKENS = 2048
GOAL_SPEEDUP = 2.0


def straightforward_sparsegpt(weight: torch.Tensor, hinv: torch.Tensor, sparsity: float, prunen: int = 0,
                              prunem: int = 0, blocksize: int = BLOCKSIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference per-column SparseGPT loop. ``prunen`` counts PRUNED weights per group of ``prunem``
    (the reference's convention). Returns (pruned fp32 weight, bool keep-mask)."""
    W = weight.clone().float()
    rows, columns = W.shape
    keep = torch.ones(rows, columns, dtype=torch.bool)
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = hinv[i1:i2, i1:i2]
        if prunen == 0:
            tmp = W1 ** 2 / (torch.diag(Hinv1).reshape((1, -1))) ** 2
            # reference: thresh = torch.sort(tmp.flatten())[0][int(tmp.numel() * sparsity)]; mask1 = tmp <= thresh
            order = torch.sort(tmp.flatten(), stable=True)[1]
            mask1 = torch.zeros(tmp.numel(), dtype=torch.bool)
            mask1[order[:int(tmp.numel() * sparsity)]] = True
            mask1 = mask1.view(tmp.shape)
        else:
            mask1 = torch.zeros_like(W1) == 1
        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            if prunen != 0 and i % prunem == 0:
                tmp = W1[:, i:(i + prunem)] ** 2 / (torch.diag(Hinv1)[i:(i + prunem)].reshape((1, -1))) ** 2
                mask1.scatter_(1, i + torch.topk(tmp, prunen, dim=1, largest=False)[1], True)
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        W[:, i1:i2] = Q1
        keep[:, i1:i2] = ~mask1
        W[:, i2:] -= Err1.matmul(hinv[i1:i2, i2:])
    return W, keep


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


def _nm(pattern: str) -> tuple[int, int]:
    n, m = pattern.split(":")
    return int(n), int(m)


def ours(weight: torch.Tensor, hinv: torch.Tensor, pattern: str, sparsity: float | None) -> torch.Tensor:
    """robustprune: prune ``weight`` in place, return the keep-mask."""
    return sparsegpt_prune_(weight, hinv, sparsity, pattern=pattern, blocksize=BLOCKSIZE)


def baseline(weight: torch.Tensor, hinv: torch.Tensor, pattern: str,
             sparsity: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The straightforward per-column implementation with the same pattern."""
    if pattern == "unstructured":
        return straightforward_sparsegpt(weight, hinv, float(sparsity))
    n, m = _nm(pattern)
    return straightforward_sparsegpt(weight, hinv, 0.0, m - n, m)


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
    print(f"SparseGPT CPU (blocksize {BLOCKSIZE}, same Hinv; ours vs the straightforward per-column reference "
          f"loop; median of {repeats} interleaved rounds after one warm-up, {torch.get_num_threads()} threads)")
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
