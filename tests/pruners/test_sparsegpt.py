"""SparseGPT end to end: the real all-MiniLM-L6-v2 on SST-2 sentences, small random-config decoders."""

import copy
import math

import pytest
import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

import robustprune.pruners.sparsegpt as sparsegpt_module
from robustprune import magnitude_prune
from robustprune.pruners.calibration_data import calibration_batches
from robustprune.pruners.input_statistics import _Collector
from robustprune.pruners.sparsegpt import RunningHessian, collect_hessians, sparsegpt_prune
from robustprune.targets import input_dim_last, select_targets

BLOCKSIZE = 128


@pytest.fixture(scope="module")
def minilm_setup(minilm_path, sst2_sentences):
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    dense = AutoModel.from_pretrained(minilm_path).eval()
    calibration = calibration_batches(tokenizer, sst2_sentences[:16], num_samples=16, seq_len=64, batch_size=8)
    held_out = calibration_batches(tokenizer, sst2_sentences[500:516], num_samples=16, seq_len=64, batch_size=8)
    return dense, calibration, held_out


def final_hidden_states(model, batches):
    with torch.no_grad():
        return [model(**b).last_hidden_state[b["attention_mask"].bool()] for b in batches]


def output_mse(model, dense, batches):
    pruned, reference = final_hidden_states(model, batches), final_hidden_states(dense, batches)
    return sum(float((a - b).square().mean()) for a, b in zip(pruned, reference)) / len(batches)


def expected_pruned(rows, columns, sparsity, blocksize=BLOCKSIZE):
    """The reference's count: int(rows * width * sparsity) per block of columns, jointly over rows."""
    return sum(int(rows * (min(start + blocksize, columns) - start) * sparsity)
               for start in range(0, columns, blocksize))


def count_hinv_calls(monkeypatch):
    calls = []
    original = sparsegpt_module.sparsegpt_hinv

    def counting(hessian, *args, **kwargs):
        calls.append(hessian.shape[0])
        return original(hessian, *args, **kwargs)

    monkeypatch.setattr(sparsegpt_module, "sparsegpt_hinv", counting)
    return calls


@pytest.mark.parametrize("pattern,sparsity", [("unstructured", 0.5), pytest.param("2:4", None, marks=pytest.mark.slow)])
def test_minilm_sparsity_and_reconstruction(minilm_setup, monkeypatch, pattern, sparsity):
    dense, calibration, held_out = minilm_setup
    model = copy.deepcopy(dense)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    hinv_calls = count_hinv_calls(monkeypatch)
    masks = sparsegpt_prune(model, calibration, sparsity, pattern=pattern, progress=False)

    targets = select_targets(model)
    assert list(masks) == [f"{name}.weight" for name in targets]
    # q/k/v share one Hessian: 4 inverses per layer (qkv, attention output, FFN in, FFN out)
    assert len(hinv_calls) == 4 * 6
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        weight = params[name].detach()
        assert mask.dtype == torch.bool and mask.shape == weight.shape
        if pattern == "unstructured":
            assert int((~mask).sum()) == expected_pruned(*weight.shape, 0.5), name
        else:
            assert bool((mask.view(-1, 4).sum(1) == 2).all()), name
        assert bool((weight[~mask] == 0).all()) and bool((weight[mask] != 0).all())
        assert not torch.equal(weight[mask], before[name][mask]), name  # kept weights were updated
    for name, param in params.items():  # embeddings, LayerNorm, biases, pooler
        if name not in masks:
            assert torch.equal(param.detach(), before[name]), name

    magnitude = copy.deepcopy(dense)
    magnitude_prune(magnitude, sparsity, pattern=pattern, scope="layer")
    ours, baseline = output_mse(model, dense, held_out), output_mse(magnitude, dense, held_out)
    assert ours < baseline, (ours, baseline)


def llama(seed=0):
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).eval()


def gpt2(seed=0, n_embd=64):
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=128, n_embd=n_embd, n_layer=2, n_head=4, n_positions=64)
    return GPT2LMHeadModel(config).eval()


