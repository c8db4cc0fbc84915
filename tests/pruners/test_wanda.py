import pytest
import torch
from transformers import AutoModel, LlamaConfig, LlamaForCausalLM

from robustprune import magnitude_prune
from robustprune.pruners.calibration_data import calibration_batches
from robustprune.pruners.wanda import InputNorms, row_mask, wanda_prune, wanda_scores
from tests.reference import reference_nm_mask


@pytest.fixture()
def minilm(minilm_path):
    return AutoModel.from_pretrained(minilm_path).eval()


@pytest.fixture()
def sentences(sst2_sentences):
    return sst2_sentences


@pytest.fixture()
def tokenizer(minilm_tokenizer):
    return minilm_tokenizer


def reference_block_masks(model, batches, block_index, sparsity):
    """Wanda by its definition for one block of the *current* model: hook its Linears during a full
    forward, running mean of squared inputs over real tokens, |W| * sqrt(mean), per-row stable sort."""
    block = model.encoder.layer[block_index]
    linears = {name: m for name, m in block.named_modules() if isinstance(m, torch.nn.Linear)}
    sums = {name: torch.zeros(m.in_features) for name, m in linears.items()}
    counts = dict.fromkeys(linears, 0)
    token_mask = [None]

    def hook(name):
        def record(module, args, output):
            x = args[0][token_mask[0]].float()
            sums[name] += x.pow(2).sum(0)
            counts[name] += x.shape[0]
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in linears.items()]
    with torch.no_grad():
        for batch in batches:
            token_mask[0] = batch["attention_mask"].bool()
            model(**batch)
    for handle in handles:
        handle.remove()
    masks = {}
    for name, m in linears.items():
        scores = m.weight.abs() * (sums[name] / counts[name]).sqrt()
        order = torch.sort(scores, dim=1, stable=True).indices[:, :int(m.in_features * sparsity)]
        masks[f"encoder.layer.{block_index}.{name}.weight"] = torch.ones_like(scores, dtype=torch.bool).scatter_(
            1, order, False)
    return masks


def test_masks_follow_the_definition_sequentially(minilm, minilm_path, tokenizer, sentences):
    batches = calibration_batches(tokenizer, sentences, num_samples=12, seq_len=32, batch_size=4)
    reference = AutoModel.from_pretrained(minilm_path).eval()
    expected = {}
    for block_index in range(2):  # block 1 must see the outputs of the already-pruned block 0
        block_masks = reference_block_masks(reference, batches, block_index, 0.5)
        with torch.no_grad():
            for name, mask in block_masks.items():
                reference.get_parameter(name).mul_(mask)
        expected.update(block_masks)
    masks = wanda_prune(minilm, batches, 0.5, progress=False)
    assert len(masks) == 36
    for name, mask in expected.items():
        assert torch.equal(masks[name], mask), name
    for name, mask in masks.items():
        assert int((~mask).sum(1).unique().numel()) == 1  # same count pruned in every row
        assert int((~mask[0]).sum()) == mask.shape[1] // 2


@pytest.mark.slow
def test_2_4_and_reconstruction_beats_magnitude(minilm_path, tokenizer, sentences):
    calibration = calibration_batches(tokenizer, sentences, num_samples=32, seq_len=48, batch_size=8)
    held_out = tokenizer(sentences[1000:1024], padding=True, truncation=True, max_length=48, return_tensors="pt")
    dense = AutoModel.from_pretrained(minilm_path).eval()
    with torch.no_grad():
        target = dense(**held_out).last_hidden_state

    def error(model):
        with torch.no_grad():
            return float((model(**held_out).last_hidden_state - target).pow(2).mean())

    for pattern, sparsity in (("unstructured", 0.5), ("2:4", None)):
        wanda = AutoModel.from_pretrained(minilm_path).eval()
        masks = wanda_prune(wanda, calibration, sparsity, pattern=pattern, progress=False)
        magnitude = AutoModel.from_pretrained(minilm_path).eval()
        magnitude_prune(magnitude, 0.5, scope="layer") if sparsity else magnitude_prune(magnitude, pattern="2:4")
        if pattern == "2:4":
            for name, mask in masks.items():
                assert bool((mask.view(-1, 4).sum(1) == 2).all()), name
        assert error(wanda) < error(magnitude), pattern


def test_llama_from_config_prunes_end_to_end():
    config = LlamaConfig(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=100)
    model = LlamaForCausalLM(config).eval()
    g = torch.Generator().manual_seed(0)
    batches = [{"input_ids": torch.randint(0, 100, (2, 12), generator=g)} for _ in range(3)]
    masks = wanda_prune(model, batches, pattern="4:8", progress=False)
    assert len(masks) == 2 * 7
    for name, mask in masks.items():
        weight = model.get_parameter(name)
        assert not bool((weight[~mask] != 0).any())
        assert bool((mask.view(-1, 8).sum(1) == 4).all())


