"""Robust Tickets: L0 penalty and schedule by hand, exact global tickets, gated forward, mask training under
FreeLB with checkpoint / resume, and the whole pipeline on the fine-tuned MiniLM (small budgets)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from robustprune.data.datasets import load_glue_tsv
from robustprune.pruners.robust_tickets import (
    MASK_SCHEDULE,
    HardConcreteMasks,
    LambdaSchedule,
    draw_ticket,
    l0_penalty,
    reset_to_pretrained,
    robust_ticket,
    train_hard_concrete_masks,
)
from robustprune.train.adversarial import FreeLB
from robustprune.train.finetune import ADVERSARIAL_SCHEDULE


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_l0_penalty_equals_its_formula():
    # shift = beta * log(-gamma / zeta) = (2/3) * log(0.1 / 1.1) = -1.598597...
    shift = (2 / 3) * math.log(0.1 / 1.1)
    assert shift == pytest.approx(-1.5985968, abs=1e-6)
    a, b = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([[5.0]])
    expected = (sigmoid(1.5985968) + sigmoid(2.5985968) + sigmoid(-0.4014032) + sigmoid(6.5985968)) / 4
    assert float(l0_penalty([a, b])) == pytest.approx(expected, abs=1e-6)  # one mean over all 4 gates
    assert float(l0_penalty([a])) == pytest.approx(
        (sigmoid(1.5985968) + sigmoid(2.5985968) + sigmoid(-0.4014032)) / 3, abs=1e-6
    )
    la = a.clone().requires_grad_()
    l0_penalty([la]).backward()
    s = torch.sigmoid(a - shift)
    torch.testing.assert_close(la.grad, s * (1 - s) / 3)
    with pytest.raises(ValueError, match="empty"):
        l0_penalty([])


def test_lambda_schedule():
    schedule = LambdaSchedule(2.0, warmup_steps=4)
    assert [schedule(t) for t in range(6)] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.0]
    assert LambdaSchedule(3.0)(0) == 3.0
    with pytest.raises(ValueError, match="l0_lambda"):
        LambdaSchedule(-1.0)


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.37, 0.5, 0.9, 0.999])
def test_ticket_has_exact_sparsity_and_keeps_the_largest(sparsity):
    g = torch.Generator().manual_seed(0)
    scores = {"a.weight": torch.randn(33, 17, generator=g), "b.weight": torch.randn(5, 40, generator=g) + 1}
    masks = draw_ticket(scores, sparsity)
    total = sum(t.numel() for t in scores.values())
    pruned = sum(int((~m).sum()) for m in masks.values())
    assert pruned == round(sparsity * total)
    kept = torch.cat([s[m] for s, m in zip(scores.values(), masks.values())])
    dropped = torch.cat([s[~m] for s, m in zip(scores.values(), masks.values())])
    if kept.numel() and dropped.numel():
        assert float(kept.min()) >= float(dropped.max())


def test_ticket_ties_are_pruned_in_target_then_row_major_order():
    scores = {"a": torch.zeros(2, 3), "b": torch.zeros(4), "c": torch.tensor([-1.0, 2.0])}
    masks = draw_ticket(scores, 0.5)  # 12 gates, prune 6: c[0] (lowest), then the first 5 tied zeros
    assert masks["c"].tolist() == [False, True]
    assert masks["a"].tolist() == [[False, False, False], [False, False, True]]
    assert masks["b"].tolist() == [True, True, True, True]
    with pytest.raises(ValueError, match="NaN"):
        draw_ticket({"a": torch.tensor([0.0, float("nan")])}, 0.5)
    with pytest.raises(ValueError, match=r"sparsity must lie in \[0, 1\)"):
        draw_ticket(scores, 1.0)


def test_log_alpha_starts_at_the_official_init_for_the_drop_rate():
    """The L0 reference init (Louizos et al.; the Robust Tickets code): log_alpha = log(1 - p) - log(p), so the
    eval gate sigmoid(log_alpha) starts at the keep rate 1 - p. p = 0.2 is where the sign matters (at 0.5 it
    cannot): log_alpha = log(0.8 / 0.2) = log 4 = 1.386294, eval mask 0.8 * (1.1 + 0.1) - 0.1 = 0.86, and the
    L0 penalty sigmoid(1.386294 + 1.598597) = 0.951887."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    masks = HardConcreteMasks(model, "0", init_drop_rate=0.2, init_std=0.0).eval()
    assert torch.allclose(masks.log_alphas[0].detach(), torch.full((3, 4), 1.3862944))
    assert torch.allclose(masks.gate(0, torch.ones(3, 4)).detach(), torch.full((3, 4), 0.86))
    assert float(masks.l0_penalty().detach()) == pytest.approx(0.951887, abs=1e-6)
    # a drop rate of 0.95: log_alpha = log(0.05 / 0.95) = -2.944439, every eval gate closed (0.05 * 1.2 < 0.1)
    closed = HardConcreteMasks(model, "0", init_drop_rate=0.95, init_std=0.0).eval()
    assert float(closed.log_alphas[0][0, 0].detach()) == pytest.approx(-2.944439, abs=1e-6) and closed.eval_density() == 0.0


