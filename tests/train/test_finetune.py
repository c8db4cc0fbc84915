"""The fine-tuning loop: masked weights stay exactly zero, the schedule is as configured, runs are seeded."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from robustprune import magnitude_prune
from robustprune.data.datasets import TextDataset, load_glue_tsv
from robustprune.train.finetune import finetune_classifier
from robustprune.train.schedule import TrainingSchedule


@pytest.fixture(scope="module")
def tiny_train():
    from tests.conftest import SST2_TRAIN

    return load_glue_tsv(SST2_TRAIN).subset(range(48))


FAST = TrainingSchedule(batch_size=16, lr=1e-3, max_length=32)


def _fresh(minilm_path):
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=2)


def test_masked_weights_stay_exactly_zero(minilm_path, minilm_tokenizer, tiny_train):
    model = _fresh(minilm_path)
    masks = magnitude_prune(model, 0.5)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    history = finetune_classifier(model, minilm_tokenizer, tiny_train, FAST, masks=masks, progress=False)
    assert history.steps == 3
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        weight = params[name].detach()
        assert bool((weight[~mask] == 0).all()), name
        assert not torch.equal(weight[mask], before[name][mask]), name  # kept weights did train
    # without masks the same loop moves pruned weights off zero (so the masking above is doing the work)
    unmasked = _fresh(minilm_path)
    magnitude_prune(unmasked, 0.5)
    finetune_classifier(unmasked, minilm_tokenizer, tiny_train, FAST, progress=False)
    name = next(iter(masks))
    assert bool((dict(unmasked.named_parameters())[name].detach()[~masks[name]] != 0).any())


def test_schedule_seed_and_fractional_epochs(minilm_path, minilm_tokenizer, tiny_train):
    runs = []
    for _ in range(2):
        model = _fresh(minilm_path)
        schedule = TrainingSchedule(epochs=2, batch_size=8, lr=1e-4, warmup_ratio=0.25, max_length=32)
        runs.append(finetune_classifier(model, minilm_tokenizer, tiny_train, schedule, progress=False))
    assert runs[0].losses == runs[1].losses  # same seed, same run
    lrs = runs[0].learning_rates
    assert len(lrs) == 12
    assert lrs[0] == 0.0 and lrs[3] == pytest.approx(1e-4)  # 3 warmup steps, then linear decay to 0
    assert lrs[4:] == sorted(lrs[4:], reverse=True) and lrs[-1] == pytest.approx(1e-4 / 9)
    half = finetune_classifier(_fresh(minilm_path), minilm_tokenizer, tiny_train,
                               TrainingSchedule(epochs=0.5, batch_size=8, max_length=32), progress=False)
    assert half.steps == 3


def test_errors(minilm_path, minilm_tokenizer, tiny_train):
    model = _fresh(minilm_path)
    with pytest.raises(ValueError, match="empty"):
        finetune_classifier(model, minilm_tokenizer, TextDataset(texts=[], labels=[]), progress=False)
    with pytest.raises(ValueError, match="3 labels"):
        finetune_classifier(model, minilm_tokenizer, TextDataset(texts=["a"], labels=[2], num_labels=3),
                            progress=False)
    with pytest.raises(ValueError, match="not a parameter"):
        finetune_classifier(model, minilm_tokenizer, tiny_train, masks={"nope.weight": torch.ones(1)},
                            progress=False)
    name = "classifier.weight"
    with pytest.raises(ValueError, match="shape"):
        finetune_classifier(model, minilm_tokenizer, tiny_train, masks={name: torch.ones(3, 3, dtype=torch.bool)},
                            progress=False)
    with pytest.raises(ValueError, match="TrainingSchedule.epochs must be > 0"):
        finetune_classifier(model, minilm_tokenizer, tiny_train, TrainingSchedule(epochs=0), progress=False)
