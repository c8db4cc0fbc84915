"""robustprune against TextAttack itself, same model and sentences:
``python -m bench.textattack_speed [--examples N] [--threads T] [--recipes pwws,deepwordbug]``.

Needs TextAttack 0.3.11 importable beside robustprune (not a dependency; the recipe for an offline venv is
in ``tests/eval/attacks/fixtures/TEXTATTACK_NOTES.md``); without it the command says so and exits 1.

For each recipe, on the first N SST-2 dev sentences against all-MiniLM-L6-v2 fine-tuned on SST-2 (the
``bench.attacks`` classifier, max_length 128), three engines run in interleaved rounds in one process:

* **robustprune**: ``attack(...)`` as shipped (``mode="textattack"``, 32 examples pooled per model call);
* **TextAttack**: TextAttack's own recipe (``PWWSRen2019`` / ``DeepWordBugGao2018``) with its own
  ``HuggingFaceModelWrapper``, which pads every batch to ``tokenizer.model_max_length`` (set to 128);
* **TextAttack, dynamic padding**: the same TextAttack recipe, its model calls going through robustprune's
  ``TextClassifier`` (length-sorted batches padded to their longest text): the fair comparison.

TextAttack attacks one example at a time with ``Attack.attack``; before each example numpy's and Python's
generators are seeded with ``seed + index``, as robustprune's textattack mode does, so DeepWordBug draws the
same edits in all engines. Printed: each engine's attack time (one-off loads such as WordNet happen in an
untimed warm-up), the ratios, and how many examples got the same status, final text and query count as
robustprune (a float32 model's batch-dependent rounding can rarely tip a tie).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

import numpy as np
import torch

from bench import attacks
from bench.timing import fmt_time, print_table
from robustprune.eval.attacks import attack
from robustprune.eval.attacks.textattack_adapter import report_from_textattack, textattack_attack

RECIPES = ("pwws", "deepwordbug")
SEED = 0


def textattack_run(built, data) -> tuple[float, list]:
    """(seconds, TextAttack results) attacking every example of ``data`` with the built TextAttack attack."""
    start = time.perf_counter()
    results = []
    for index, (text, label) in enumerate(zip(data.texts, data.labels)):
        np.random.seed(SEED + index)
        random.seed(SEED + index)
        results.append(built.attack(text, int(label)))
    return time.perf_counter() - start, results


def huggingface_wrapper():
    import textattack

    model, tokenizer = attacks.finetuned()
    tokenizer.model_max_length = attacks.classifier().max_length
    return textattack.models.wrappers.HuggingFaceModelWrapper(model, tokenizer)


def build_textattack(recipe: str, padding: str):
    import textattack

    if padding == "dynamic":
        return textattack_attack(attacks.classifier(), recipe)
    names = {"pwws": "PWWSRen2019", "deepwordbug": "DeepWordBugGao2018"}
    return getattr(textattack.attack_recipes, names[recipe]).build(huggingface_wrapper())


def outcome(report) -> list[tuple]:
    return [(r.status, r.perturbed, r.queries) for r in report.results]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--recipes", default=",".join(RECIPES))
    args = parser.parse_args()
    try:
        import textattack  # noqa: F401
    except ImportError:
        print("bench.textattack_speed needs TextAttack 0.3.11 importable (pip install textattack); not installed here")
        return 1
    torch.set_num_threads(args.threads)
    data = attacks.dev_examples(args.examples)
    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    print(f"robustprune vs TextAttack 0.3.11 on all-MiniLM-L6-v2 fine-tuned on SST-2: the first {args.examples} dev "
          f"sentences, {torch.get_num_threads()} thread(s) (load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}), best of {args.rounds} interleaved round(s) after a "
          "warm-up; one-off loads not timed.")
    rows = []
    for name in names:
        built = {padding: build_textattack(name, padding) for padding in ("max_length", "dynamic")}
        attack(attacks.classifier(), data.subset(range(2)), name, progress=False)  # warm-up: WordNet, tokenizer
        textattack_run(built["dynamic"], data.subset(range(2)))
        times: dict[str, list[float]] = {"robustprune": [], "max_length": [], "dynamic": []}
        for _ in range(args.rounds):
            report = attack(attacks.classifier(), data, name, progress=False)
            times["robustprune"].append(report.seconds)
            for padding in ("max_length", "dynamic"):
                built[padding].clear_cache()  # model, transformation and constraint caches: a cold run as ours
                seconds, results = textattack_run(built[padding], data)
                times[padding].append(seconds)
                if padding == "dynamic":
                    theirs = report_from_textattack(results, name)
                    same = sum(a == b for a, b in zip(outcome(report), outcome(theirs)))
        best = {engine: min(samples) for engine, samples in times.items()}
        rows.append([name, str(report.total_queries), fmt_time(best["robustprune"]), fmt_time(best["max_length"]),
                     fmt_time(best["dynamic"]), f"{best['max_length'] / best['robustprune']:.1f}x",
                     f"{best['dynamic'] / best['robustprune']:.1f}x", f"{same}/{len(data)}",
                     fmt_time(report.setup_seconds)])
        print(f"  {report.summary()}")
    print_table(["recipe", "queries", "robustprune", "TextAttack", "TextAttack dynamic", "vs TextAttack",
                 "vs TextAttack dynamic", "same outcome", "robustprune setup"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
