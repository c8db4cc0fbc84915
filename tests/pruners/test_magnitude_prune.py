import pytest
import torch
from transformers import (
    AutoModel,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

from robustprune import MagnitudeSweep, magnitude_prune
from robustprune.ops import unpack_mask
from robustprune.targets import select_targets, weight_sparsity
from tests.reference import reference_global_masks, reference_nm_mask


@pytest.fixture()
def minilm(minilm_path):
    return AutoModel.from_pretrained(minilm_path).eval()


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_default_targets_are_block_linears(minilm):
    targets = select_targets(minilm)
    assert len(targets) == 6 * 6  # 6 layers x (q, k, v, attention out, FFN in, FFN out)
    assert all(name.startswith("encoder.layer.") for name in targets)
    assert all(isinstance(m, torch.nn.Linear) for m in targets.values())


def test_minilm_global_50_percent(minilm):
    before = snapshot(minilm)
    targets = select_targets(minilm)
    weights = [before[f"{name}.weight"] for name in targets]
    masks = magnitude_prune(minilm, 0.5)
    total = sum(w.numel() for w in weights)
    assert sum(int((~m).sum()) for m in masks.values()) == round(0.5 * total)
    for (name, mask), expected in zip(masks.items(), reference_global_masks(weights, 0.5)):
        assert torch.equal(mask, expected)
        param = dict(minilm.named_parameters())[name]
        assert torch.equal(param.detach(), torch.where(mask, before[name], torch.zeros_like(before[name])))
    for name, param in minilm.named_parameters():  # embeddings, LayerNorm, biases, pooler
        if name not in masks:
            assert torch.equal(param.detach(), before[name]), name
    assert weight_sparsity(minilm) == round(0.5 * total) / total  # counted on the weights themselves


def test_minilm_2_4(minilm):
    before = snapshot(minilm)
    masks = magnitude_prune(minilm, pattern="2:4")
    params = dict(minilm.named_parameters())
    for name, mask in masks.items():
        assert bool((mask.view(-1, 4).sum(1) == 2).all())
        assert torch.equal(mask, reference_nm_mask(before[name], 2, 4))
        assert int((params[name] == 0).sum()) == params[name].numel() // 2  # pre-trained: no exact zeros
    for name, param in params.items():
        if name not in masks:
            assert torch.equal(param.detach(), before[name]), name


def test_minilm_layer_scope_and_packed_masks(minilm):
    before = snapshot(minilm)
    masks = magnitude_prune(minilm, 0.3, scope="layer", packed_masks=True)
    for name, packed in masks.items():
        mask = unpack_mask(packed, before[name].shape)
        assert int((~mask).sum()) == round(0.3 * before[name].numel())
        assert torch.equal(mask, reference_global_masks([before[name]], 0.3)[0])


def test_classifier_stays_dense_unless_named(minilm_path):
    model = BertForSequenceClassification.from_pretrained(minilm_path, num_labels=2)
    assert "classifier" not in select_targets(model)
    masks = magnitude_prune(model, 0.5, targets=["classifier", "*.attention.self.query"])
    expected = [f"bert.encoder.layer.{i}.attention.self.query.weight" for i in range(6)]
    assert sorted(masks) == [*expected, "classifier.weight"]


def test_gpt2_conv1d_groups_along_input_dim():
    config = GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=64, n_positions=16)
    model = GPT2LMHeadModel(config)
    before = snapshot(model)
    masks = magnitude_prune(model, pattern="4:8")
    assert len(masks) == 2 * 4 and "lm_head.weight" not in masks
    for name, mask in masks.items():  # Conv1D stores (in, out): groups run down dim 0
        assert torch.equal(mask, reference_nm_mask(before[name].t(), 4, 8).t())


def test_llama_targets_exclude_lm_head_and_embeddings():
    config = LlamaConfig(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=100)
    model = LlamaForCausalLM(config)
    masks = magnitude_prune(model, 0.5)
    assert len(masks) == 2 * 7  # q, k, v, o, gate, up, down
    assert all(name.startswith("model.layers.") for name in masks)


def test_bad_arguments(minilm):
    with pytest.raises(ValueError, match="sparsity must lie in"):
        magnitude_prune(minilm, 1.0)
    with pytest.raises(ValueError, match="sparsity is required"):
        magnitude_prune(minilm)
    with pytest.raises(ValueError, match="scope must be one of"):
        magnitude_prune(minilm, 0.5, scope="row")
    with pytest.raises(ValueError, match="conflicts with pattern 2:4"):
        magnitude_prune(minilm, 0.7, pattern="2:4")
    with pytest.raises(ValueError, match="matches no Linear/Conv1D/Embedding"):
        magnitude_prune(minilm, 0.5, targets=["*.no_such_layer"])
    with pytest.raises(ValueError, match="'N:M'"):
        magnitude_prune(minilm, pattern="50%")


def test_nan_weight_is_rejected_before_anything_is_pruned(minilm):
    before = snapshot(minilm)
    with torch.no_grad():
        minilm.encoder.layer[3].output.dense.weight[0, 0] = float("nan")
    named = r"encoder\.layer\.3\.output\.dense\.weight contains NaN/Inf"  # the parameter, not tensors[i]
    with pytest.raises(ValueError, match=named):
        magnitude_prune(minilm, 0.5)
    with pytest.raises(ValueError, match=named):
        magnitude_prune(minilm, 0.5, scope="layer")
    with pytest.raises(ValueError, match=named):
        MagnitudeSweep(minilm, [0.3, 0.5])
    with pytest.raises(ValueError, match="encoder.layer.3.output.dense.weight.*NaN/Inf"):
        magnitude_prune(minilm, pattern="2:4")
    assert torch.equal(minilm.encoder.layer[0].attention.self.query.weight, before[
        "encoder.layer.0.attention.self.query.weight"])


def test_nm_shape_not_divisible():
    model = torch.nn.Sequential(torch.nn.ModuleList([torch.nn.Linear(6, 4)]))
    with pytest.raises(ValueError, match="divisible by M=4"):
        magnitude_prune(model, pattern="2:4")


@pytest.mark.parametrize("scope", ["global", pytest.param("layer", marks=pytest.mark.slow)])
def test_sweep_from_one_selection_equals_separate_prunes(minilm, scope):
    import copy

    from robustprune.pruners.magnitude import MagnitudeSweep, masks_sparsity

    before = snapshot(minilm)
    sweep = MagnitudeSweep(minilm, [0.3, 0.5, 0.9], scope=scope)
    assert all(torch.equal(p, before[n]) for n, p in minilm.named_parameters())  # ranking never prunes
    previous = None
    for sparsity in (0.3, 0.5, 0.9):
        ours, separate = copy.deepcopy(minilm), copy.deepcopy(minilm)
        masks = sweep.prune(ours, sparsity)
        expected = magnitude_prune(separate, sparsity, scope=scope)
        assert masks.keys() == expected.keys()
        assert all(torch.equal(masks[name], expected[name]) for name in masks)
        assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), separate.parameters()))
        assert masks_sparsity(masks) == pytest.approx(sparsity, abs=1e-6)
        if previous is not None:  # nested: everything pruned before stays pruned
            assert all(bool((masks[name] <= previous[name]).all()) for name in masks)
        previous = masks
    with pytest.raises(ValueError, match="was not ranked"):
        sweep.prune(copy.deepcopy(minilm), 0.4)
