"""EarlyRobust: global head selection that never empties a block, neuron selection, the early-bird rule by hand,
coefficient hooks, physical pruning equal to masking, and short real runs on MiniLM + SST-2 (search resume,
the whole pipeline with its parameter counts and training-time ratio)."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from robustprune.data.datasets import load_glue_tsv
from robustprune.pruners.early_robust import (
    EarlyBird,
    SearchSettings,
    StructureCoefficients,
    early_robust,
    early_robust_search,
    select_heads,
    select_neurons,
)
from robustprune.pruners.structured import (
    bert_layers,
    count_parameters,
    head_counts,
    neuron_counts,
    prune_heads_,
    prune_neurons_,
)
from robustprune.train.adversarial import FreeLB
from robustprune.train.schedule import TrainingSchedule


def test_select_heads_never_prunes_the_last_head_of_a_block():
    scores = torch.tensor([[0.1, 0.2, 0.3], [5.0, 6.0, 0.25], [7.0, 8.0, 9.0]])
    keep = select_heads(scores, 4 / 9)  # 4 to prune: 0.1, 0.2, then 0.3 would empty block 0 -> 0.25, 5.0
    assert keep.tolist() == [[False, False, True], [False, True, False], [True, True, True]]
    keep = select_heads(-scores, 6 / 9)  # |score| ranks: same order, signs ignored
    assert keep.sum(1).tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match="at least one per block"):
        select_heads(scores, 7 / 9)
    with pytest.raises(ValueError, match="finite"):
        select_heads(torch.tensor([[1.0, float("nan")]]), 0.5)
    for seed in range(20):  # random scores, random ratios: exact count, never an empty block, smallest first
        g = torch.Generator().manual_seed(seed)
        layers, heads = int(torch.randint(1, 7, (1,), generator=g)), int(torch.randint(2, 13, (1,), generator=g))
        scores = torch.randn(layers, heads, generator=g) * torch.rand(layers, 1, generator=g) ** 4
        ratio = float(torch.rand(1, generator=g)) * (heads - 1) / heads
        keep = select_heads(scores, ratio)
        assert int((~keep).sum()) == round(ratio * layers * heads)
        assert bool(keep.any(1).all())
        for layer in range(layers):  # a kept head beats every pruned head unless it is its block's last one
            if int(keep[layer].sum()) > 1 and bool((~keep).any()):
                assert float(scores.abs()[layer][keep[layer]].min()) >= float(scores.abs()[~keep].max())


def test_select_neurons_is_global_and_exact():
    scores = torch.tensor([[0.5, -0.1, 3.0, 0.2], [1.0, 2.0, -0.05, 4.0]])
    assert select_neurons(scores, 0.5).tolist() == [[False, False, True, False], [True, True, False, True]]
    assert int((~select_neurons(torch.randn(6, 1536), 0.3)).sum()) == round(0.3 * 6 * 1536)


def test_early_bird_needs_consecutive_small_distances():
    bird = EarlyBird(gamma=0.3, patience=2)
    heads = torch.tensor([[True, False, True, True, False]])
    neurons = torch.tensor([[True] * 10])
    flip = torch.tensor([[False, True, True, True, False]])  # 2 of 5 heads differ: distance 0.4
    assert not bird.update(10, heads, neurons)  # nothing to compare with yet
    assert not bird.update(20, heads, neurons)  # streak 1
    assert not bird.update(30, flip, neurons)  # 0.4 >= gamma: streak reset
    assert not bird.update(40, flip, neurons)  # streak 1
    assert bird.update(50, flip, neurons) and bird.found_at == 50
    assert bird.distances == [(20, 0.0, 0.0), (30, 0.4, 0.0), (40, 0.0, 0.0), (50, 0.0, 0.0)]
    restored = EarlyBird(0.3, 2)
    restored.load_state_dict(bird.state_dict())
    assert restored.found_at == 50 and restored.distances == bird.distances
    with pytest.raises(ValueError, match="gamma"):
        EarlyBird(gamma=0.0)
    # a distance exactly equal to gamma is not below it: 1 of 10 neurons differs, distance 0.1 = gamma
    edge = EarlyBird(gamma=0.1, patience=1)
    one_off = neurons.clone()
    one_off[0, 3] = False
    assert not edge.update(1, heads, neurons) and not edge.update(2, heads, one_off)
    assert edge.distances == [(2, 0.0, 0.1)] and edge.streak == 0
    assert edge.update(3, heads, one_off) and edge.found_at == 3  # distance 0 < gamma
    # the search's settings are checked when made, each naming itself
    for bad, message in (({"lambda_heads": -1.0}, "lambda_heads"), ({"coef_lr": 0.0}, "coef_lr"),
                         ({"check_every": 0}, "check_every"), ({"gamma": 2.0}, "gamma"),
                         ({"patience": 0}, "patience")):
        with pytest.raises(ValueError, match=message):
            SearchSettings(**bad)


def test_layer_scope_prunes_the_same_share_of_every_block():
    scores = torch.tensor([[0.1, 0.2, 0.3, 0.4], [5.0, -0.05, 7.0, 8.0], [9.0, 9.5, 0.01, 9.9]])
    # 1/4 of each block's 4 heads: its own smallest |score|, whatever the other blocks hold
    assert select_heads(scores, 0.25, "layer").tolist() == [[False, True, True, True], [True, False, True, True],
                                                           [True, True, False, True]]
    # globally the three smallest happen to be one per block: 0.01, -0.05, 0.1
    assert select_heads(scores, 0.25).tolist() == [[False, True, True, True], [True, False, True, True],
                                                  [True, True, False, True]]
    # 6 of 12: 0.01, -0.05, 0.1, 0.2, 0.3; then 0.4 would empty block 0, so block 1's 5.0 goes instead
    assert select_heads(scores, 0.5).tolist() == [[False, False, False, True], [False, False, True, True],
                                                  [True, True, False, True]]
    assert select_heads(scores, 0.5, "layer").sum(1).tolist() == [2, 2, 2]
    # 3 of each block's 4 heads is the most layer-wise pruning can take; 0.9 rounds to all 4
    assert select_heads(scores, 0.75, "layer").sum(1).tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match="prunes 4 of each block's 4 heads"):
        select_heads(scores, 0.9, "layer")
    with pytest.raises(ValueError, match="scope must be one of"):
        select_heads(scores, 0.25, "block")
    neurons = torch.tensor([[0.5, -0.1, 3.0, 0.2], [1.0, 2.0, -0.05, 4.0]])
    # per block 2 of 4: 0.1 and 0.2, then -0.05 and 1.0 (globally block 0 loses 3, block 1 one)
    assert select_neurons(neurons, 0.5, "layer").tolist() == [[True, False, True, False], [False, True, False, True]]
    assert select_neurons(neurons, 0.5).tolist() == [[False, False, True, False], [True, True, False, True]]


def test_check_interval_in_epochs_by_hand():
    miniepoch = SearchSettings(check_every_epochs=0.05)
    # 0.05 epoch, rounded to the nearest step (halves up), at least one
    for steps_per_epoch, expected in ((2105, 105), (94, 5), (30, 2), (50, 3), (10, 1), (6, 1), (1, 1)):
        assert miniepoch.check_steps(steps_per_epoch) == expected, steps_per_epoch
    assert SearchSettings(check_every=7).check_steps(2105) == 7  # steps when no fraction is given
    assert SearchSettings(check_every=7, check_every_epochs=0.1).check_steps(100) == 10  # the fraction wins
    for bad in (0.0, -0.05, float("nan")):
        with pytest.raises(ValueError, match="check_every_epochs"):
            SearchSettings(check_every_epochs=bad)
    with pytest.raises(ValueError, match="scope"):
        SearchSettings(scope="blocks")
    # checkpoints written before the fraction and the scope existed keep their fingerprint
    assert "check_every_epochs" not in SearchSettings().fingerprint() and "scope" not in SearchSettings().fingerprint()
    assert SearchSettings(check_every_epochs=0.05, scope="layer").fingerprint()["check_every_epochs"] == 0.05


def test_early_bird_patience_five_counts_consecutive_checks():
    heads = torch.ones(2, 5, dtype=torch.bool)
    neurons = torch.ones(1, 20, dtype=torch.bool)
    two_off = neurons.clone()
    two_off[0, :2] = False  # 2 of 20 neurons differ from all-kept: distance exactly 0.1
    one_off = neurons.clone()
    one_off[0, 0] = False  # 1 of 20 neurons differ from all-kept: 0.05; from two_off: 0.05
    bird = EarlyBird(gamma=0.1, patience=5)
    sequence = [neurons, neurons, neurons, neurons, neurons,  # 4 small distances: streak 4, not yet
                two_off,  # exactly gamma: not below it, the streak starts again
                one_off, neurons, one_off, one_off]  # 0.05, 0.05, 0.05, 0: streak 4
    for step, mask in enumerate(sequence, start=1):
        assert not bird.update(step, heads, mask), step
    assert bird.streak == 4 and [round(d[2], 6) for d in bird.distances] == [0, 0, 0, 0, 0.1, 0.05, 0.05, 0.05, 0]
    assert bird.update(11, heads, one_off) and bird.found_at == 11  # the fifth in a row
    # heads must settle too: a head change alone breaks the streak
    both = EarlyBird(gamma=0.1, patience=1)
    moved = heads.clone()
    moved[0, :1] = False  # 1 of 10 heads: distance 0.1, not below gamma
    assert not both.update(1, heads, neurons) and not both.update(2, moved, neurons)
    assert both.update(3, moved, neurons) and both.found_at == 3


@pytest.fixture(scope="module")
def pretrained(minilm_path):
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=2).eval()


@pytest.fixture(scope="module")
def batch(minilm_tokenizer):
    return minilm_tokenizer(["a gripping , funny and moving film", "dull", "it never quite takes off , sadly"],
                            padding=True, return_tensors="pt")


def test_coefficients_scale_heads_and_neurons(pretrained, batch):
    model = copy.deepcopy(pretrained)
    with torch.no_grad():
        plain = model(**batch).logits
        coefficients = StructureCoefficients(model)
        assert tuple(coefficients.heads.shape) == (6, 12) and tuple(coefficients.neurons.shape) == (6, 1536)
        with coefficients:
            torch.testing.assert_close(model(**batch).logits, plain, rtol=0, atol=0)  # all ones: no change
            coefficients.heads[2, 5] = 0.0
            changed = model(**batch).logits
        assert not coefficients.attached
        torch.testing.assert_close(model(**batch).logits, plain, rtol=0, atol=0)  # hooks removed
    assert not torch.allclose(changed, plain)
    with coefficients:  # gradients reach every coefficient through the hooks
        model(**batch).logits.square().sum().backward()
    assert bool((coefficients.heads.grad[:, :] != 0).any(1).all()) and float(coefficients.neurons.grad.abs().sum()) > 0
    assert float(coefficients.l1(2.0, 0.5).detach()) == pytest.approx(2.0 * 71 + 0.5 * 6 * 1536)


def test_physically_pruned_model_gives_the_masked_logits(pretrained, batch):
    g = torch.Generator().manual_seed(0)
    head_keep = select_heads(torch.rand(6, 12, generator=g), 0.6)
    head_keep[3] = False
    head_keep[3, 7] = True  # a block down to its last head
    neuron_keep = torch.rand(6, 1536, generator=g) > 0.4
    neuron_keep[4] = False  # a block with no FFN neuron left
    model = copy.deepcopy(pretrained)
    with torch.no_grad(), StructureCoefficients.from_masks(model, head_keep, neuron_keep):
        masked = model(**batch).logits
    before = count_parameters(model)
    assert prune_heads_(model, head_keep) == head_keep.sum(1).tolist()
    assert prune_neurons_(model, list(neuron_keep)) == neuron_keep.sum(1).tolist()
    with torch.no_grad():
        pruned = model(**batch).logits
    torch.testing.assert_close(pruned, masked, rtol=1e-5, atol=1e-5)
    removed_heads, removed_neurons = int((~head_keep).sum()), int((~neuron_keep).sum())
    # a head (384 / 12 = 32 wide): 32 rows of q, k, v (weights + biases), 32 columns of the output projection
    # a neuron: one row (+ bias) of intermediate.dense and one column of output.dense
    per_head, per_neuron = 3 * 32 * (384 + 1) + 32 * 384, 384 + 1 + 384
    assert count_parameters(model) == before - removed_heads * per_head - removed_neurons * per_neuron
    layer = bert_layers(model)[3].attention.self
    assert layer.num_attention_heads == 1 and layer.all_head_size == 32 and layer.query.weight.shape == (32, 384)
    with pytest.raises(ValueError, match="every head of block 0"):
        prune_heads_(copy.deepcopy(pretrained), torch.zeros(6, 12, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"keep\[0\] must be a bool tensor of shape \(1536,\)"):
        prune_neurons_(copy.deepcopy(pretrained), torch.ones(6, 10, dtype=torch.bool))


def test_other_architectures_are_refused_by_name():
    from transformers import LlamaConfig, LlamaForCausalLM

    llama = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=4))
    with pytest.raises(TypeError, match="BERT-family encoder"):
        StructureCoefficients(llama)
    with pytest.raises(TypeError, match="attention.self.query"):
        prune_heads_(llama, torch.ones(2, 4, dtype=torch.bool))


@pytest.fixture(scope="module")
def train_set():
    from tests.conftest import SST2_TRAIN

    return load_glue_tsv(SST2_TRAIN).subset(range(32))


SEARCH = {"head_ratio": 0.25, "neuron_ratio": 0.3, "attack": FreeLB(steps=2), "progress": False,
          "search": SearchSettings(lambda_heads=1e-2, lambda_neurons=1e-3, coef_lr=0.05, check_every=1, gamma=0.2,
                                   patience=2)}
SMALL = TrainingSchedule(batch_size=8, max_length=32)


@pytest.mark.slow
def test_search_stops_at_the_early_bird_and_resumes(pretrained, minilm_tokenizer, train_set, tmp_path):
    settings = dict(SEARCH, schedule=SMALL.replace(epochs=2, lr=1e-4))
    result = early_robust_search(copy.deepcopy(pretrained), minilm_tokenizer, train_set, **settings)
    assert result.total_steps == 8
    assert result.found_at is not None and result.steps == result.found_at < result.total_steps
    assert [d[0] for d in result.distances] == list(range(2, result.steps + 1))
    assert all(h < 0.2 and n < 0.2 for _, h, n in result.distances[-2:])
    assert int((~result.head_keep).sum()) == 18 and bool(result.head_keep.any(1).all())
    assert int((~result.neuron_keep).sum()) == round(0.3 * 6 * 1536)

    first = early_robust_search(copy.deepcopy(pretrained), minilm_tokenizer, train_set, **settings,
                                checkpoint_dir=tmp_path, stop_after=2)
    assert first.steps == 2 and first.found_at is None
    resumed = early_robust_search(copy.deepcopy(pretrained), minilm_tokenizer, train_set, **settings,
                                  checkpoint_dir=tmp_path)
    assert resumed.history.losses == result.history.losses and resumed.found_at == result.found_at
    assert torch.equal(resumed.head_keep, result.head_keep) and torch.equal(resumed.neuron_keep, result.neuron_keep)


@pytest.mark.slow
def test_early_robust_pipeline_on_minilm(pretrained, minilm_tokenizer, train_set, tmp_path, capsys):
    settings = dict(SEARCH, search_schedule=SMALL.replace(epochs=3, lr=1e-4),
                    finetune_schedule=SMALL.replace(epochs=1, lr=1e-4), compare_full_adversarial=True,
                    checkpoint_dir=tmp_path)
    train = train_set.subset(range(16))  # 2 steps per epoch
    model = copy.deepcopy(pretrained)
    head_before = dict(model.named_parameters())["classifier.weight"].detach().clone()
    result = early_robust(model, minilm_tokenizer, train, **settings)
    assert result.search.found_at is not None
    assert result.heads_per_layer == head_counts(model) == result.search.head_keep.sum(1).tolist()
    assert min(result.heads_per_layer) >= 1 and sum(result.heads_per_layer) == 72 - 18
    assert result.neurons_per_layer == neuron_counts(model) and sum(neuron_counts(model)) == 9216 - 2765
    assert result.params_after == count_parameters(model) < result.params_before == count_parameters(pretrained)
    assert result.search.steps == result.search.found_at < result.search.total_steps == 6
    assert result.finetune_history.steps == 2 and result.not_reset == []
    # the fine-tuning started from the pre-trained head (reset), so it moved away from it only a little
    moved = dict(model.named_parameters())["classifier.weight"].detach() - head_before
    assert 0 < float(moved.abs().max()) < 0.01
    assert result.time_ratio is not None and result.time_ratio > 0
    with capsys.disabled():
        print(f"\nEarlyRobust (search {result.search.steps} FreeLB steps, found at {result.search.found_at}; "
              f"fine-tune 2 plain steps) / full FreeLB fine-tuning (2 steps): time ratio "
              f"{result.time_ratio:.2f}; params {result.params_before} -> {result.params_after} "
              f"({result.param_ratio:.3f})")

    again = copy.deepcopy(pretrained)  # a repeated call finds the ticket and the finished fine-tuning
    settings["compare_full_adversarial"] = False
    repeat = early_robust(again, minilm_tokenizer, train, **settings)
    assert torch.equal(repeat.search.head_keep, result.search.head_keep)
    assert repeat.search.found_at == result.search.found_at
    assert repeat.finetune_history.losses == result.finetune_history.losses
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