def test_init_mask_is_the_authors_constant_init():
    """The authors' code starts every gate's eval value at mask_p = 0.9: log_alpha = logit((0.9 + 0.1) / 1.2)
    = logit(5/6) = log 5 = 1.609438, every entry alike (no jitter), eval gate sigmoid(log 5) * 1.2 - 0.1 = 0.9,
    L0 penalty sigmoid(1.609438 + 1.598597) = 0.961136."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    masks = HardConcreteMasks(model, ["0", "1"], init_mask=0.9, seed=5).eval()
    for la in masks.log_alphas:
        assert torch.equal(la.detach(), torch.full_like(la, math.log(5.0)))
    assert torch.allclose(masks.gate(0, torch.ones(3, 4)).detach(), torch.full((3, 4), 0.9))
    assert float(masks.l0_penalty().detach()) == pytest.approx(0.961136, abs=1e-6)
    assert masks.eval_density() == 1.0
    # 0.0 is the closed end: log_alpha = logit(0.1 / 1.2) = -log 11 = -2.397895, the eval gate exactly 0
    closed = HardConcreteMasks(model, "0", init_mask=0.0 + 1e-9).eval()
    assert float(closed.log_alphas[0][0, 0].detach()) == pytest.approx(-math.log(11.0), abs=1e-6)
    for bad in (-0.1, 1.1, 2.0):
        with pytest.raises(ValueError, match=r"init_mask must lie in \(gamma, zeta\)"):
            HardConcreteMasks(model, "0", init_mask=bad)


def tiny_bert(seed=0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=64, num_labels=2)
    return BertForSequenceClassification(config).eval()


def test_mask_weight_decay_is_adamws_decoupled_decay(minilm_tokenizer, tiny_train):
    """One step from the same gates, noise and batch: AdamW's step is Adam's plus the decoupled decay
    -lr * wd * log_alpha (Table 7's w on the masks), here -0.05 * 0.1 * log 5 = -0.0080472 on every gate."""
    runs = {}
    for wd in (0.0, 0.1):
        model = tiny_bert()
        masks = HardConcreteMasks(model, init_mask=0.9)
        schedule = MASK_SCHEDULE.replace(epochs=1, batch_size=8, lr=0.05, max_length=16, weight_decay=wd)
        train_hard_concrete_masks(model, minilm_tokenizer, tiny_train, masks, schedule, attack=None,
                                  l0_lambda=0.1, l0_warmup_ratio=0.0, progress=False)
        runs[wd] = [la.detach().clone() for la in masks.log_alphas]
    for plain, decayed in zip(runs[0.0], runs[0.1]):
        assert not torch.equal(plain, torch.full_like(plain, math.log(5.0)))  # the step moved the gates
        torch.testing.assert_close(decayed - plain, torch.full_like(plain, -0.05 * 0.1 * math.log(5.0)),
                                   rtol=0, atol=2e-6)


@pytest.fixture(scope="module")
def tiny_train():
    from tests.conftest import SST2_TRAIN

    return load_glue_tsv(SST2_TRAIN).subset(range(8))


@pytest.fixture(scope="module")
def minilm_classifier(minilm_path):
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=2).eval()


def test_gated_forward_equals_manually_gated_weights(minilm_classifier, minilm_tokenizer):
    model = copy.deepcopy(minilm_classifier)
    masks = HardConcreteMasks(model, init_drop_rate=0.5, init_std=2.0).eval()
    assert len(masks) == 36 and masks.names[0].endswith("layer.0.attention.self.query.weight")
    originals = {name: p for name, p in model.named_parameters()}
    batch = minilm_tokenizer(["a gripping , funny film", "dull"], padding=True, return_tensors="pt")
    with torch.no_grad(), masks:
        gated = model(**batch).logits
    assert all(p is originals[name] for name, p in model.named_parameters())  # detached: same parameters
    manual = copy.deepcopy(minilm_classifier)
    params = dict(manual.named_parameters())
    with torch.no_grad():
        for name, la in masks.named_log_alphas().items():
            params[name].mul_(torch.clamp(torch.sigmoid(la) * 1.2 - 0.1, 0, 1))
        expected = manual(**batch).logits
    torch.testing.assert_close(gated, expected, rtol=1e-4, atol=1e-5)
    assert 0.3 < masks.eval_density() < 0.95  # init_std=2 spreads log_alpha across the closed end too


