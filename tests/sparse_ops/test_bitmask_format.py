"""Values + bitmask weights at rest: layout, exactness, size, refusal of damaged files, and the
compressed-tensors 0.14.0.1 checkpoints in fixtures/ (written by fixtures/record_compressed_tensors.py)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoModel, BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

from robustprune import load_sparse_model, magnitude_prune, save_sparse_model, sparse_bytes_report
from robustprune.sparse_ops.bitmask_format import bitmask_bytes, bitmask_decode, bitmask_encode
from robustprune.sparse_ops.convert import compressed_tensors_format, load_compressed_tensors
from robustprune.targets import select_targets

FIXTURES = Path(__file__).parent / "fixtures"


def _bits(weight):
    """Bit patterns of a float tensor, +0.0 for every zero (signed zeros are not stored)."""
    weight = torch.where(weight == 0, torch.zeros_like(weight), weight)
    return weight.view({torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}[
        weight.dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("sparsity", [0.0, 0.37, 0.5, 0.9])
def test_encode_layout_and_exact_decode(dtype, sparsity):
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(13, 21, generator=generator).to(dtype)
    weight[torch.rand(13, 21, generator=generator) < sparsity] = 0
    weight[0, 0] = -0.0 if weight[0, 0] == 0 else weight[0, 0]
    parts = bitmask_encode(weight)
    assert parts["bitmask"].dtype == torch.uint8 and tuple(parts["bitmask"].shape) == (13, 3)
    # bit c % 8 of byte c // 8, least significant first: compressed-tensors' pack_bitmasks
    for r, c in [(0, 0), (4, 7), (4, 8), (12, 20), (7, 13)]:
        assert bool((int(parts["bitmask"][r, c // 8]) >> (c % 8)) & 1) == bool(weight[r, c] != 0)
    assert torch.equal(parts["compressed"], weight[weight != 0])  # row-major non-zeros, same dtype
    assert parts["shape"].tolist() == [13, 21] and parts["shape"].dtype == torch.int64
    counts = (weight != 0).sum(1)
    assert parts["row_offsets"].tolist() == (torch.cumsum(counts, 0) - counts).tolist()
    dense = bitmask_decode(parts["compressed"], parts["bitmask"], parts["shape"], parts["row_offsets"])
    assert dense.dtype == dtype and torch.equal(_bits(dense), _bits(weight))


def test_decode_refuses_damaged_parts():
    weight = torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]])
    parts = bitmask_encode(weight)
    flipped = parts["bitmask"].clone()
    flipped[1, 0] ^= 1
    with pytest.raises(ValueError, match="holds 3 values but the bitmask marks 4 non-zeros"):
        bitmask_decode(parts["compressed"], flipped, parts["shape"])
    padded = parts["bitmask"].clone()
    padded[0, 0] |= 1 << 5
    with pytest.raises(ValueError, match="bits set past column 3"):
        bitmask_decode(parts["compressed"], padded, parts["shape"])
    with pytest.raises(ValueError, match="row_offsets' disagree"):
        bitmask_decode(parts["compressed"], parts["bitmask"], parts["shape"], torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"'bitmask' must be uint8 of shape \(2, 2\) for a 2x9 weight"):
        bitmask_decode(parts["compressed"], parts["bitmask"], torch.tensor([2, 9]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_minilm_half_at_50_percent_is_small_and_exact_at_rest(minilm_path, dtype, tmp_path):
    model = AutoModel.from_pretrained(minilm_path, dtype=dtype).eval()
    magnitude_prune(model, 0.5)
    names = list(select_targets(model))
    report = sparse_bytes_report(model, bitmask=names)
    assert len(report.layers) == 36
    assert report.ratio <= 0.57
    path = tmp_path / "minilm.safetensors"
    save_sparse_model(model, path, bitmask=names)
    # the report counts what the file holds for those matrices
    with safe_open(str(path), framework="pt") as handle:
        stored = sum(handle.get_tensor(f"{name}.{part}").numel() * handle.get_tensor(f"{name}.{part}").element_size()
                     for name in names for part in ("compressed", "bitmask", "shape", "row_offsets"))
        assert not any(key == f"{name}.weight" for name in names for key in handle.keys())  # noqa: SIM118 - safe_open is not a dict
    assert stored == report.sparse_bytes
    fresh = AutoModel.from_pretrained(minilm_path, dtype=dtype).eval()
    load_sparse_model(fresh, path)
    for key, tensor in model.state_dict().items():
        assert torch.equal(_bits(fresh.state_dict()[key]), _bits(tensor)), key


def test_bitmask_bytes_formula():
    weight = torch.zeros(64, 384, dtype=torch.float16)
    weight[:, ::2] = 1
    parts = bitmask_encode(weight)
    assert bitmask_bytes(64, 384, 64 * 192, 2) == sum(t.numel() * t.element_size() for t in parts.values())


def _small_bert(seed=0, hidden=32):
    torch.manual_seed(seed)
    return BertModel(BertConfig(num_hidden_layers=2, hidden_size=hidden, num_attention_heads=4,
                                intermediate_size=2 * hidden, vocab_size=100, max_position_embeddings=32)).eval()


def _state(model):
    return {key: tensor.clone() for key, tensor in model.state_dict().items()}


def _assert_state(model, state):
    now = model.state_dict()
    assert now.keys() == state.keys()
    for key, tensor in state.items():
        assert torch.equal(now[key], tensor), key


def test_damaged_or_mismatched_file_is_refused_with_the_model_unchanged(tmp_path):
    source = _small_bert()
    magnitude_prune(source, 0.6, scope="layer")
    names = list(select_targets(source))
    path = tmp_path / "bert.safetensors"
    save_sparse_model(source, path, bitmask=names)
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()

    def damaged(change):
        bad = {key: value.clone() for key, value in tensors.items()}
        change(bad)
        out = tmp_path / "bad.safetensors"
        save_file(bad, str(out), metadata=metadata)
        return out

    name = "encoder.layer.1.output.dense"

    def drop_value(t):
        t[f"{name}.compressed"] = t[f"{name}.compressed"][:-1].clone()

    def flip_bit(t):
        t[f"{name}.bitmask"][3, 1] ^= 4

    def drop_part(t):
        del t[f"{name}.row_offsets"]
        del t[f"{name}.bitmask"]

    target = _small_bert(seed=1)
    snapshot = _state(target)
    for change, message in [(drop_value, "bitmask marks"), (flip_bit, "bitmask marks"),
                            (drop_part, r"lacks \['bitmask'\]")]:
        with pytest.raises(ValueError, match=message):
            load_sparse_model(target, damaged(change))
        _assert_state(target, snapshot)
    other = _small_bert(seed=1, hidden=64)
    other_snapshot = _state(other)
    with pytest.raises(ValueError, match="does not fit the model"):
        load_sparse_model(other, path)
    _assert_state(other, other_snapshot)
    load_sparse_model(target, path)
    _assert_state(target, _state(source))


def test_gpt2_conv1d_and_tied_weights_round_trip(tmp_path):
    config = GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=64, n_positions=16)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config).eval()
    magnitude_prune(model, 0.5)
    names = list(select_targets(model))
    path = tmp_path / "gpt2.safetensors"
    save_sparse_model(model, path, bitmask=names)
    torch.manual_seed(1)
    fresh = GPT2LMHeadModel(config).eval()
    load_sparse_model(fresh, path)
    assert fresh.lm_head.weight is fresh.transformer.wte.weight
    _assert_state(fresh, _state(model))


@pytest.mark.parametrize("directory, architecture", [("ct_llama_sparse_bitmask", "LlamaForCausalLM"),
                                                     ("ct_bert_sparse24_bitmask", "BertForSequenceClassification")])
def test_compressed_tensors_0_14_checkpoint_loads_bit_exactly(directory, architecture):
    import transformers

    path = FIXTURES / directory
    config = transformers.AutoConfig.from_pretrained(path)
    assert config.architectures == [architecture]
    del config.quantization_config
    reference = load_file(str(path / "dense_reference.safetensors"))
    model = getattr(transformers, architecture)(config).to(next(iter(reference.values())).dtype).eval()
    load_compressed_tensors(model, path)
    state = model.state_dict()
    assert state.keys() == reference.keys()
    for key, tensor in reference.items():
        assert state[key].dtype == tensor.dtype and torch.equal(_bits(state[key]), _bits(tensor)), key
    sparse = [key for key in reference if ".layers." in key or ".layer." in key]
    assert any(float((state[key] == 0).float().mean()) == 0.5 for key in sparse)


def test_compressed_tensors_format_detection(tmp_path):
    config = json.loads((FIXTURES / "ct_llama_sparse_bitmask" / "config.json").read_text())
    assert compressed_tensors_format(config) == "sparse-bitmask"
    assert compressed_tensors_format({"model_type": "bert"}) is None
    quantized = {"quantization_config": {"quant_method": "compressed-tensors", "config_groups": {"group_0": {}},
                                         "format": "pack-quantized"}}
    with pytest.raises(ValueError, match="quantized by compressed-tensors"):
        compressed_tensors_format(quantized)
    marlin = {"quantization_config": {"quant_method": "compressed-tensors",
                                      "sparsity_config": {"format": "marlin-24"}}}
    with pytest.raises(ValueError, match="'marlin-24' is not supported"):
        compressed_tensors_format(marlin)


def test_damaged_compressed_tensors_checkpoint_is_refused(tmp_path):
    import shutil

    import transformers

    source = FIXTURES / "ct_llama_sparse_bitmask"
    copy = tmp_path / "ct"
    shutil.copytree(source, copy)
    tensors = load_file(str(copy / "model.safetensors"))
    tensors["model.layers.0.mlp.up_proj.row_offsets"][5] += 1
    save_file(tensors, str(copy / "model.safetensors"))
    config = transformers.AutoConfig.from_pretrained(copy)
    del config.quantization_config
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).half().eval()
    snapshot = _state(model)
    with pytest.raises(ValueError, match="model.layers.0.mlp.up_proj: 'row_offsets' disagree"):
        load_compressed_tensors(model, copy)
    _assert_state(model, snapshot)
