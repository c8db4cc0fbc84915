"""One-shot pruning of the real SmolLM2-135M-Instruct (Llama: grouped-query attention, RoPE) end to end,
and calibration sets drawn from task data (clean or adversarial) with the zero-shot prompt.

Calibration is small to fit CI (16 windows of 64 SST-2 tokens); perplexity is measured on a fixed
paragraph of prose (2 windows of 128 tokens)."""

import copy
import math

import pytest
import torch

from robustprune import calibration_batches, magnitude_prune, sparsegpt_prune, wanda_prune
from robustprune.data.datasets import TextDataset
from robustprune.eval.perplexity import perplexity
from robustprune.eval.zero_shot import get_template
from robustprune.pruners.calibration import run_blocks_sequentially
from robustprune.pruners.calibration_data import dataset_calibration_texts
from tests import llm_fixtures
from tests.llm_fixtures import PARAGRAPH

# Shared fixtures (SmolLM2 loads once per process: tests/llm_fixtures.py).
smollm2 = llm_fixtures.smollm2

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module")
def calibration(smollm2, sst2_sentences):
    _, tokenizer = smollm2
    return calibration_batches(tokenizer, sst2_sentences, num_samples=16, seq_len=64, batch_size=8,
                               mode="windows")


@pytest.fixture(scope="module")
def dense_ppl(smollm2):
    model, tokenizer = smollm2
    return perplexity(model, tokenizer, PARAGRAPH, seq_len=128, progress=False).perplexity


def _prune(method, model, batches, sparsity, pattern):
    if method == "magnitude":
        return magnitude_prune(model, sparsity, scope="layer", pattern=pattern)
    if method == "wanda":
        return wanda_prune(model, batches, sparsity, pattern=pattern, progress=False)
    return sparsegpt_prune(model, batches, sparsity, pattern=pattern, progress=False)


def _check_exact(model, masks, pattern):
    assert len(masks) == 30 * len(TARGETS)
    assert {name.split(".")[-2] for name in masks} == set(TARGETS)
    for name, mask in masks.items():
        weight = model.get_parameter(name)
        assert not bool(weight[~mask].any()), name
        if pattern == "unstructured":
            assert mask.numel() - int(mask.sum()) == mask.numel() // 2, name  # exactly 50 % of every target
        else:
            n, m = map(int, pattern.split(":"))
            kept = mask.reshape(mask.shape[0], -1, m).sum(dim=-1)
            assert bool((kept == n).all()), name


