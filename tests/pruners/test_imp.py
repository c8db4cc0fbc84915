"""IMP with rewinding: the compounding schedule by hand, exact cumulative global magnitude masks, rewinding, and
two real rounds on the SST-2 fine-tuned MiniLM with per-round masks on disk, resume and the one-shot report."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from robustprune.data.datasets import load_glue_tsv
from robustprune.pruners.imp import (
    imp_schedule,
    iterative_magnitude_prune,
    load_imp_masks,
    magnitude_masks,
    rewind_,
    unfinished_rounds,
)
from robustprune.pruners.magnitude import magnitude_prune
from robustprune.targets import select_targets
from robustprune.train.schedule import TrainingSchedule


def test_schedule_compounds_on_the_survivors():
    assert imp_schedule(1000, 0.2, 3) == [200, 360, 488]  # 200; + 0.2 * 800; + round(0.2 * 640)
    assert imp_schedule(10, 0.5, 3) == [5, 7, 9]  # Python's round: 2.5 -> 2, 1.5 -> 2 (half to even)
    with pytest.raises(ValueError, match="prune_rate"):
        imp_schedule(10, 1.0, 2)
    with pytest.raises(ValueError, match="rounds"):
        imp_schedule(10, 0.2, 0)


def test_masks_rank_only_survivors_and_stay_cumulative():
    weights = {"a": torch.tensor([[5.0, -0.1, 3.0], [0.2, -4.0, 0.3]]), "b": torch.tensor([9.0, 0.05])}
    first = magnitude_masks(weights, 3)  # the 3 smallest |w|: b[1]=0.05, a[0,1]=0.1, a[1,0]=0.2
    assert first["a"].tolist() == [[True, False, True], [False, True, True]]
    assert first["b"].tolist() == [True, False]
    # b[0] grew small and a[0,1] grew large after retraining: survivors are re-ranked, the pruned stay pruned
    trained = {"a": torch.tensor([[5.0, 8.0, 3.0], [0.2, -4.0, 0.3]]), "b": torch.tensor([0.01, 7.0])}
    second = magnitude_masks(trained, 5, first)
    assert second["a"].tolist() == [[True, False, True], [False, True, False]]  # 0.3 goes with 0.01
    assert second["b"].tolist() == [False, False]
    with pytest.raises(ValueError, match="pruned must lie"):
        magnitude_masks(weights, 8)


@pytest.fixture(scope="module")
def pretrained_state(minilm_path):
    torch.manual_seed(0)  # the head initialisation the shared fine-tuned classifier started from
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=2)
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


@pytest.fixture(scope="module")
def tiny_train():
    from tests.conftest import SST2_TRAIN

    return load_glue_tsv(SST2_TRAIN).subset(range(32))


@pytest.mark.slow
def test_one_shot_masks_equal_magnitude_prune(sst2_finetuned):
    model = copy.deepcopy(sst2_finetuned[0])
    params = dict(model.named_parameters())
    weights = {f"{name}.weight": params[f"{name}.weight"].detach().clone() for name in select_targets(model)}
    total = sum(w.numel() for w in weights.values())
    ours = magnitude_masks(weights, round(0.36 * total))
    reference = magnitude_prune(model, 0.36)
    assert list(ours) == list(reference)
    assert all(torch.equal(ours[name], reference[name]) for name in ours)


@pytest.mark.slow
def test_rewind_restores_pretrained_values_and_zeroes_pruned(sst2_finetuned, pretrained_state):
    model = copy.deepcopy(sst2_finetuned[0])
    name = "bert.encoder.layer.0.attention.self.query.weight"
    mask = torch.rand(pretrained_state[name].shape, generator=torch.Generator().manual_seed(0)) > 0.5
    rewind_(model, pretrained_state, {name: mask})
    params = dict(model.named_parameters())
    torch.testing.assert_close(params[name], pretrained_state[name] * mask, rtol=0, atol=0)
    assert torch.equal(params["classifier.weight"], pretrained_state["classifier.weight"])  # head rewound too
    assert not torch.equal(params["classifier.weight"], dict(sst2_finetuned[0].named_parameters())[
        "classifier.weight"])
    headless = {k: v for k, v in pretrained_state.items() if not k.startswith("classifier")}
    with pytest.raises(ValueError, match="classifier"):
        rewind_(model, headless, {name: mask})


@pytest.mark.slow
def test_two_real_rounds_with_resume(sst2_finetuned, minilm_tokenizer, pretrained_state, tiny_train, tmp_path):
    start = sst2_finetuned[0]
    settings = {"prune_rate": 0.2, "schedule": TrainingSchedule(batch_size=16, lr=1e-4, max_length=32),
                "progress": False}
    model = copy.deepcopy(start)
    report = iterative_magnitude_prune(model, minilm_tokenizer, tiny_train, pretrained_state, tmp_path,
                                       rounds=2, **settings)
    names = [f"{name}.weight" for name in select_targets(start)]
    total = sum(dict(start.named_parameters())[n].numel() for n in names)
    counts = imp_schedule(total, 0.2, 2)
    assert [r.round for r in report] == [1, 2]
    assert [r.sparsity for r in report] == pytest.approx([c / total for c in counts], abs=1e-12)
    assert report[1].sparsity == pytest.approx(0.36, abs=1e-6)
    # round 1 ranks the starting weights themselves: it IS one-shot magnitude pruning
    assert report[0].cosine_vs_one_shot == pytest.approx(1.0) and report[0].hamming_vs_one_shot == 0.0
    # round 2 ranks the retrained weights: close to, but not, the one-shot mask
    assert 0.8 < report[1].cosine_vs_one_shot < 1.0 and 0 < report[1].hamming_vs_one_shot < 0.2

    first, second = load_imp_masks(tmp_path, 1), load_imp_masks(tmp_path, 2)
    assert list(first) == names
    assert all(not bool((second[n] & ~first[n]).any()) for n in names)  # cumulative: pruned stays pruned
    # round 2's mask = global magnitude over the survivors of round 1's trained weights
    trained_1 = copy.deepcopy(start)
    from safetensors.torch import load_model

    load_model(trained_1, str(tmp_path / f"round_01-{counts[0]}" / "model.safetensors"))
    params_1 = dict(trained_1.named_parameters())
    expected = magnitude_masks({n: params_1[n] for n in names}, counts[1], first)
    assert all(torch.equal(expected[n], second[n]) for n in names)
    # the model ends as round 2's ticket: pruned weights exactly zero, survivors retrained from pre-trained
    params = dict(model.named_parameters())
    assert all(not bool(params[n][~second[n]].any()) for n in names)
    moved = params[names[0]][second[names[0]]] - pretrained_state[names[0]][second[names[0]]]
    assert 0 < float(moved.detach().abs().max()) < 0.05  # a few small steps away from the rewound values
    assert not (tmp_path / f"round_02-{counts[1]}" / "train").exists()  # the checkpoint is dropped when done
    assert [r.pruned for r in report] == counts

    def stamps():
        return {p.parent.name: p.stat().st_mtime_ns for p in tmp_path.glob("round_*/masks.safetensors")}

    before = stamps()
    resumed = copy.deepcopy(start)
    longer = iterative_magnitude_prune(resumed, minilm_tokenizer, tiny_train, pretrained_state, tmp_path,
                                       rounds=3, **settings)
    assert longer[:2] == report  # finished rounds are read back, not recomputed
    assert {k: v for k, v in stamps().items() if k in before} == before
    assert longer[2].sparsity == pytest.approx(imp_schedule(total, 0.2, 3)[2] / total)
    assert longer[2].cosine_vs_one_shot < report[1].cosine_vs_one_shot + 0.05
    # a run to 30 % shares round 1 (20 %) and trains its own round 2 (30 %, beside the 36 % one)
    known = stamps()
    to_30 = copy.deepcopy(start)
    thirty = iterative_magnitude_prune(to_30, minilm_tokenizer, tiny_train, pretrained_state, tmp_path,
                                       sparsity=0.3, **settings)
    target = round(0.3 * total)
    assert thirty[0] == report[0] and [r.pruned for r in thirty] == [counts[0], target]
    assert {k: v for k, v in stamps().items() if k in known} == known  # nothing shared was recomputed
    assert set(stamps()) - set(known) == {f"round_02-{target}"}
    assert sum(int((~m).sum()) for m in load_imp_masks(tmp_path, 2, target).values()) == target
    with pytest.raises(ValueError, match="pass pruned="):
        load_imp_masks(tmp_path, 2)
    # what a call would resume: only its own schedule's rounds with a training left unfinished
    (tmp_path / f"round_02-{counts[1]}" / "train").mkdir()
    assert unfinished_rounds(start, tmp_path, prune_rate=0.2, sparsity=counts[1] / total) == [
        tmp_path / f"round_02-{counts[1]}"]
    assert unfinished_rounds(start, tmp_path, prune_rate=0.2, sparsity=0.3) == []
    assert unfinished_rounds(start, tmp_path, rounds=2) == [tmp_path / f"round_02-{counts[1]}"]  # prune rate 0.2
    with pytest.raises(ValueError, match="not both"):
        unfinished_rounds(start, tmp_path, rounds=2, sparsity=0.3)
    with pytest.raises(FileNotFoundError, match="no masks for round 9"):
        load_imp_masks(tmp_path, 9)
    # its round 2 equals IMP to 30 % alone, in a folder of its own
    alone = copy.deepcopy(start)
    iterative_magnitude_prune(alone, minilm_tokenizer, tiny_train, pretrained_state, tmp_path / "alone",
                              sparsity=0.3, **settings)
    assert all(torch.equal(a, b) for a, b in zip(alone.state_dict().values(), to_30.state_dict().values()))
    with pytest.raises(ValueError, match="not both"):
        iterative_magnitude_prune(copy.deepcopy(start), minilm_tokenizer, tiny_train, pretrained_state, tmp_path,
                                  sparsity=0.3, rounds=2, **settings)

    other_start = copy.deepcopy(start)
    with torch.no_grad():
        dict(other_start.named_parameters())[names[0]].mul_(2)
    with pytest.raises(ValueError, match="start_checksum"):
        iterative_magnitude_prune(other_start, minilm_tokenizer, tiny_train, pretrained_state, tmp_path,
                                  rounds=2, **settings)


def test_schedule_to_a_sparsity_stops_exactly_there():
    from robustprune.pruners.imp import imp_schedule_to

    assert imp_schedule_to(1000, 0.2, 0.5) == [200, 360, 488, 500]  # the last round prunes only 12
    assert imp_schedule_to(1000, 0.2, 0.2) == [200]
    assert imp_schedule_to(1000, 0.5, 0.75) == [500, 750]
    assert imp_schedule_to(10, 0.01, 0.3) == [1, 2, 3]  # at least one weight per round
    with pytest.raises(ValueError, match="prunes no weight"):
        imp_schedule_to(10, 0.2, 0.01)
    with pytest.raises(ValueError, match="prune_rate"):
        imp_schedule_to(10, 1.0, 0.5)
