"""Layer-by-layer calibration capture: the real all-MiniLM-L6-v2 and small random-config decoders.

The key property: with no pruning, replaying the blocks one after another from the captured inputs
reproduces the model's own hidden states exactly (everything a block needs was captured).
"""


import pytest
import torch
from torch import nn
from transformers import (
    AutoModel,
    AutoTokenizer,
    Gemma2Config,
    Gemma2ForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    OPTConfig,
    OPTForCausalLM,
)

from robustprune.data.texts import read_text_lines
from robustprune.pruners.calibration import (
    CACHE_KWARGS,
    BlockInputs,
    capture_block_inputs,
    hessian_bytes,
    replay,
    run_blocks_sequentially,
)
from robustprune.pruners.calibration_data import calibration_batches
from robustprune.targets import find_block_stack
from tests.conftest import SST2_TRAIN


@pytest.fixture(scope="module")
def minilm(minilm_path):
    return AutoModel.from_pretrained(minilm_path).eval()


@pytest.fixture(scope="module")
def minilm_batches(minilm_path):
    """Two batches of real sentences of different lengths, so every batch holds padding."""
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    texts = read_text_lines(SST2_TRAIN, column="sentence")[:6]
    batches = calibration_batches(tokenizer, texts, num_samples=6, seq_len=24, batch_size=3)
    assert all(not bool(b["attention_mask"].all()) for b in batches)
    return batches


def stack_of(model):
    return model.get_submodule(find_block_stack(model))


def block_io(model, batch, index):
    """What block ``index`` really receives and returns in the model's own forward pass."""
    seen = {}
    block = stack_of(model)[index]

    def pre_hook(module, args, kwargs):
        seen.setdefault("in", args[0] if args else kwargs["hidden_states"])

    def post_hook(module, args, out):
        seen.setdefault("out", out if isinstance(out, torch.Tensor) else out[0])

    handles = [block.register_forward_pre_hook(pre_hook, with_kwargs=True), block.register_forward_hook(post_hook)]
    try:
        with torch.no_grad():
            result = model(**batch, output_hidden_states=True)
    finally:
        for handle in handles:
            handle.remove()
    return seen["in"], seen["out"], result


def test_minilm_capture_structure(minilm, minilm_batches):
    inputs = capture_block_inputs(minilm, minilm_batches)
    assert isinstance(inputs, BlockInputs) and len(inputs) == 2
    assert not inputs.hidden_as_keyword  # BERT passes hidden states and the mask positionally
    assert inputs.per_block is None
    for batch, hidden, args, kwargs, mask in zip(minilm_batches, inputs.hidden_states, inputs.args,
                                                  inputs.kwargs, inputs.token_masks):
        b, s = batch["input_ids"].shape
        assert hidden.shape == (b, s, 384)
        embeddings = minilm.embeddings(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"])
        torch.testing.assert_close(hidden, embeddings, rtol=0, atol=0)
        attention_mask = args[0]  # the 4-D mask the encoder built, not the 2-D tokenizer mask
        assert attention_mask.dim() == 4 and attention_mask.shape[0] == b and attention_mask.shape[-1] == s
        assert kwargs.get("past_key_values") is None
        assert torch.equal(mask, batch["attention_mask"].bool())
    assert inputs.num_tokens == sum(int(b["attention_mask"].sum()) for b in minilm_batches)


def test_minilm_sequential_replay_reproduces_model(minilm, minilm_batches):
    visited = []
    out = run_blocks_sequentially(minilm, minilm_batches, lambda i, block, x: visited.append(i))
    assert visited == list(range(6))
    for batch, hidden in zip(minilm_batches, out.hidden_states):
        with torch.no_grad():
            expected = minilm(**batch).last_hidden_state
        torch.testing.assert_close(hidden, expected, rtol=0, atol=1e-5)


def test_visit_sees_each_blocks_true_inputs(minilm, minilm_batches):
    """Block l's captured inputs equal what block l receives inside the dense model."""
    def visit(index, block, inputs):
        for batch, hidden in zip(minilm_batches, inputs.hidden_states):
            real_in, _, _ = block_io(minilm, batch, index)
            torch.testing.assert_close(hidden, real_in, rtol=0, atol=1e-5)

    run_blocks_sequentially(minilm, minilm_batches, visit, progress=False)


def test_replay_runs_hooks_and_returns_outputs(minilm, minilm_batches):
    def visit(index, block, inputs):
        if index != 2:
            return
        rows = []
        handle = block.attention.self.query.register_forward_hook(lambda m, args, out: rows.append(args[0]))
        try:
            assert replay(block, inputs, keep_outputs=False) == []
            outputs = replay(block, inputs)
        finally:
            handle.remove()
        assert len(rows) == 2 * len(inputs)
        for batch, hidden, output in zip(minilm_batches, inputs.hidden_states, outputs):
            _, real_out, _ = block_io(minilm, batch, index)
            assert output.shape == hidden.shape
            torch.testing.assert_close(output, real_out, rtol=0, atol=1e-5)

    run_blocks_sequentially(minilm, minilm_batches, visit, progress=False)


def test_sequential_semantics_pruned_block_feeds_next(minilm_path, minilm_batches):
    model = AutoModel.from_pretrained(minilm_path).eval()
    dense_block1_inputs = [block_io(model, batch, 1)[0] for batch in minilm_batches]
    seen_by_block1 = []

    def visit(index, block, inputs):
        if index == 0:
            with torch.no_grad():
                block.output.dense.weight[:, :700] = 0  # "prune" part of block 0
        if index == 1:
            seen_by_block1.extend(h.clone() for h in inputs.hidden_states)

    run_blocks_sequentially(model, minilm_batches, visit, progress=False)
    for batch, dense, seen in zip(minilm_batches, dense_block1_inputs, seen_by_block1):
        assert not torch.allclose(seen, dense, atol=1e-3)  # block 1 was calibrated on the pruned block 0
        pruned_in, _, _ = block_io(model, batch, 1)
        torch.testing.assert_close(seen, pruned_in, rtol=0, atol=1e-5)


def test_training_flags_and_devices_restored(minilm_path, minilm_batches):
    model = AutoModel.from_pretrained(minilm_path)
    model.train()
    model.pooler.eval()  # a mixed state must come back exactly
    before = {name: m.training for name, m in model.named_modules()}
    modes_in_visit = []

    def visit(index, block, inputs):
        modes_in_visit.append(any(m.training for m in block.modules()))
        assert all(p.device.type == "cpu" for p in block.parameters())

    run_blocks_sequentially(model, minilm_batches, visit, device="cpu", progress=False)
    assert modes_in_visit == [False] * 6
    assert {name: m.training for name, m in model.named_modules()} == before
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert all(b.device.type == "cpu" for b in model.buffers())
    capture_block_inputs(model, minilm_batches, device="cpu")
    assert {name: m.training for name, m in model.named_modules()} == before


def _llama():
    return LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))


