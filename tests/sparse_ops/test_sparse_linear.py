import pytest
import torch
from transformers import AutoModel, GPT2Config, GPT2LMHeadModel

from robustprune import (
    SparseLinear,
    load_sparse_model,
    magnitude_prune,
    save_sparse_model,
    sparse_bytes_report,
    sparsify_model,
)


@pytest.fixture()
def minilm(minilm_path):
    return AutoModel.from_pretrained(minilm_path).eval()


def sentences_batch(minilm_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    return tokenizer(["a gripping, funny and heartfelt film", "the plot is thin and the acting is worse"],
                     padding=True, return_tensors="pt")


@pytest.mark.parametrize("pattern", ["2:4", "4:8"])
def test_minilm_sparse_layers_match_masked_dense(minilm, minilm_path, pattern, tmp_path):
    batch = sentences_batch(minilm_path)
    magnitude_prune(minilm, pattern=pattern)
    with torch.no_grad():
        dense_out = minilm(**batch).last_hidden_state
    converted = sparsify_model(minilm, pattern)
    assert len(converted) == 36
    assert isinstance(minilm.encoder.layer[0].attention.self.query, SparseLinear)
    with torch.no_grad():
        sparse_out = minilm(**batch).last_hidden_state
    assert torch.allclose(sparse_out, dense_out, atol=1e-4)

    path = tmp_path / "minilm_sparse.safetensors"
    save_sparse_model(minilm, path)
    fresh = AutoModel.from_pretrained(minilm_path).eval()
    load_sparse_model(fresh, path)
    for (name, a), (_, b) in zip(minilm.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), name
    with torch.no_grad():
        assert torch.equal(fresh(**batch).last_hidden_state, sparse_out)


def test_bytes_at_rest(minilm):
    sparsify_model(minilm, "2:4", prune=True)
    report = sparse_bytes_report(minilm)
    assert report.ratio == pytest.approx(0.53125)  # fp32: 1/2 values + 2 bits per kept entry
    minilm.half()
    assert sparse_bytes_report(minilm).ratio == pytest.approx(0.5625)


def test_not_nm_weight_raises_and_leaves_model_unchanged(minilm):
    before = type(minilm.encoder.layer[5].output.dense)
    with pytest.raises(ValueError, match=r"encoder.layer.0.attention.self.query: weight is not 2:4"):
        sparsify_model(minilm, "2:4")
    assert type(minilm.encoder.layer[5].output.dense) is before


def test_prune_true_applies_magnitude_mask_first(minilm):
    reference = AutoModel.from_pretrained(minilm.config._name_or_path).eval()
    magnitude_prune(reference, pattern="4:8")
    sparsify_model(minilm, "4:8", prune=True)
    for name, module in minilm.named_modules():
        if isinstance(module, SparseLinear):
            assert torch.equal(module.to_dense(), reference.get_submodule(name).weight)


def test_fine_tuning_keeps_the_mask():
    layer = torch.nn.Linear(16, 6)
    sparse = SparseLinear.from_dense(layer, "2:4", prune=True)
    mask = sparse.to_dense() != 0
    optimizer = torch.optim.SGD(sparse.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        sparse(torch.randn(5, 16)).pow(2).sum().backward()
        optimizer.step()
    assert bool(((sparse.to_dense() != 0) <= mask).all())
    assert sparse.values.grad is not None and sparse.bias.grad is not None


def test_gpt2_conv1d_layers_convert():
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=64, n_positions=16)).eval()
    ids = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(0))
    magnitude_prune(model, pattern="2:4")
    with torch.no_grad():
        expected = model(ids).logits
    sparsify_model(model, "2:4")
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, expected, atol=1e-5)


