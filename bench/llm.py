"""SmolLM2-135M-Instruct benchmarks: ``python -m bench.llm [--quick]``.

1. Wall time of pruning the whole model (30 Llama blocks, 210 Linear layers) with magnitude (per
   matrix), Wanda and SparseGPT, 50 % unstructured and 2:4, sequential calibration on 128 random
   windows of 128 SST-2 training tokens (``calibration_batches`` mode ``"windows"``, batch 8), each
   on a fresh ``copy.deepcopy`` of the dense model, with the perplexity of the result.
2. Perplexity-evaluation throughput (tokens/s) on SST-2 dev text, windows of 512 tokens, against
   the forward pass alone (``model(input_ids)`` on the same windows): the evaluation's own overhead.
3. Generation with a 2:4 decoder: the model pruned 2:4 by magnitude (per matrix), its 210 Linear layers
   swapped for ``SparseLinear`` (compressed weights, the compiled small-batch CPU kernel), against the dense
   model: greedy decoding tokens/s (KV cache, batch 1, interleaved rounds), and perplexity of the sparse
   model against the masked dense model it was compressed from (same weights: equal up to float rounding).

Absolute times on a shared machine are noise; ratios measured in the same run are what is judged.
"""

from __future__ import annotations

import copy
import functools
import os
import time
from collections.abc import Callable

import torch
from torch import nn

from bench.timing import fmt_time, print_table
from bench.workloads import SST2_DIR
from robustprune import (
    calibration_batches,
    magnitude_prune,
    read_text_lines,
    sparsegpt_prune,
    sparsify_model,
    wanda_prune,
)
from robustprune.eval.perplexity import perplexity

METHODS = ("magnitude", "wanda", "sparsegpt")
PATTERNS = (("unstructured", 0.5), ("2:4", None))
SAMPLES = 128
TOKENS = 128
BATCH_SIZE = 8
PPL_SEQ_LEN = 512
PPL_WINDOWS = 8
GENERATE_PROMPT_TOKENS = 32
GENERATE_NEW_TOKENS = 64
# Goal from the issue: the 2:4 SparseLinear decoder generates at least as fast as the dense model.
GOAL_GENERATION_SPEEDUP = 1.0