def test_tied_scores_in_a_row_prune_the_lower_column_first():
    """The reference sorts each row with torch.sort(stable=True) and prunes the first int(sparsity * columns)
    indices: among equal scores the lower column is pruned first. Here exactly one of two tied weights goes."""
    weight = torch.tensor([[0.5, -1.0, 1.0, 2.0]])
    scores = wanda_scores(weight, torch.tensor([4.0, 1.0, 1.0, 1.0]))  # |W| * ||X||: [2, 1, 1, 2]
    assert scores.tolist() == [[2.0, 1.0, 1.0, 2.0]]
    assert row_mask(scores, 0.25).tolist() == [[True, False, True, True]]  # column 1 of the tied 1, 2
    assert row_mask(scores, 0.75).tolist() == [[False, False, False, True]]  # then column 0 of the tied 0, 3
    flat = torch.ones(3, 64)  # a whole row tied: its first half goes
    assert torch.equal(row_mask(flat, 0.5), (torch.arange(64) >= 32).expand(3, 64))


def test_helpers_and_errors(minilm, tokenizer):
    norms = InputNorms()
    data = torch.randn(10, 3)
    norms.add(data[:4])
    norms.add(data[4:])
    assert torch.allclose(norms.norms(), data.pow(2).mean(0).sqrt())
    scores = torch.tensor([[3.0, 1.0, 1.0, 2.0]])
    assert row_mask(scores, 0.5).tolist() == [[True, False, False, True]]
    assert torch.equal(reference_nm_mask(scores, 2, 4), torch.tensor([[True, False, False, True]]))
    with pytest.raises(ValueError, match="empty calibration set"):
        wanda_prune(minilm, [], 0.5)
    batch = [tokenizer(["a test"], return_tensors="pt")]
    with pytest.raises(ValueError, match="outside the transformer blocks"):
        wanda_prune(minilm, batch, 0.5, targets=["pooler.dense"])
    with pytest.raises(ValueError, match="conflicts with pattern 2:4"):
        wanda_prune(minilm, batch, 0.3, pattern="2:4")


@pytest.mark.slow
def test_sweep_reuses_dense_statistics(minilm_path, tokenizer, sentences):
    from robustprune.pruners.wanda import collect_input_norms

    batches = calibration_batches(tokenizer, sentences, num_samples=8, seq_len=24, batch_size=4)
    dense = AutoModel.from_pretrained(minilm_path).eval()
    norms = collect_input_norms(dense, batches, progress=False)
    assert len(norms) == 36
    first_block = [name for name in norms if name.startswith("encoder.layer.0.")]
    for sparsity in (0.3, 0.6):
        swept = AutoModel.from_pretrained(minilm_path).eval()
        masks = wanda_prune(swept, None, sparsity, input_norms=norms)
        sequential = AutoModel.from_pretrained(minilm_path).eval()
        reference = wanda_prune(sequential, batches, sparsity, progress=False)
        for name in first_block:  # block 0 sees the same (dense) inputs either way
            assert torch.equal(masks[f"{name}.weight"], reference[f"{name}.weight"])
        assert all(int((~m).sum(1)[0]) == int(m.shape[1] * sparsity) for m in masks.values())
    with pytest.raises(ValueError, match="input_norms has no statistics"):
        wanda_prune(swept, None, 0.5, input_norms={})


def test_calibration_without_information_is_refused(minilm, tokenizer):
    padding_only = dict(tokenizer(["a test sentence"], return_tensors="pt"))
    padding_only["attention_mask"] = torch.zeros_like(padding_only["attention_mask"])
    with pytest.raises(ValueError, match=r"'encoder.layer.0.attention.self.query'.* received no real calibration"):
        wanda_prune(minilm, [padding_only], 0.5, progress=False)
    norms = {name: torch.ones(m.in_features) for name, m in minilm.named_modules()
             if isinstance(m, torch.nn.Linear) and name.startswith("encoder.")}
    norms["encoder.layer.2.output.dense"][5] = float("nan")
    before = {k: v.clone() for k, v in minilm.state_dict().items()}
    with pytest.raises(ValueError, match="input norms of target 'encoder.layer.2.output.dense' are not finite"):
        wanda_prune(minilm, None, 0.5, input_norms=norms)
    for key, tensor in before.items():  # every norm is checked before any weight changes
        assert torch.equal(minilm.state_dict()[key], tensor), key
    with torch.no_grad():
        minilm.embeddings.LayerNorm.weight[3] = float("nan")  # NaN activations reach every block
    with pytest.raises(ValueError, match="input norms of target 'encoder.layer.0.attention.self.query' are not"):
        wanda_prune(minilm, [dict(tokenizer(["a test sentence"], return_tensors="pt"))], 0.5, progress=False)