def test_clear_errors(minilm, tmp_path):
    with pytest.raises(ValueError, match="'N:M'"):
        SparseLinear(16, 4, pattern="2of4")
    with pytest.raises(ValueError, match="needs an 'N:M' pattern"):
        sparsify_model(minilm, "unstructured")
    with pytest.raises(ValueError, match="in_features=10 must be a positive multiple of M=4"):
        SparseLinear(10, 4, pattern="2:4")
    with pytest.raises(ValueError, match="not divisible by M=16"):
        sparsify_model(torch.nn.Sequential(torch.nn.ModuleList([torch.nn.Linear(24, 4)])), "2:16", prune=True)
    with pytest.raises(TypeError, match="only Linear/Conv1D"):
        sparsify_model(minilm, "2:4", targets=["embeddings.word_embeddings"], prune=True)
    with pytest.raises(FileNotFoundError):
        load_sparse_model(minilm, tmp_path / "missing.safetensors")
    sparse = SparseLinear.from_dense(torch.nn.Linear(8, 4), "2:4", prune=True)
    with pytest.raises(TypeError, match="input has dtype torch.float16"):
        sparse(torch.randn(2, 8).half())


def _small_bert(layers: int, hidden: int, seed: int = 0):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=4,
                        intermediate_size=2 * hidden, vocab_size=100, max_position_embeddings=32)
    return BertModel(config).eval()


def _snapshot(model):
    return ({name: type(module) for name, module in model.named_modules()},
            {key: tensor.clone() for key, tensor in model.state_dict().items()})


def _assert_unchanged(model, snapshot):
    types, state = snapshot
    assert {name: type(module) for name, module in model.named_modules()} == types
    now = model.state_dict()
    assert now.keys() == state.keys()
    for key, tensor in state.items():
        assert torch.equal(now[key], tensor), key


@pytest.mark.parametrize("saved, loaded, message", [
    ((3, 64), (2, 64), "sparse layer 'encoder.layer.2.attention.self.query', the model has no such module"),
    ((2, 64), (2, 32), "'encoder.layer.0.attention.self.query' is 32x32 .* in the model, 64x64 in the file"),
    ((1, 64), (2, 64), "the model's 'encoder.layer.1.attention.self.query.weight' is missing from the file"),
])
def test_load_of_another_shape_fails_before_changing_the_model(tmp_path, saved, loaded, message):
    source = _small_bert(*saved)
    sparsify_model(source, "2:4", prune=True)
    path = tmp_path / "other.safetensors"
    save_sparse_model(source, path)
    target = _small_bert(*loaded, seed=1)
    snapshot = _snapshot(target)
    with pytest.raises(ValueError, match=f"{path}.*{message}"):
        load_sparse_model(target, path)
    _assert_unchanged(target, snapshot)


def test_load_of_a_dtype_mismatch_or_unreadable_file_leaves_the_model(tmp_path):
    source = _small_bert(2, 64)
    sparsify_model(source, "2:4", prune=True)
    path = tmp_path / "model.safetensors"
    save_sparse_model(source, path)
    target = _small_bert(2, 64, seed=1).half()
    snapshot = _snapshot(target)
    with pytest.raises(ValueError, match=r"does not fit the model: '[\w.]+' is \([\d, ]+\) torch.float16 in the "
                                         r"model, \([\d, ]+\) torch.float32 in the file"):
        load_sparse_model(target, path)
    _assert_unchanged(target, snapshot)

    target = _small_bert(2, 64, seed=1)
    snapshot = _snapshot(target)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
                        .numpy().tobytes())
    for bad in (truncated, garbage):
        with pytest.raises(ValueError, match=f"{bad} is not a readable safetensors file"):
            load_sparse_model(target, bad)
        _assert_unchanged(target, snapshot)
    load_sparse_model(target, path)  # the good file still loads into the untouched model, exactly
    for key, tensor in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], tensor), key


def test_tied_weights_round_trip(tmp_path):
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=64, n_positions=16)).eval()
    sparsify_model(model, "2:4", prune=True)
    path = tmp_path / "gpt2.safetensors"
    save_sparse_model(model, path)
    torch.manual_seed(1)
    fresh = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=64, n_positions=16)).eval()
    load_sparse_model(fresh, path)
    assert fresh.lm_head.weight is fresh.transformer.wte.weight  # still tied
    for key, tensor in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], tensor), key
