"""Perplexity over non-overlapping windows: the arithmetic on a tiny random LLaMA (fast tier), the real SmolLM2
on real prose (slow tier)."""

import math
import random

import pytest
import torch
from transformers import AutoModel

from robustprune.data.datasets import TextDataset
from robustprune.eval.perplexity import file_perplexity, perplexity, token_perplexity
from tests import llm_fixtures
from tests.llm_fixtures import PARAGRAPH

# Shared fixtures (SmolLM2 loads once per process: tests/llm_fixtures.py).
smollm2 = llm_fixtures.smollm2


def tiny_llama() -> torch.nn.Module:
    """A 2-layer random-weight LLaMA (vocabulary 97): the perplexity arithmetic without loading SmolLM2."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(config).eval()


def test_windows_match_the_models_own_loss_on_a_tiny_llama():
    model = tiny_llama()
    ids = torch.randint(0, 97, (100,), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        losses = [float(model(input_ids=ids[i * 32:(i + 1) * 32][None], labels=ids[i * 32:(i + 1) * 32][None]).loss)
                  for i in range(3)]  # each window scores its 31 predicted tokens on its own
    result = token_perplexity(model, ids, seq_len=32, batch_size=2, progress=False)
    assert (result.windows, result.tokens, result.dropped_tokens) == (3, 93, 4)
    assert result.nll == pytest.approx(sum(losses) / 3, rel=1e-5)
    assert result.perplexity == pytest.approx(math.exp(result.nll))
    with pytest.raises(ValueError, match="exceeds the model's maximum of 128 positions"):
        token_perplexity(model, ids, seq_len=256, progress=False)


@pytest.mark.slow
def test_perplexity_of_prose_is_finite_and_sane(smollm2):
    model, tokenizer = smollm2
    result = perplexity(model, tokenizer, PARAGRAPH, seq_len=128, progress=False)
    n_tokens = len(tokenizer(PARAGRAPH)["input_ids"])
    assert result.windows == n_tokens // 128
    assert result.tokens == result.windows * 127
    assert result.dropped_tokens == n_tokens - result.windows * 128
    assert math.isfinite(result.perplexity)
    assert 5 < result.perplexity < 100, result  # 135M model on simple English prose (about 33 here)
    assert result.perplexity == pytest.approx(math.exp(result.nll))


@pytest.mark.slow
def test_one_window_matches_the_models_own_loss(smollm2):
    model, tokenizer = smollm2
    ids = torch.tensor(tokenizer(PARAGRAPH)["input_ids"][:96])
    with torch.no_grad():
        reference = model(input_ids=ids[None], labels=ids[None]).loss  # mean over the 95 predicted tokens
    result = token_perplexity(model, ids, seq_len=96, progress=False)
    assert result.windows == 1
    assert result.nll == pytest.approx(float(reference), rel=1e-5)


@pytest.mark.slow
def test_windows_are_independent_and_batching_does_not_change_the_result(smollm2):
    model, tokenizer = smollm2
    ids = torch.tensor(tokenizer(PARAGRAPH)["input_ids"])
    whole = token_perplexity(model, ids, seq_len=64, progress=False)
    batched = token_perplexity(model, ids, seq_len=64, batch_size=4, progress=False)
    # Windows score independently: the mean over windows equals the token-weighted mean.
    per_window = [token_perplexity(model, ids[i * 64:(i + 1) * 64], seq_len=64, progress=False).nll
                  for i in range(whole.windows)]
    assert whole.nll == pytest.approx(sum(per_window) / len(per_window), rel=1e-5)
    assert batched.nll == pytest.approx(whole.nll, rel=1e-4)
    first_two = token_perplexity(model, ids, seq_len=64, max_windows=2, progress=False)
    assert first_two.windows == 2 and first_two.nll == pytest.approx(sum(per_window[:2]) / 2, rel=1e-5)


@pytest.mark.slow
def test_word_order_matters(smollm2):
    model, tokenizer = smollm2
    words = PARAGRAPH.split()
    random.Random(0).shuffle(words)
    real = perplexity(model, tokenizer, PARAGRAPH, seq_len=128, progress=False)
    shuffled = perplexity(model, tokenizer, " ".join(words), seq_len=128, progress=False)
    assert shuffled.perplexity > 3 * real.perplexity


@pytest.mark.slow
def test_texts_datasets_and_files_are_joined_like_the_literature(smollm2, tmp_path):
    model, tokenizer = smollm2
    sentences = [s.strip() + "." for s in PARAGRAPH.split(".") if s.strip()]
    joined = perplexity(model, tokenizer, "\n\n".join(sentences), seq_len=64, progress=False)
    listed = perplexity(model, tokenizer, sentences, seq_len=64, progress=False)
    as_dataset = TextDataset(texts=sentences, labels=[0] * len(sentences))
    dataset = perplexity(model, tokenizer, as_dataset, seq_len=64, progress=False)
    assert listed == joined == dataset
    path = tmp_path / "prose.txt"
    path.write_text(PARAGRAPH, encoding="utf-8")
    assert file_perplexity(model, tokenizer, path, seq_len=128, progress=False) == perplexity(
        model, tokenizer, PARAGRAPH, seq_len=128, progress=False)


@pytest.mark.slow
def test_clear_errors(smollm2, minilm_path, tmp_path):
    model, tokenizer = smollm2
    with pytest.raises(ValueError, match="fewer than one window of seq_len=512"):
        perplexity(model, tokenizer, "A short text.", seq_len=512, progress=False)
    with pytest.raises(ValueError, match="seq_len must be an int >= 2"):
        perplexity(model, tokenizer, PARAGRAPH, seq_len=1, progress=False)
    with pytest.raises(ValueError, match="exceeds the model's maximum of 8192 positions"):
        perplexity(model, tokenizer, PARAGRAPH, seq_len=10_000, progress=False)
    with pytest.raises(ValueError, match="text is empty"):
        perplexity(model, tokenizer, ["", " "], progress=False)
    with pytest.raises(ValueError, match="max_windows must be an int >= 1"):
        perplexity(model, tokenizer, PARAGRAPH, seq_len=64, max_windows=0, progress=False)
    with pytest.raises(TypeError, match="BertModel, which has no causal-LM head"):
        perplexity(AutoModel.from_pretrained(minilm_path), tokenizer, PARAGRAPH, seq_len=64, progress=False)
    with pytest.raises(FileNotFoundError, match="text file not found"):
        file_perplexity(model, tokenizer, tmp_path / "missing.txt", progress=False)