def _opt():
    return OPTForCausalLM(OPTConfig(vocab_size=128, hidden_size=64, ffn_dim=128, num_hidden_layers=2,
                                    num_attention_heads=4, word_embed_proj_dim=64, max_position_embeddings=64))


def _gpt2():
    return GPT2LMHeadModel(GPT2Config(vocab_size=128, n_embd=64, n_layer=2, n_head=4, n_positions=64))


def _gemma2():  # alternating sliding-window / full attention: blocks receive different masks
    return Gemma2ForCausalLM(Gemma2Config(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                          sliding_window=4, max_position_embeddings=64))


def _final_norm(model):
    for name in ("model.norm", "model.decoder.final_layer_norm", "transformer.ln_f"):
        try:
            return model.get_submodule(name)
        except AttributeError:
            continue
    raise AssertionError(type(model).__name__)


def decoder_batches():
    generator = torch.Generator().manual_seed(0)
    batches = []
    for left in (False, True):
        ids = torch.randint(3, 128, (3, 12), generator=generator)
        mask = torch.ones_like(ids)
        if left:
            mask[1, :5] = 0
        else:
            mask[1, 9:] = 0
            mask[2, 4:] = 0
        batches.append({"input_ids": ids, "attention_mask": mask})
    return batches


@pytest.mark.parametrize("make", [_llama, _opt, _gpt2, _gemma2], ids=["llama", "opt", "gpt2", "gemma2"])
def test_decoder_sequential_replay_reproduces_model(make):
    torch.manual_seed(0)
    model = make().eval()
    batches = decoder_batches()
    out = run_blocks_sequentially(model, batches, lambda i, block, x: None, progress=False)
    assert len(out) == 2
    for batch, hidden in zip(batches, out.hidden_states):
        _, last_block_out, result = block_io(model, batch, -1)
        torch.testing.assert_close(hidden, last_block_out, rtol=0, atol=1e-5)
        # transformers 5 ties hidden_states[-1] to last_hidden_state, i.e. AFTER the final norm
        with torch.no_grad():
            torch.testing.assert_close(_final_norm(model)(hidden), result.hidden_states[-1], rtol=0, atol=1e-5)