@pytest.mark.slow
def test_sequential_capture_reproduces_the_forward_pass(smollm2):
    """Replaying the 30 blocks on the captured inputs (RoPE cos/sin, causal + padding mask, GQA) gives the
    model's own final hidden states on a right-padded batch."""
    model, tokenizer = smollm2
    texts = ["The river rose in the spring and covered the meadows.", "Bread and tea."]
    batches = calibration_batches(tokenizer, texts, num_samples=2, seq_len=32, batch_size=2)
    assert not bool(batches[0]["attention_mask"].all())  # padding present
    inputs = run_blocks_sequentially(model, batches, lambda index, block, view: None, progress=False)
    with torch.no_grad():
        expected = model(**batches[0], output_hidden_states=True).hidden_states[-1]
        replayed = model.model.norm(inputs.hidden_states[0])
    real = batches[0]["attention_mask"].bool()
    torch.testing.assert_close(replayed[real], expected[real], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("pattern,sparsity", [("unstructured", 0.5), ("2:4", None)])
def test_prune_smollm2(smollm2, calibration, dense_ppl, pattern, sparsity):
    dense, tokenizer = smollm2
    prompt = tokenizer("The capital of France is", return_tensors="pt")
    ppl = {"dense": dense_ppl}
    for method in ("magnitude", "wanda", "sparsegpt"):
        model = copy.deepcopy(dense)
        masks = _prune(method, model, calibration, sparsity, pattern)
        _check_exact(model, masks, pattern)
        ppl[method] = perplexity(model, tokenizer, PARAGRAPH, seq_len=128, progress=False).perplexity
        out = model.generate(**prompt, max_new_tokens=6, do_sample=False)
        new = out[0, prompt["input_ids"].shape[1]:]
        assert new.numel() == 6 and tokenizer.decode(new, skip_special_tokens=True).strip(), method
        del model
    assert all(math.isfinite(v) for v in ppl.values()), ppl
    assert ppl["dense"] <= ppl["sparsegpt"] <= ppl["magnitude"], ppl
    assert ppl["wanda"] < ppl["magnitude"], ppl


@pytest.mark.slow
@pytest.mark.parametrize("sparsity,pattern", [(0.1, "unstructured"), (0.7, "unstructured"), (None, "4:8")])
def test_other_targets_are_exact(smollm2, sparsity, pattern):
    model = copy.deepcopy(smollm2[0])
    masks = magnitude_prune(model, sparsity, scope="layer", pattern=pattern)
    for name, mask in masks.items():
        assert not bool(model.get_parameter(name)[~mask].any())
        if pattern == "4:8":
            assert bool((mask.reshape(mask.shape[0], -1, 8).sum(dim=-1) == 4).all()), name
        else:
            assert mask.numel() - int(mask.sum()) == round(sparsity * mask.numel()), name


# ---------------------------------------------------------------------------------- calibration sets

ADVERSARIAL = TextDataset(
    texts=[f"sentence {i}" for i in range(12)], labels=[i % 2 for i in range(12)], name="adv",
    meta={"method": ["textfooler", "pwws", "textbugger"] * 4})


def test_dataset_calibration_texts_are_seeded_samples():
    first = dataset_calibration_texts(ADVERSARIAL, 5, seed=1)
    assert first == dataset_calibration_texts(ADVERSARIAL, 5, seed=1)
    assert first != dataset_calibration_texts(ADVERSARIAL, 5, seed=2)
    assert len(set(first)) == 5 and set(first) <= set(ADVERSARIAL.texts)  # without replacement
    assert dataset_calibration_texts(ADVERSARIAL, None) == ADVERSARIAL.texts
    pwws = dataset_calibration_texts(ADVERSARIAL, None, methods="pwws")
    assert pwws == [f"sentence {i}" for i in range(1, 12, 3)]
    two = dataset_calibration_texts(ADVERSARIAL, 8, methods=["pwws", "textfooler"], seed=0)
    textbugger = dataset_calibration_texts(ADVERSARIAL, None, methods="textbugger")
    assert len(two) == 8 and not set(two) & set(textbugger)
    pairs = TextDataset(texts=["a", "b"], text_pairs=["c", "d"], labels=[0, 1])
    assert dataset_calibration_texts(pairs, None) == ["a\nc", "b\nd"]
    labelled = dataset_calibration_texts(pairs, None, format=lambda t, p, y: f"{t}|{p}|{y}")
    assert labelled == ["a|c|0", "b|d|1"]


def test_dataset_calibration_texts_errors():
    with pytest.raises(ValueError, match="num_samples=13 exceeds the 12 available example"):
        dataset_calibration_texts(ADVERSARIAL, 13)
    with pytest.raises(ValueError, match="empty calibration set: num_samples=0"):
        dataset_calibration_texts(ADVERSARIAL, 0)
    with pytest.raises(ValueError, match=r"no example of adv has method in \['bert-attack'\]"):
        dataset_calibration_texts(ADVERSARIAL, None, methods="bert-attack")
    clean = TextDataset(texts=["a", "b"], labels=[0, 1], name="clean")
    with pytest.raises(ValueError, match="clean has no meta column 'method'"):
        dataset_calibration_texts(clean, None, methods="pwws")
    with pytest.raises(TypeError, match="dataset must be a TextDataset"):
        dataset_calibration_texts(["a", "b"], 1)
    with pytest.raises(TypeError, match="format must return a str"):
        dataset_calibration_texts(clean, None, format=lambda t, p, y: None)


@pytest.mark.slow
def test_wanda_on_task_prompt_calibration(smollm2, sst2_dev, calibration):
    """Calibrating on SST-2 prompts (the zero-shot chat prompt + gold answer, right-padded batches of unequal
    length) prunes exactly and gives different masks from generic-text calibration."""
    dense, tokenizer = smollm2
    texts = dataset_calibration_texts(sst2_dev, 8, seed=0, format=get_template("sst2").formatter(tokenizer))
    assert all(t.startswith("<|im_start|>") and t.endswith(("positive", "negative")) for t in texts)
    batches = calibration_batches(tokenizer, texts, num_samples=8, seq_len=128, batch_size=4,
                                  add_special_tokens=False)
    assert batches[0]["input_ids"][0, 0] == tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert not all(bool(b["attention_mask"].all()) for b in batches)  # prompts differ in length
    prompted = copy.deepcopy(dense)
    masks = wanda_prune(prompted, batches, pattern="2:4", progress=False)
    _check_exact(prompted, masks, "2:4")
    assert math.isfinite(perplexity(prompted, tokenizer, PARAGRAPH, seq_len=128, progress=False).perplexity)
    generic = copy.deepcopy(dense)
    other = wanda_prune(generic, calibration, pattern="2:4", progress=False)
    changed = sum(int((masks[n] != other[n]).sum()) for n in masks) / sum(m.numel() for m in masks.values())
    assert 0.001 < changed < 0.5, changed


@pytest.mark.slow
def test_sparse_linear_decoder_generates_as_the_masked_model(smollm2):
    """2:4 SparseLinear swapped into SmolLM2: same greedy tokens as the masked dense model (decoding runs
    the compiled batch-1 kernel, the 16-token prompt its batch-16 path) and the same perplexity."""
    from robustprune import sparsify_model

    model, tokenizer = smollm2
    masked = copy.deepcopy(model)
    magnitude_prune(masked, None, scope="layer", pattern="2:4")
    sparse = copy.deepcopy(masked)
    converted = sparsify_model(sparse, "2:4")
    assert len(converted) == 7 * model.config.num_hidden_layers
    prompt = torch.tensor(tokenizer(PARAGRAPH)["input_ids"][:16])[None]

    def greedy(m):
        with torch.inference_mode():
            return m.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12,
                              min_new_tokens=12, do_sample=False, pad_token_id=tokenizer.eos_token_id)

    assert torch.equal(greedy(sparse), greedy(masked))
    ppl = [perplexity(m, tokenizer, PARAGRAPH, seq_len=128, progress=False).perplexity for m in (masked, sparse)]
    assert ppl[1] == pytest.approx(ppl[0], rel=1e-5)
