"""Random pruning: exact counts like magnitude pruning, reproducible from the seed, uniform over weights."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel

from robustprune.pruners.random_masks import random_prune
from robustprune.targets import select_targets


@pytest.fixture(scope="module")
def encoder(minilm_path):
    return AutoModel.from_pretrained(minilm_path).eval()


def fresh(encoder):
    import copy

    return copy.deepcopy(encoder)


def test_global_masks_prune_exactly_the_share_and_zero_those_weights(encoder):
    model = fresh(encoder)
    masks = random_prune(model, 0.37, seed=3)
    total = sum(m.numel() for m in masks.values())
    assert sum(int((~m).sum()) for m in masks.values()) == round(0.37 * total)
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        assert torch.all(params[name][~mask] == 0)
        assert torch.equal(params[name][mask], dict(encoder.named_parameters())[name][mask])
    # spread at random: every matrix loses about the global share (a matrix has >= 147k weights here)
    shares = [float((~m).float().mean()) for m in masks.values()]
    assert max(abs(s - 0.37) for s in shares) < 0.01


@pytest.mark.slow
def test_same_seed_same_masks_other_seed_other_masks(encoder):
    first = random_prune(fresh(encoder), 0.5, seed=1)
    again = random_prune(fresh(encoder), 0.5, seed=1)
    other = random_prune(fresh(encoder), 0.5, seed=2)
    assert all(torch.equal(first[k], again[k]) for k in first)
    overlap = sum(int((first[k] & other[k]).sum()) for k in first) / sum(int(first[k].sum()) for k in first)
    assert 0.45 < overlap < 0.55  # independent draws: half of one's kept weights are kept by the other


def test_layer_scope_and_nm_pattern(encoder):
    layer = random_prune(fresh(encoder), 0.25, seed=0, scope="layer")
    for mask in layer.values():
        assert int((~mask).sum()) == round(0.25 * mask.numel())
    nm = random_prune(fresh(encoder), pattern="2:4", seed=0)
    for mask in nm.values():
        assert torch.all(mask.reshape(mask.shape[0], -1, 4).sum(-1) == 2)
    assert len(nm) == len(select_targets(encoder))
    with pytest.raises(ValueError, match="scope"):
        random_prune(fresh(encoder), 0.5, scope="row")
