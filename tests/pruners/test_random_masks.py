"""Random pruning: exact counts like magnitude pruning, reproducible from the seed, uniform over weights; the
layer-matched random control of a learned ticket."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel

from robustprune.pruners.random_masks import layer_matched_random_masks, random_prune
from robustprune.pruners.robust_tickets import draw_ticket
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


def test_layer_matched_random_masks_keep_the_tickets_counts_at_other_positions():
    """A robust ticket drawn globally from skewed scores keeps very different shares per matrix; the random
    control keeps exactly the same count in every matrix, at other positions."""
    g = torch.Generator().manual_seed(0)
    scores = {"a.weight": torch.randn(40, 30, generator=g) + 1.0,  # mostly kept
              "b.weight": torch.randn(20, 50, generator=g) - 1.0,  # mostly pruned
              "c.weight": torch.randn(64, generator=g)}
    ticket = draw_ticket(scores, 0.5)
    counts = {name: int(mask.sum()) for name, mask in ticket.items()}
    assert counts["a.weight"] > 0.75 * 1200 and counts["b.weight"] < 0.25 * 1000  # far from uniform
    random = layer_matched_random_masks(ticket, seed=7)
    assert list(random) == list(ticket)
    for name, mask in random.items():
        assert mask.dtype == torch.bool and mask.shape == ticket[name].shape
        assert int(mask.sum()) == counts[name]
        assert not torch.equal(mask, ticket[name])
    # the positions are not the ticket's: the overlap is what independence predicts (k^2 / n per matrix)
    a_overlap = int((random["a.weight"] & ticket["a.weight"]).sum())
    assert abs(a_overlap - counts["a.weight"] ** 2 / 1200) < 40
    # reproducible from the seed, another seed another draw, the global RNG untouched
    state = torch.random.get_rng_state()
    again = layer_matched_random_masks(ticket, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(again[k], random[k]) for k in random)
    other = layer_matched_random_masks(ticket, seed=8)
    assert not torch.equal(other["a.weight"], random["a.weight"])
    # one seed's masks are nested across sparsities (as the ticket's per-matrix counts are)
    denser = layer_matched_random_masks(draw_ticket(scores, 0.3), seed=7)
    assert all(bool((random[k] <= denser[k]).all()) for k in random)


def test_layer_matched_random_masks_are_uniform_and_refuse_what_is_not_a_mask():
    ticket = {"w": torch.tensor([True, True, False, False, False, False]), "all": torch.ones(3, dtype=torch.bool),
              "none": torch.zeros(2, 2, dtype=torch.bool)}
    hits = torch.zeros(6)
    for seed in range(600):
        masks = layer_matched_random_masks(ticket, seed=seed)
        assert masks["all"].all() and not masks["none"].any() and int(masks["w"].sum()) == 2
        hits += masks["w"]
    assert float((hits / 600 - 2 / 6).abs().max()) < 0.07  # each position kept 1/3 of the time (sd 0.019)
    with pytest.raises(ValueError, match="empty"):
        layer_matched_random_masks({})
    with pytest.raises(TypeError, match=r"masks\['w'\] must be a bool tensor"):
        layer_matched_random_masks({"w": torch.ones(3)})