def token_batches(seed=0, batches=3, batch_size=4, length=16):
    """Random token batches; the second sequence of every batch is right-padded (padding ids are junk)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batches):
        input_ids = torch.randint(0, 128, (batch_size, length), generator=g)
        attention_mask = torch.ones_like(input_ids)
        attention_mask[1, length // 2:] = 0
        out.append({"input_ids": input_ids, "attention_mask": attention_mask})
    return out


@pytest.mark.parametrize("make,groups", [(llama, 4), (gpt2, 4)], ids=["llama", "gpt2"])
@pytest.mark.parametrize("pattern,sparsity", [("unstructured", 0.5), ("2:4", None)])
def test_decoders_prune_end_to_end(monkeypatch, make, groups, pattern, sparsity):
    model = make()
    batches = token_batches()
    hinv_calls = count_hinv_calls(monkeypatch)
    masks = sparsegpt_prune(model, batches, sparsity, pattern=pattern, blocksize=32, progress=False)
    assert len(hinv_calls) == groups * 2  # Llama: (q,k,v), o, (gate,up), down; GPT-2: 4 Conv1D, no sharing
    modules = select_targets(model)
    assert list(masks) == [f"{name}.weight" for name in modules]
    for name, module in modules.items():
        mask = masks[f"{name}.weight"]
        weight = module.weight.detach()
        assert mask.shape == weight.shape
        assert bool((weight[~mask] == 0).all())
        oriented = input_dim_last(module, mask)  # [out, in]: GPT-2's Conv1D stores [in, out]
        if pattern == "unstructured":
            assert int((~oriented).sum()) == expected_pruned(*oriented.shape, 0.5, blocksize=32), name
        else:
            assert bool((oriented.reshape(-1, 4).sum(1) == 2).all()), name
    with torch.no_grad():
        logits = model(**batches[0]).logits
    assert bool(torch.isfinite(logits).all())


def test_llama_on_device_argument(monkeypatch):
    """device= moves each block there and back; masks come back with the weights."""
    model = llama(seed=1)
    masks = sparsegpt_prune(model, token_batches(), 0.5, device="cpu", progress=False)
    assert all(mask.device.type == "cpu" for mask in masks.values())


def test_hessian_is_running_mean_over_real_tokens():
    g = torch.Generator().manual_seed(0)
    linear = nn.Linear(6, 3)
    masks = [torch.tensor([[True, True, False], [True, False, False]]), None]
    inputs = [torch.randn(2, 3, 6, generator=g), torch.randn(1, 3, 6, generator=g)]
    collector = _Collector(masks, RunningHessian)
    hook = collector.hook("layer")
    for x in inputs:
        collector.start_batch(linear, (x,))
        hook(linear, (x,), {}, None)
    real = torch.cat([inputs[0][masks[0]], inputs[1].reshape(-1, 6)])
    group = collector.groups[0].statistic
    assert group.tokens == real.shape[0] == 6
    torch.testing.assert_close(group.hessian, 2 * real.t() @ real / real.shape[0])


def test_shared_input_means_shared_hessian():
    x = torch.randn(2, 4, 8)
    collector = _Collector([], RunningHessian)
    a, b, c = collector.hook("q"), collector.hook("k"), collector.hook("o")
    for _ in range(2):
        collector.start_batch(None, (x,))
        a(None, (x,), {}, None)
        b(None, (x,), {}, None)
        c(None, (x.clone(),), {}, None)
    assert [group.members for group in collector.groups] == [["q", "k"], ["o"]]
    assert collector.groups[0].statistic.tokens == 16
    torch.testing.assert_close(collector.groups[0].statistic.hessian, collector.groups[1].statistic.hessian)


def test_errors():
    model = llama()
    batches = token_batches(batches=1)
    with pytest.raises(ValueError, match="empty calibration set"):
        sparsegpt_prune(model, [], 0.5, progress=False)
    with pytest.raises(ValueError, match="sparsity is required"):
        sparsegpt_prune(model, batches, progress=False)
    with pytest.raises(ValueError, match="conflicts with pattern 2:4"):
        sparsegpt_prune(model, batches, 0.3, pattern="2:4", progress=False)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        sparsegpt_prune(model, batches, 1.5, progress=False)
    with pytest.raises(ValueError, match="outside them"):
        sparsegpt_prune(model, batches, 0.5, targets=["lm_head"], progress=False)
    with pytest.raises(ValueError, match="not Linear|are not"):
        sparsegpt_prune(model, batches, 0.5, targets=["model.embed_tokens"], progress=False)
    with pytest.raises(ValueError, match="multiple of M=8"):
        sparsegpt_prune(model, batches, pattern="4:8", blocksize=20, progress=False)
    with pytest.raises(ValueError, match="not divisible by M=8"):
        sparsegpt_prune(gpt2(n_embd=36), batches, pattern="4:8", progress=False)
    with pytest.raises(ValueError, match="unsupported architecture"):
        sparsegpt_prune(nn.Sequential(nn.Linear(4, 4)), batches, 0.5, progress=False)
    broken = llama()
    with torch.no_grad():
        broken.model.layers[1].mlp.down_proj.weight[0, 0] = math.nan
    with pytest.raises(ValueError, match="down_proj.weight contains 1 NaN/Inf"):
        sparsegpt_prune(broken, batches, 0.5, progress=False)


def test_targets_subset_and_logging(caplog):
    model = llama()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with caplog.at_level("INFO", logger="robustprune.pruners.sparsegpt"):
        masks = sparsegpt_prune(model, token_batches(), 0.5, targets=["*.mlp.down_proj"], progress=False)
    assert "SparseGPT Hessians" in caplog.text
    assert sorted(masks) == ["model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"]
    for name, param in model.named_parameters():
        if name not in masks:
            assert torch.equal(param.detach(), before[name]), name


# ------------------------------------------------------------------------------------------- sweeps


@pytest.fixture(scope="module")
def minilm_sweep(minilm_path, minilm_tokenizer, sst2_sentences):
    """The dense MiniLM, a small calibration set (8 x 24 tokens) and its dense Hessians, collected once."""
    dense = AutoModel.from_pretrained(minilm_path).eval()
    batches = calibration_batches(minilm_tokenizer, sst2_sentences[:8], num_samples=8, seq_len=24, batch_size=4)
    before = {name: p.detach().clone() for name, p in dense.named_parameters()}
    hessians = collect_hessians(dense, batches, progress=False)
    for name, param in dense.named_parameters():  # collecting never prunes
        assert torch.equal(param.detach(), before[name]), name
    return dense, batches, hessians


@pytest.mark.slow
def test_collect_once_prune_a_sweep(minilm_sweep, monkeypatch):
    dense, _, hessians = minilm_sweep
    targets = select_targets(dense)
    assert list(hessians) == list(targets)
    for layer in range(6):  # q/k/v share one tensor object: 4 distinct Hessians per layer
        prefix = f"encoder.layer.{layer}.attention.self."
        assert hessians[prefix + "query"] is hessians[prefix + "key"] is hessians[prefix + "value"]
    assert len({id(h) for h in hessians.values()}) == 4 * 6
    for name, module in targets.items():
        columns = module.weight.shape[1]
        assert hessians[name].shape == (columns, columns) and hessians[name].dtype == torch.float32
    snapshot = {name: h.clone() for name, h in hessians.items()}

    def no_calibration(*args, **kwargs):
        raise AssertionError("the sweep path must not run a calibration pass")

    monkeypatch.setattr(sparsegpt_module, "run_blocks_sequentially", no_calibration)
    hinv_calls = count_hinv_calls(monkeypatch)
    for sparsity in (0.3, 0.6):
        model = copy.deepcopy(dense)
        masks = sparsegpt_prune(model, None, sparsity, hessians=hessians, progress=False)
        assert list(masks) == [f"{name}.weight" for name in targets]
        params = dict(model.named_parameters())
        for name, mask in masks.items():
            weight = params[name].detach()
            assert int((~mask).sum()) == expected_pruned(*weight.shape, sparsity), (sparsity, name)
            assert bool((weight[~mask] == 0).all())
    assert len(hinv_calls) == 2 * 4 * 6  # one Hinv per shared Hessian per run
    for name, hessian in hessians.items():  # the caller's Hessians serve the whole sweep unchanged
        assert torch.equal(hessian, snapshot[name]), name


@pytest.mark.slow
def test_sweep_matches_sequential_on_first_block(minilm_sweep):
    dense, batches, hessians = minilm_sweep
    sequential, sweep = copy.deepcopy(dense), copy.deepcopy(dense)
    masks_sequential = sparsegpt_prune(sequential, batches, 0.5, progress=False)
    masks_sweep = sparsegpt_prune(sweep, None, 0.5, hessians=hessians, progress=False)
    assert list(masks_sequential) == list(masks_sweep)
    params_sequential, params_sweep = dict(sequential.named_parameters()), dict(sweep.named_parameters())
    first = [name for name in masks_sweep if name.startswith("encoder.layer.0.")]
    assert len(first) == 6
    for name in first:  # block 0 sees the same dense inputs either way
        assert torch.equal(masks_sequential[name], masks_sweep[name]), name
        assert torch.equal(params_sequential[name], params_sweep[name]), name
    # later blocks are calibrated on pruned (sequential) vs dense (sweep) inputs
    later = [name for name in masks_sweep if name.startswith("encoder.layer.5.")]
    assert any(not torch.equal(params_sequential[name], params_sweep[name]) for name in later)


@pytest.mark.slow
def test_sweep_errors(minilm_sweep):
    dense, _, hessians = minilm_sweep
    model = copy.deepcopy(dense)
    incomplete = {name: h for name, h in hessians.items() if name != "encoder.layer.2.output.dense"}
    with pytest.raises(ValueError, match=r"no Hessian for 1 target\(s\): \['encoder.layer.2.output.dense'\]"):
        sparsegpt_prune(model, None, 0.5, hessians=incomplete, progress=False)
    wrong = dict(hessians)
    wrong["encoder.layer.0.output.dense"] = hessians["encoder.layer.0.attention.output.dense"]
    with pytest.raises(ValueError, match=r"expected \(1536, 1536\)"):
        sparsegpt_prune(model, None, 0.5, hessians=wrong, progress=False)
    with pytest.raises(ValueError, match="empty calibration set"):
        sparsegpt_prune(model, None, 0.5, progress=False)
    with pytest.raises(ValueError, match="empty calibration set"):
        collect_hessians(model, [], progress=False)
    poisoned = dict(hessians)
    poisoned["encoder.layer.4.output.dense"] = hessians["encoder.layer.4.output.dense"].clone()
    poisoned["encoder.layer.4.output.dense"][3, 3] = float("nan")
    with pytest.raises(ValueError, match=r"Hessian of target\(s\) \['encoder.layer.4.output.dense'\] is not finite"):
        sparsegpt_prune(model, None, 0.5, hessians=poisoned, progress=False)
    for name, param in model.named_parameters():  # rejected before anything was pruned
        assert torch.equal(param, dict(dense.named_parameters())[name]), name
    # a targets subset needs only its own Hessians
    subset = {name: h for name, h in hessians.items() if name.endswith(".output.dense")}
    masks = sparsegpt_prune(model, None, 0.5, targets=["*.output.dense"], hessians=subset, progress=False)
    assert sorted(masks) == sorted(f"{name}.weight" for name in subset) and len(masks) == 12


def test_nan_activations_are_refused_naming_the_targets(minilm_path, minilm_tokenizer):
    model = AutoModel.from_pretrained(minilm_path).eval()
    with torch.no_grad():
        model.embeddings.LayerNorm.weight[3] = float("nan")  # NaN activations reach every block
    batch = dict(minilm_tokenizer(["a test sentence"], return_tensors="pt"))
    with pytest.raises(ValueError, match=r"Hessian of target\(s\) \['encoder.layer.0.attention.self.query', "
                                         r"'encoder.layer.0.attention.self.key', .* is not finite"):
        sparsegpt_prune(model, [batch], 0.5, progress=False)
