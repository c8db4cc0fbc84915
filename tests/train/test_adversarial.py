"""FreeLB / PGD in embedding space: hand-checked perturbation norms, gradient accumulation, real MiniLM runs,
fixed masks and checkpoint / resume."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers import AutoModelForSequenceClassification

from robustprune import magnitude_prune
from robustprune.data.datasets import load_glue_tsv
from robustprune.train.adversarial import (
    PGD,
    FreeLB,
    adversarial_backward,
    ascend,
    initial_delta,
)
from robustprune.train.finetune import adversarial_finetune
from robustprune.train.schedule import TrainingSchedule


class LinearLossModel(nn.Module):
    """A hand-checkable classifier: loss = sum(inputs_embeds * C), so d loss / d delta = C exactly."""

    def __init__(self, coefficients: torch.Tensor, vocab: int = 10):
        super().__init__()
        self.embeddings = nn.Embedding(vocab, coefficients.shape[-1])
        self.register_buffer("coefficients", coefficients)

    def get_input_embeddings(self):
        return self.embeddings

    def forward(self, inputs_embeds, attention_mask, labels):
        return SimpleNamespace(loss=(inputs_embeds * self.coefficients).sum())


def toy_batch():
    # example 0: 3 real tokens; example 1: 2 real tokens + 1 padding; hidden 4
    c = torch.zeros(2, 3, 4)
    c[0] = torch.tensor([[3.0, 0, 0, 0], [0, 4.0, 0, 0], [0, 0, 0, 0]])  # ||C_0|| = 5
    c[1, :2] = torch.tensor([[1.0, 2.0, 2.0, 0.0], [0, 0, 0, 0]])  # ||C_1|| = 3
    batch = {
        "input_ids": torch.tensor([[1, 2, 3], [4, 5, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]),
        "labels": torch.tensor([0, 1]),
    }
    return c, batch


@pytest.mark.parametrize("steps,adv_lr,max_norm", [(3, 0.3, 0.0), (3, 0.3, 0.5), (2, 1.0, 0.25)])
def test_freelb_norms_loss_and_gradients_by_hand(steps, adv_lr, max_norm):
    c, batch = toy_batch()
    model = LinearLossModel(c)
    result = adversarial_backward(
        model, batch, FreeLB(steps=steps, adv_lr=adv_lr, adv_init_mag=0.0, adv_max_norm=max_norm)
    )
    # delta_0 = 0; each ascent adds adv_lr * C / ||C|| (unit direction): ||delta_k|| = k * adv_lr, capped
    expected_norms = [min(k * adv_lr, max_norm) if max_norm > 0 else k * adv_lr for k in range(steps)]
    assert result.delta_norms.shape == (steps, 2)
    for k, norm in enumerate(expected_norms):
        assert result.delta_norms[k].tolist() == pytest.approx([norm, norm], abs=1e-6)
    # loss = sum_k <C, E + delta_k> / K with <C, delta_k> = ||C|| * ||delta_k|| (delta_k is along C)
    embeds = model.embeddings(batch["input_ids"]).detach()
    clean = float((embeds * c).sum())
    expected_loss = sum(clean + (5.0 + 3.0) * norm for norm in expected_norms) / steps
    assert result.loss == pytest.approx(expected_loss, rel=1e-5)
    # K passes of loss / K: the embedding rows get exactly C once (accumulated over the passes)
    expected_grad = torch.zeros(10, 4).index_add_(0, batch["input_ids"].view(-1), c.view(-1, 4))
    torch.testing.assert_close(model.embeddings.weight.grad, expected_grad)


def test_pgd_ascent_does_not_touch_parameter_gradients():
    c, batch = toy_batch()
    model = LinearLossModel(c)
    result = adversarial_backward(model, batch, PGD(steps=2, adv_lr=0.4, adv_max_norm=0.6))
    assert result.delta_norms.shape == (3, 2)
    assert result.delta_norms[:, 0].tolist() == pytest.approx([0.0, 0.4, 0.6], abs=1e-6)
    expected_grad = torch.zeros(10, 4).index_add_(0, batch["input_ids"].view(-1), c.view(-1, 4))
    torch.testing.assert_close(model.embeddings.weight.grad, expected_grad)  # one backward: the final one
    embeds = model.embeddings(batch["input_ids"]).detach()
    assert result.loss == pytest.approx(float((embeds * c).sum()) + 8.0 * 0.6, rel=1e-5)


def test_initial_delta_scale_and_padding():
    embeds = torch.zeros(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    torch.manual_seed(0)
    delta = initial_delta(embeds, mask, adv_init_mag=0.6)
    assert bool((delta[1, 2:] == 0).all())  # padding is never perturbed
    bounds = [0.6 / math.sqrt(5 * 8), 0.6 / math.sqrt(2 * 8)]  # adv_init_mag / sqrt(length * hidden)
    for i, bound in enumerate(bounds):
        assert float(delta[i].abs().max()) <= bound
        assert float(delta[i].abs().max()) > 0.8 * bound  # uniform in [-bound, bound], not smaller
    assert torch.equal(initial_delta(embeds, mask, 0.0), torch.zeros_like(embeds))


def test_ascend_projection_and_zero_gradient():
    delta = torch.zeros(2, 1, 2)
    grad = torch.tensor([[[3.0, 4.0]], [[0.0, 0.0]]])
    out = ascend(delta, grad, adv_lr=2.0, adv_max_norm=1.0)
    torch.testing.assert_close(out[0, 0], torch.tensor([0.6, 0.8]))  # 2 * (0.6, 0.8) projected to norm 1
    assert torch.equal(out[1], torch.zeros(1, 2))  # zero gradient: no step and no NaN


@pytest.fixture(scope="module")
def tiny_train():
    from tests.conftest import SST2_TRAIN

    return load_glue_tsv(SST2_TRAIN).subset(range(8))


@pytest.fixture(scope="module")
def minilm_classifier(minilm_path):
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=2).eval()


def _batch(tokenizer, data, n=4):
    enc = tokenizer(data.texts[:n], padding=True, truncation=True, max_length=32, return_tensors="pt")
    return dict(enc) | {"labels": torch.tensor(data.labels[:n])}


def _grads(model):
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_freelb_on_minilm_matches_plain_and_respects_the_ball(
    minilm_classifier, minilm_tokenizer, tiny_train
):
    model = copy.deepcopy(minilm_classifier)  # eval mode: no dropout, so the passes are comparable
    batch = _batch(minilm_tokenizer, tiny_train)
    model(**batch).loss.backward()
    plain = _grads(model)
    model.zero_grad()
    result = adversarial_backward(model, batch, FreeLB(steps=1, adv_init_mag=0.0))
    for name, grad in _grads(model).items():  # K = 1 without init is exactly the clean step
        torch.testing.assert_close(grad, plain[name], rtol=1e-5, atol=1e-7)
    model.zero_grad()
    result = adversarial_backward(
        model, batch, FreeLB(steps=3, adv_lr=0.1, adv_init_mag=0.02, adv_max_norm=0.05)
    )
    assert float(result.delta_norms.max()) <= 0.05 + 1e-6
    assert result.delta_norms[-1].tolist() == pytest.approx([0.05] * 4, abs=1e-6)  # 0.1 steps exceed the ball
    assert result.delta_norms[0].max() <= 0.02 + 1e-6  # initial L2 norm is at most adv_init_mag


def test_adversarial_finetune_keeps_masks_and_resumes_exactly(
    minilm_classifier, minilm_tokenizer, tiny_train, tmp_path
):
    schedule = TrainingSchedule(epochs=1, batch_size=4, lr=1e-3, max_length=32)
    settings = dict(schedule=schedule, progress=False)
    attack = FreeLB(steps=2, adv_init_mag=0.6)

    def fresh():
        model = copy.deepcopy(minilm_classifier)
        return model, magnitude_prune(model, 0.5)

    model, masks = fresh()
    history = adversarial_finetune(model, minilm_tokenizer, tiny_train, attack, masks=masks, **settings)
    assert history.steps == 2 and all(math.isfinite(loss) for loss in history.losses)
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        assert bool((params[name].detach()[~mask] == 0).all()), name
    assert not torch.equal(params["classifier.weight"], minilm_classifier.classifier.weight)

    interrupted, masks = fresh()
    first = adversarial_finetune(
        interrupted,
        minilm_tokenizer,
        tiny_train,
        attack,
        masks=masks,
        checkpoint_dir=tmp_path,
        stop_after=1,
        **settings,
    )
    assert first.steps == 1 and (tmp_path / "checkpoint.pt").is_file()
    resumed, masks = fresh()  # a new process would start from scratch: everything comes from the checkpoint
    second = adversarial_finetune(
        resumed, minilm_tokenizer, tiny_train, attack, masks=masks, checkpoint_dir=tmp_path, **settings
    )
    assert second.losses == history.losses
    for name, value in resumed.state_dict().items():
        assert torch.equal(value, model.state_dict()[name]), name
    with pytest.raises(ValueError, match="other settings"):
        adversarial_finetune(
            fresh()[0],
            minilm_tokenizer,
            tiny_train,
            attack,
            checkpoint_dir=tmp_path,
            schedule=schedule.replace(lr=2e-3),
            progress=False,
        )


def test_clear_errors(minilm_classifier):
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        FreeLB(steps=0)
    with pytest.raises(ValueError, match="adv_max_norm must be > 0"):
        PGD(adv_max_norm=0.0)
    with pytest.raises(ValueError, match="adv_lr must be a finite number >= 0"):
        FreeLB(adv_lr=-1.0)
    with pytest.raises(ValueError, match="batch needs 'labels'"):
        adversarial_backward(
            minilm_classifier,
            {"input_ids": torch.ones(1, 2, dtype=torch.long), "attention_mask": torch.ones(1, 2)},
            FreeLB(),
        )
    with pytest.raises(TypeError, match="attack must be FreeLB"):
        adversarial_backward(minilm_classifier, {}, "freelb")