@functools.cache
def dense_model() -> tuple[nn.Module, object]:
    """(dense SmolLM2 in eval mode, tokenizer). Cached: callers deepcopy the model."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from robustprune.models import load_smollm2

    return load_smollm2()


def fresh_model() -> nn.Module:
    return copy.deepcopy(dense_model()[0])


@functools.cache
def calibration(num_samples: int = SAMPLES, seq_len: int = TOKENS) -> list[dict[str, torch.Tensor]]:
    texts = read_text_lines(SST2_DIR / "train.tsv", column="sentence")
    return calibration_batches(dense_model()[1], texts, num_samples, seq_len, BATCH_SIZE, mode="windows",
                               seed=0)


@functools.cache
def eval_text() -> str:
    """SST-2 dev sentences joined as the literature joins WikiText (``"\\n\\n"``)."""
    return "\n\n".join(read_text_lines(SST2_DIR / "dev.tsv", column="sentence"))


def prune_fn(method: str, batches: list[dict[str, torch.Tensor]], sparsity: float | None, pattern: str
             ) -> Callable[[nn.Module], object]:
    if method == "magnitude":
        return lambda model: magnitude_prune(model, sparsity, scope="layer", pattern=pattern)
    if method == "wanda":
        return lambda model: wanda_prune(model, batches, sparsity, pattern=pattern, progress=False)
    if method == "sparsegpt":
        return lambda model: sparsegpt_prune(model, batches, sparsity, pattern=pattern, progress=False)
    raise ValueError(f"unknown method {method!r}")


def eval_ppl(model: nn.Module, windows: int = PPL_WINDOWS) -> float:
    return perplexity(model, dense_model()[1], eval_text(), seq_len=PPL_SEQ_LEN, max_windows=windows,
                      progress=False).perplexity


def eval_windows(windows: int = PPL_WINDOWS) -> torch.Tensor:
    ids = dense_model()[1](eval_text(), verbose=False)["input_ids"]
    return torch.tensor(ids[:windows * PPL_SEQ_LEN]).view(windows, PPL_SEQ_LEN)


@torch.inference_mode()
def forward_only(model: nn.Module, windows: torch.Tensor) -> None:
    for row in windows:
        model(input_ids=row[None], use_cache=False)


def prune_table(num_samples: int) -> bool:
    batches = calibration(num_samples)
    print(f"Whole-model prune, SmolLM2-135M-Instruct (fp32), {num_samples} calibration windows x {TOKENS} "
          f"SST-2 tokens (batch {BATCH_SIZE}); one run each on a fresh deepcopy; "
          f"{torch.get_num_threads()} threads. "
          f"Perplexity: {PPL_WINDOWS} windows x {PPL_SEQ_LEN} tokens of SST-2 dev")
    dense = eval_ppl(dense_model()[0])
    rows, ok = [["dense", "", "", "", f"{dense:.2f}"]], True
    for pattern, sparsity in PATTERNS:
        times, ppl = {}, {}
        for method in METHODS:
            model = fresh_model()
            start = time.perf_counter()
            prune_fn(method, batches, sparsity, pattern)(model)
            times[method] = time.perf_counter() - start
            ppl[method] = eval_ppl(model)
            del model
        for method in METHODS:
            ratio = times[method] / times["magnitude"]
            rows.append([method, pattern, fmt_time(times[method]), f"{ratio:.0f}x", f"{ppl[method]:.2f}"])
        ok &= dense <= ppl["sparsegpt"] <= ppl["magnitude"]
    print_table(["method", "pattern", "wall time", "vs magnitude", "perplexity"], rows)
    print(f"check dense <= SparseGPT <= magnitude on perplexity: {'PASS' if ok else 'FAIL'}")
    return ok


def throughput_table(repeats: int) -> bool:
    model = dense_model()[0]
    windows = eval_windows()
    tokens = windows.numel()
    ppl_times, fwd_times = [], []
    for _ in range(repeats):  # interleaved rounds
        start = time.perf_counter()
        eval_ppl(model)
        ppl_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        forward_only(model, windows)
        fwd_times.append(time.perf_counter() - start)
    ppl_t, fwd_t = sorted(ppl_times)[repeats // 2], sorted(fwd_times)[repeats // 2]
    print(f"Perplexity evaluation, {PPL_WINDOWS} windows x {PPL_SEQ_LEN} tokens, batch 1, "
          f"median of {repeats}")
    print_table(["workload", "time", "tokens/s", "vs forward only"],
                [["perplexity()", fmt_time(ppl_t), f"{tokens / ppl_t:.0f}", f"{fwd_t / ppl_t:.2f}"],
                 ["model(input_ids) only", fmt_time(fwd_t), f"{tokens / fwd_t:.0f}", "1.00"]])
    return True


def generation_prompt() -> torch.Tensor:
    """The first GENERATE_PROMPT_TOKENS tokens of the SST-2 dev text, shape (1, tokens)."""
    ids = dense_model()[1](eval_text(), verbose=False)["input_ids"][:GENERATE_PROMPT_TOKENS]
    return torch.tensor(ids)[None]


@torch.inference_mode()
def generate(model: nn.Module, prompt: torch.Tensor) -> torch.Tensor:
    """Greedy decoding of exactly GENERATE_NEW_TOKENS tokens (no early stop), KV cache on."""
    return model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=GENERATE_NEW_TOKENS,
                          min_new_tokens=GENERATE_NEW_TOKENS, do_sample=False, use_cache=True,
                          pad_token_id=dense_model()[1].eos_token_id)


def sparse_decoder() -> tuple[nn.Module, nn.Module]:
    """(masked dense SmolLM2, 2:4 magnitude per matrix; the same model with its Linears as SparseLinear)."""
    masked = fresh_model()
    magnitude_prune(masked, None, scope="layer", pattern="2:4")
    sparse = copy.deepcopy(masked)
    sparsify_model(sparse, "2:4")
    return masked, sparse


def generation_table(repeats: int) -> bool:
    dense = dense_model()[0]
    masked, sparse = sparse_decoder()
    prompt = generation_prompt()
    same_tokens = torch.equal(generate(masked, prompt), generate(sparse, prompt))  # also the warm-up
    generate(dense, prompt)
    times: dict[str, list[float]] = {"dense": [], "sparse": []}
    for _ in range(repeats):  # interleaved rounds
        for name, model in (("dense", dense), ("sparse", sparse)):
            start = time.perf_counter()
            generate(model, prompt)
            times[name].append(time.perf_counter() - start)
    median = {name: sorted(samples)[repeats // 2] for name, samples in times.items()}
    ppl_masked, ppl_sparse = eval_ppl(masked), eval_ppl(sparse)
    speedup = median["dense"] / median["sparse"]
    print(f"Generation, SmolLM2-135M-Instruct fp32, greedy, prompt {GENERATE_PROMPT_TOKENS} tokens + "
          f"{GENERATE_NEW_TOKENS} new, batch 1, KV cache; median of {repeats} interleaved rounds; "
          f"{torch.get_num_threads()} threads")
    print_table(["model", "time", "new tokens/s", "vs dense", "perplexity"],
                [["dense (nn.Linear)", fmt_time(median["dense"]), f"{GENERATE_NEW_TOKENS / median['dense']:.1f}",
                  "1.00x", f"{eval_ppl(dense):.3f}"],
                 ["2:4 masked dense (nn.Linear)", "", "", "", f"{ppl_masked:.3f}"],
                 ["2:4 SparseLinear", fmt_time(median["sparse"]), f"{GENERATE_NEW_TOKENS / median['sparse']:.1f}",
                  f"{speedup:.2f}x", f"{ppl_sparse:.3f}"]])
    same_ppl = abs(ppl_sparse - ppl_masked) <= 1e-4 * ppl_masked
    print(f"goal: SparseLinear decoder >= {GOAL_GENERATION_SPEEDUP}x dense tokens/s: "
          f"{'MET' if speedup >= GOAL_GENERATION_SPEEDUP else 'NOT MET'}; perplexity equals the masked dense "
          f"model's (rel. 1e-4): {'ok' if same_ppl else 'FAILED'}; greedy tokens identical: "
          f"{'yes' if same_tokens else 'no'}")
    return same_ppl


def report(quick: bool, generation_only: bool = False) -> bool:
    if generation_only:
        return generation_table(3 if quick else 7)
    ok = prune_table(32 if quick else SAMPLES)
    print()
    ok &= throughput_table(1 if quick else 3)
    print()
    ok &= generation_table(3 if quick else 7)
    return ok


if __name__ == "__main__":
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="32 calibration windows, one throughput round, three generation rounds")
    parser.add_argument("--generation-only", action="store_true", help="only the generation table")
    args = parser.parse_args()
    sys.exit(0 if report(args.quick, args.generation_only) else 1)
