"""Checkpoint directories: ``save_pruned_model`` / ``load_pretrained``, and compressed-tensors checkpoints
read by ``load_pretrained`` without compressed-tensors."""

from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file

from robustprune import load_pretrained, magnitude_prune, save_pruned_model
from robustprune.sparse_ops.sparse_linear import SparseLinear
from robustprune.targets import select_targets

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("directory, architecture", [("ct_llama_sparse_bitmask", "LlamaForCausalLM"),
                                                     ("ct_bert_sparse24_bitmask", "BertForSequenceClassification")])
def test_compressed_tensors_directory_loads_with_its_own_head(directory, architecture):
    model = load_pretrained(FIXTURES / directory)
    assert type(model).__name__ == architecture and not model.training
    reference = load_file(str(FIXTURES / directory / "dense_reference.safetensors"))
    state = model.state_dict()
    for key, tensor in reference.items():
        assert state[key].dtype == tensor.dtype and torch.equal(state[key], tensor), key


def _tiny_llama(seed=0):
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=32)).eval()


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_sparse_directory_round_trip(tmp_path, pattern):
    model = _tiny_llama()
    magnitude_prune(model, 0.5 if pattern == "unstructured" else None, pattern=pattern)
    pruned = list(select_targets(model))
    expected = {key: tensor.clone() for key, tensor in model.state_dict().items()}
    out = save_pruned_model(model, tmp_path / "sparse", pruned=pruned, pattern=pattern, format="sparse",
                            record={"method": "magnitude"})
    assert not (out / "model.safetensors").exists() and (out / "sparse_model.safetensors").is_file()
    loaded = load_pretrained(out)
    assert isinstance(loaded, transformers.LlamaForCausalLM)
    sparse_layers = [m for m in loaded.modules() if isinstance(m, SparseLinear)]
    assert len(sparse_layers) == (len(pruned) if pattern == "2:4" else 0)
    for name in pruned:
        weight = loaded.get_submodule(name).weight
        assert torch.equal(weight, expected[f"{name}.weight"]), name
    with pytest.raises(ValueError, match="already holds a checkpoint"):
        save_pruned_model(model, out, pruned=pruned, pattern=pattern, format="sparse")


def test_damaged_sparse_directory_is_refused(tmp_path):
    model = _tiny_llama()
    magnitude_prune(model, 0.5)
    out = save_pruned_model(model, tmp_path / "sparse", pruned=list(select_targets(model)), format="sparse")
    weights = out / "sparse_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_pretrained(out)