def test_decoder_kwargs_and_caches():
    torch.manual_seed(0)
    batches = decoder_batches()
    llama = _llama().eval()
    inputs = capture_block_inputs(llama, batches)
    kwargs = inputs.kwargs[0]
    assert inputs.args[0] == ()
    cos, sin = kwargs["position_embeddings"]  # rotary tables arrive precomputed, per call
    assert cos.shape[-2] == 12 and sin.shape == cos.shape
    cache_keys = [key for key in CACHE_KWARGS if key in kwargs]  # transformers 5.x renamed it to `cache`
    assert len(cache_keys) == 1 and kwargs[cache_keys[0]] is None and kwargs["use_cache"] is False
    assert kwargs["attention_mask"].dim() == 4

    gpt2 = _gpt2().eval()
    assert gpt2.config.use_cache
    inputs = capture_block_inputs(gpt2, batches)
    past, mask = inputs.args[0][0], inputs.args[0][1]  # GPT-2 passes its cache and mask positionally
    assert past is None and mask.dim() == 4
    assert inputs.kwargs[0]["use_cache"] is False


def test_gemma2_blocks_get_their_own_masks():
    torch.manual_seed(0)
    model = _gemma2().eval()
    batches = decoder_batches()
    inputs = capture_block_inputs(model, batches)
    assert inputs.per_block is not None and set(inputs.per_block) == {1}
    sliding, full = inputs.kwargs[0]["attention_mask"], inputs.for_block(1).kwargs[0]["attention_mask"]
    assert not torch.equal(sliding, full)
    # replaying block 1 with block 0's (sliding-window) mask would be wrong: the distinction matters
    block1 = stack_of(model)[1]
    with torch.no_grad():
        right = inputs.for_block(1).call(block1, 0)
        wrong = inputs.call(block1, 0)
    assert not torch.allclose(right, wrong, atol=1e-4)


class _KeywordBlock(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, hidden_states, scale=1.0):
        return (torch.tanh(self.fc(hidden_states)) * scale + hidden_states, None)


class _KeywordModel(nn.Module):
    """Calls its blocks with ``hidden_states=`` by keyword and gets tuples back."""

    def __init__(self, width=8, depth=3):
        super().__init__()
        self.embed = nn.Embedding(20, width)
        self.layers = nn.ModuleList(_KeywordBlock(width) for _ in range(depth))

    def forward(self, input_ids, scale=0.5):
        hidden = self.embed(input_ids)
        for layer in self.layers:
            hidden = layer(hidden_states=hidden, scale=scale)[0]
        return hidden


def test_hidden_states_by_keyword_and_tuple_outputs():
    torch.manual_seed(0)
    model = _KeywordModel()
    batches = [{"input_ids": torch.randint(0, 20, (2, 5))}, {"input_ids": torch.randint(0, 20, (1, 7))}]
    inputs = capture_block_inputs(model, batches)
    assert inputs.hidden_as_keyword and inputs.kwargs[0] == {"scale": 0.5} and inputs.token_masks == []
    out = run_blocks_sequentially(model, batches, lambda *a: None, progress=False)
    for batch, hidden in zip(batches, out.hidden_states):
        with torch.no_grad():
            torch.testing.assert_close(hidden, model(**batch), rtol=0, atol=0)


def test_errors(minilm, minilm_batches):
    with pytest.raises(ValueError, match="empty calibration set"):
        capture_block_inputs(minilm, [])
    with pytest.raises(ValueError, match="empty calibration set"):
        run_blocks_sequentially(minilm, [], lambda *a: None, progress=False)
    flat = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"unsupported architecture Sequential.*encoder\.layer.*model\.layers"):
        capture_block_inputs(flat, [{"input": torch.zeros(1, 4)}])
    with pytest.raises(ValueError, match="unsupported architecture"):
        hessian_bytes(flat)


def test_hessian_bytes(minilm):
    budget = hessian_bytes(minilm)
    per_block = (4 * 384 * 384 + 384 * 384 + 1536 * 1536) * 4  # q, k, v, attn out, FFN in (384), FFN out (1536)
    assert budget.num_hessians == 36
    assert budget.per_block_max == per_block
    assert budget.total == 6 * per_block
    assert list(budget.per_group) == [f"encoder.layer.{i}" for i in range(6)]
    summary = budget.summary()
    assert "36" in summary and "11.8 MiB" in summary and "70.9 MiB" in summary and str(budget) == summary

    gpt2 = _gpt2()  # Conv1D stores the input dimension first
    budget = hessian_bytes(gpt2)
    assert budget.num_hessians == 8
    assert budget.per_block_max == (3 * 64 * 64 + 256 * 256) * 4

    only_query = hessian_bytes(minilm, targets=["encoder.layer.*.attention.self.query", "pooler.dense"])
    assert only_query.num_hessians == 7
    assert only_query.total == 7 * 384 * 384 * 4 and only_query.per_block_max == 384 * 384 * 4
    assert "pooler.dense" in only_query.per_group