@pytest.mark.slow
def test_mask_training_under_freelb_and_resume(minilm_classifier, minilm_tokenizer, tiny_train, tmp_path):
    settings = dict(
        schedule=MASK_SCHEDULE.replace(epochs=1, batch_size=4, lr=0.5, max_length=32),
        attack=FreeLB(steps=2),
        l0_lambda=20.0,
        l0_warmup_ratio=0.0,
        progress=False,
    )
    model = copy.deepcopy(minilm_classifier)
    weights_before = {name: p.detach().clone() for name, p in model.named_parameters()}
    masks = HardConcreteMasks(model)
    start = [la.detach().clone() for la in masks.log_alphas]
    history = train_hard_concrete_masks(model, minilm_tokenizer, tiny_train, masks, **settings)
    assert history.steps == 2 and history.lambdas == [20.0, 20.0]
    assert history.l0[1] < history.l0[0]  # the L0 term pulls the gates shut
    task_loss = history.losses[0] - 20.0 * history.l0[0]  # the recorded loss is task + lambda * L0
    assert history.l0[0] > 0.1 and 0.0 < task_loss < 5.0
    assert all(not torch.equal(la, s) for la, s in zip(masks.log_alphas, start))
    assert not masks.attached
    for name, p in model.named_parameters():  # weights frozen during, trainable again after
        assert torch.equal(p, weights_before[name]) and p.requires_grad, name

    fresh = copy.deepcopy(minilm_classifier)
    resumed_masks = HardConcreteMasks(fresh)
    first = train_hard_concrete_masks(
        fresh, minilm_tokenizer, tiny_train, resumed_masks, checkpoint_dir=tmp_path, stop_after=1, **settings
    )
    assert first.steps == 1
    again = HardConcreteMasks(fresh)  # a new run: log_alpha, Adam state and RNG come from the checkpoint
    second = train_hard_concrete_masks(
        fresh, minilm_tokenizer, tiny_train, again, checkpoint_dir=tmp_path, **settings
    )
    assert second.losses == history.losses and second.l0 == history.l0
    for la, expected in zip(again.log_alphas, masks.log_alphas):
        assert torch.equal(la, expected)


def test_mask_training_refuses_a_schedule_it_cannot_follow(minilm_tokenizer, tiny_train):
    model = tiny_bert()
    masks = HardConcreteMasks(model)
    with pytest.raises(ValueError, match="constant lr"):
        train_hard_concrete_masks(model, minilm_tokenizer, tiny_train, masks, MASK_SCHEDULE.replace(warmup_ratio=0.1),
                                  progress=False)


def test_reset_to_pretrained(minilm_classifier, minilm_path):
    model = copy.deepcopy(minilm_classifier)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    from transformers import AutoModel

    encoder_state = {f"bert.{k}": v for k, v in AutoModel.from_pretrained(minilm_path).state_dict().items()}
    not_reset = reset_to_pretrained(model, encoder_state)
    assert not_reset == ["classifier.weight", "classifier.bias"]
    name = "bert.encoder.layer.3.output.dense.weight"
    assert torch.equal(dict(model.named_parameters())[name], encoder_state[name])
    with pytest.raises(ValueError, match="shares no parameter name"):
        reset_to_pretrained(model, {"nope": torch.zeros(1)})
    with pytest.raises(ValueError, match="has shape"):
        reset_to_pretrained(model, {name: torch.zeros(2)})


@pytest.mark.slow
def test_robust_ticket_pipeline_on_finetuned_minilm(sst2_finetuned, minilm_path, tiny_train):
    finetuned, tokenizer = sst2_finetuned
    model = copy.deepcopy(finetuned)
    torch.manual_seed(0)
    pretrained = AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=2).state_dict()
    ticket = robust_ticket(
        model,
        tokenizer,
        tiny_train,
        pretrained,
        0.6,
        attack=FreeLB(steps=2),
        mask_schedule=MASK_SCHEDULE.replace(epochs=0.5, batch_size=4, max_length=32),
        finetune_schedule=ADVERSARIAL_SCHEDULE.replace(epochs=0.5, batch_size=4, max_length=32),
        l0_lambda=1.0,
        progress=False,
    )
    total = sum(m.numel() for m in ticket.masks.values())
    assert sum(int((~m).sum()) for m in ticket.masks.values()) == round(0.6 * total)
    assert ticket.mask_history.steps == 1 and ticket.finetune_history.steps == 1 and ticket.not_reset == []
    params = dict(model.named_parameters())
    for name, mask in ticket.masks.items():
        weight = params[name].detach()
        assert bool((weight[~mask] == 0).all()), name
    # the kept weights restarted from the pre-trained values (one small step since), not the fine-tuned ones
    name = "bert.encoder.layer.0.attention.self.query.weight"
    mask = ticket.masks[name]
    to_pretrained = float((params[name].detach() - pretrained[name])[mask].abs().max())
    to_finetuned = float(
        (params[name].detach() - dict(finetuned.named_parameters())[name].detach())[mask].abs().max()
    )
    assert to_pretrained < to_finetuned
