"""``robustprune prune``: tiny random-weight models of nine families, built offline from their config classes,
pruned by magnitude, Wanda and SparseGPT (with calibration) through the command line, written dense or sparse
and read back by ``load_pretrained``; bad input ends in one line."""

from __future__ import annotations

import json
import re

import pytest
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers

from robustprune.cli import main
from robustprune.sparse_ops.pretrained import load_pretrained
from robustprune.sparse_ops.sparse_linear import SparseLinear
from robustprune.targets import select_targets
from tests.conftest import SST2_TRAIN

SMALL = {"vocab_size": 96}
FAMILIES = {
    "bert": lambda: transformers.BertForSequenceClassification(transformers.BertConfig(
        **SMALL, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64)),
    "roberta": lambda: transformers.RobertaForSequenceClassification(transformers.RobertaConfig(
        **SMALL, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=70, pad_token_id=0)),
    "deberta-v2": lambda: transformers.DebertaV2ForSequenceClassification(transformers.DebertaV2Config(
        **SMALL, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=16,
        pad_token_id=0)),
    "gpt2": lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        **SMALL, n_embd=32, n_layer=2, n_head=4, n_positions=64)),
    "opt": lambda: transformers.OPTForCausalLM(transformers.OPTConfig(
        **SMALL, hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_attention_heads=4,
        max_position_embeddings=64, word_embed_proj_dim=32, pad_token_id=0)),
    "llama": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        **SMALL, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=64)),
    "mistral": lambda: transformers.MistralForCausalLM(transformers.MistralConfig(
        **SMALL, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=64)),
    "qwen2": lambda: transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
        **SMALL, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=64)),
    "phi": lambda: transformers.PhiForCausalLM(transformers.PhiConfig(
        **SMALL, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64)),
}


def word_tokenizer(texts, vocab_size):
    """A word-level tokenizer over the most frequent words of ``texts`` (ids < vocab_size), built offline."""
    counts: dict[str, int] = {}
    for text in texts:
        for word in text.lower().split():
            counts[word] = counts.get(word, 0) + 1
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    words = sorted(counts, key=lambda w: (-counts[w], w))[: vocab_size - len(specials)]
    vocab = {token: i for i, token in enumerate(specials + words)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                                cls_token="[CLS]", sep_token="[SEP]", model_max_length=64)


@pytest.fixture(scope="module")
def calibration_file(tmp_path_factory):
    lines = SST2_TRAIN.read_text(encoding="utf-8").splitlines()[1:41]
    path = tmp_path_factory.mktemp("calibration") / "calibration.txt"
    path.write_text("\n".join(line.split("\t")[0] for line in lines) + "\n", encoding="utf-8")
    return path


def tiny_checkpoint(family, directory, calibration_file):
    torch.manual_seed(0)
    model = FAMILIES[family]().eval()
    model.save_pretrained(directory)
    word_tokenizer(calibration_file.read_text(encoding="utf-8").splitlines(), SMALL["vocab_size"]
                   ).save_pretrained(directory)
    return model


def run(capsys, *argv):
    status = main(["prune", *map(str, argv), "--no-progress"])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_pruned_by_each_method_to_the_asked_sparsity(family, tmp_path, calibration_file, capsys):
    source = tmp_path / family
    original = tiny_checkpoint(family, source, calibration_file)
    targets = list(select_targets(original))
    assert len(targets) >= 8
    for method, output_format in [("magnitude", "dense"), ("wanda", "sparse"), ("sparsegpt", "sparse")]:
        out = tmp_path / f"{family}-{method}"
        calibration = [] if method == "magnitude" else ["--calibration", calibration_file, "--samples", 8,
                                                        "--seq-len", 16]
        status, stdout, stderr = run(capsys, source, "--method", method, "--sparsity", 0.5, *calibration,
                                     "--format", output_format, "--out", out)
        assert status == 0, stderr
        assert f"pruned by {method}" in stdout
        record = json.loads((out / "pruning.json").read_text())
        assert record["model_type"] == original.config.model_type
        assert record["architecture"] == type(original).__name__
        assert list(record["matrices"]) == targets
        assert record["sparsity_asked"] == 0.5 and record["format"] == output_format
        # the asked sparsity: over all targets for global magnitude, in every matrix for Wanda (per row) and
        # SparseGPT (per 128-column block quantile)
        for name, matrix in record["matrices"].items():
            if method != "magnitude":
                assert abs(matrix["sparsity"] - 0.5) <= (0.0 if method == "wanda" else 0.05), (name, matrix)
        assert abs(record["sparsity_measured"] - 0.5) < 1e-3
        if method != "magnitude":
            assert record["calibration"]["samples"] == 8 and len(record["calibration"]["sha256"]) == 64
        loaded = load_pretrained(out)
        assert type(loaded) is type(original)
        loaded_targets = select_targets(loaded)
        for name, module in loaded_targets.items():
            measured = float((module.weight == 0).float().mean())
            assert measured == pytest.approx(record["matrices"][name]["sparsity"]), name
        untouched = {key for key in original.state_dict() if not any(key == f"{t}.weight" for t in targets)}
        if method != "sparsegpt":  # SparseGPT updates the kept weights too; nothing outside the targets changes
            for name in targets:
                kept = loaded.get_submodule(name).weight != 0
                assert torch.equal(loaded.get_submodule(name).weight[kept], original.get_submodule(name).weight[kept])
        state = loaded.state_dict()
        for key in untouched:
            assert torch.equal(state[key], original.state_dict()[key]), key


def test_nm_sparse_checkpoint_comes_back_as_sparse_linear(tmp_path, calibration_file, capsys):
    source = tmp_path / "gpt2"
    original = tiny_checkpoint("gpt2", source, calibration_file)
    out = tmp_path / "gpt2-24"
    status, stdout, stderr = run(capsys, source, "--method", "wanda", "--pattern", "2:4", "--calibration",
                                 calibration_file, "--samples", 4, "--seq-len", 16, "--format", "sparse", "--out", out)
    assert status == 0, stderr
    assert "2:4" in stdout and "0.5625x" not in stdout  # fp32: 0.53125x
    loaded = load_pretrained(out)
    layers = [m for m in loaded.modules() if isinstance(m, SparseLinear)]
    assert len(layers) == len(select_targets(original))
    batch = {"input_ids": torch.tensor([[4, 5, 6, 7, 8]])}
    dense = load_pretrained(out)
    with torch.no_grad():
        assert torch.isfinite(loaded(**batch).logits).all()
        assert torch.equal(loaded(**batch).logits, dense(**batch).logits)
    record = json.loads((out / "pruning.json").read_text())
    assert record["bytes_at_rest"]["ratio"] == pytest.approx(0.53125)


def test_random_and_layer_scope_prune_every_matrix_exactly(tmp_path, calibration_file, capsys):
    source = tmp_path / "llama"
    original = tiny_checkpoint("llama", source, calibration_file)
    for method in ("random", "magnitude"):
        out = tmp_path / method
        status, _, stderr = run(capsys, source, "--method", method, "--sparsity", 0.3, "--scope", "layer",
                                "--seed", 3, "--device", "cpu", "--out", out)
        assert status == 0, stderr
        record = json.loads((out / "pruning.json").read_text())
        assert record["scope"] == "layer" and record["seed"] == (3 if method == "random" else None)
        for name, matrix in record["matrices"].items():
            numel = original.get_submodule(name).weight.numel()
            assert matrix["sparsity"] == round(0.3 * numel) / numel, name
    first = load_pretrained(tmp_path / "random")
    status, _, _ = run(capsys, source, "--method", "random", "--sparsity", 0.3, "--scope", "layer", "--seed", 3,
                       "--out", tmp_path / "again")
    again = load_pretrained(tmp_path / "again")
    for key, tensor in first.state_dict().items():  # the seed fixes the masks
        assert torch.equal(again.state_dict()[key], tensor), key


def test_fewer_texts_than_samples_calibrates_on_windows(tmp_path, calibration_file, capsys):
    source = tmp_path / "opt"
    tiny_checkpoint("opt", source, calibration_file)
    out = tmp_path / "opt-wanda"
    status, _, stderr = run(capsys, source, "--method", "wanda", "--sparsity", 0.5, "--calibration", calibration_file,
                            "--samples", 64, "--seq-len", 16, "--out", out)
    assert status == 0, stderr
    calibration = json.loads((out / "pruning.json").read_text())["calibration"]
    assert calibration["texts"] == 40 and calibration["mode"] == "windows"
    assert calibration["tokens"] == 64 * 16  # windows of exactly seq_len tokens, no padding


def test_bad_input_is_one_line(tmp_path, calibration_file, capsys):
    source = tmp_path / "bert"
    tiny_checkpoint("bert", source, calibration_file)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    torch.manual_seed(0)
    odd = tmp_path / "odd"
    transformers.BertModel(transformers.BertConfig(vocab_size=96, hidden_size=36, num_hidden_layers=1,
                                                   num_attention_heads=4, intermediate_size=72)).save_pretrained(odd)
    t5 = tmp_path / "t5"
    transformers.T5ForConditionalGeneration(transformers.T5Config(vocab_size=96, d_model=32, d_ff=64, num_layers=1,
                                                                  num_heads=4, d_kv=8)).save_pretrained(t5)
    capsys.readouterr()
    cases = [
        ([tmp_path / "missing", "--method", "magnitude", "--sparsity", 0.5], "no such model directory"),
        ([source, "--method", "magnitude", "--sparsity", 1.0], r"--sparsity must lie in \[0, 1\)"),
        ([source, "--method", "magnitude", "--sparsity", -0.1], r"--sparsity must lie in \[0, 1\)"),
        ([odd, "--method", "magnitude", "--pattern", "4:8"],
         "--pattern 4:8: layer encoder.layer.0.attention.self.query has 36 input features, not a multiple of M=8"),
        ([source, "--method", "wanda", "--sparsity", 0.5, "--calibration", empty], "empty calibration file"),
        ([source, "--method", "wanda", "--sparsity", 0.5], "--method wanda needs calibration text"),
        ([source, "--method", "wanda", "--sparsity", 0.5, "--calibration", calibration_file, "--scope", "layer"],
         "--scope applies to unstructured magnitude and random pruning only"),
        ([source, "--method", "magnitude", "--pattern", "3:4:5"], "--pattern: pattern must be"),
        ([t5, "--method", "magnitude", "--sparsity", 0.5], "model type 't5' is an encoder-decoder"),
        (["nosuch-org/nosuch-model", "--method", "magnitude", "--sparsity", 0.5], "nosuch-org/nosuch-model"),
    ]
    for argv, message in cases:
        status, _, stderr = run(capsys, *argv, "--out", tmp_path / "out")
        assert status == 2, (argv, stderr)
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("robustprune prune: "), stderr
        assert re.search(message, lines[0]), (message, lines[0])
        assert not (tmp_path / "out").exists()
    status, _, _ = run(capsys, source, "--method", "magnitude", "--sparsity", 0.5, "--out", tmp_path / "done")
    assert status == 0
    status, _, stderr = run(capsys, source, "--method", "magnitude", "--sparsity", 0.5, "--out", tmp_path / "done")
    assert status == 2 and "already holds a checkpoint" in stderr


@pytest.mark.slow
def test_minilm_at_50_percent_sparse_is_small_exact_and_evaluates(minilm_path, tmp_path, capsys):
    """The issue's acceptance: the shipped MiniLM (with a seeded, untrained classification head, so that
    ``eval`` has logits to score) pruned at 50 % into a sparse directory of at most 0.57x the pruned
    matrices' dense bytes, loaded bit-exactly, and evaluated."""
    torch.manual_seed(0)
    source = tmp_path / "minilm"
    transformers.AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=2).save_pretrained(source)
    transformers.AutoTokenizer.from_pretrained(minilm_path).save_pretrained(source)
    outputs = {}
    for output_format in ("dense", "sparse"):
        outputs[output_format] = tmp_path / f"minilm-{output_format}"
        status, _, stderr = run(capsys, source, "--method", "magnitude", "--sparsity", 0.5, "--dtype", "float16",
                                "--format", output_format, "--out", outputs[output_format])
        assert status == 0, stderr
    record = json.loads((outputs["sparse"] / "pruning.json").read_text())
    assert len(record["matrices"]) == 36 and record["sparsity_measured"] == pytest.approx(0.5, abs=1e-6)
    assert record["bytes_at_rest"]["ratio"] <= 0.57
    dense_bytes = (outputs["dense"] / "model.safetensors").stat().st_size
    sparse_bytes = (outputs["sparse"] / "sparse_model.safetensors").stat().st_size
    saved = record["bytes_at_rest"]["dense_equivalent"] - record["bytes_at_rest"]["pruned_matrices"]
    assert dense_bytes - sparse_bytes == pytest.approx(saved, abs=64 * 1024)  # the file shrinks by what was saved
    sparse, dense = load_pretrained(outputs["sparse"]), load_pretrained(outputs["dense"])
    assert sparse.dtype == torch.float16
    for key, tensor in dense.state_dict().items():
        assert sparse.state_dict()[key].dtype == tensor.dtype and torch.equal(sparse.state_dict()[key], tensor), key
    status, stdout, stderr = main(["eval", str(outputs["sparse"]), "--data", "sst2-sample", "--max-examples", "16",
                                   "--no-progress"]), *capsys.readouterr()
    assert status == 0, stderr
    assert "clean: accuracy" in stdout


def test_a_hub_calibration_dataset_may_name_its_configuration():
    from robustprune.experiments.prune_model import hub_dataset_spec

    assert hub_dataset_spec("allenai/c4:en") == ("allenai/c4", "en")
    assert hub_dataset_spec("glue:sst2") == ("glue", "sst2")
    assert hub_dataset_spec("wikitext") == ("wikitext", None)
    for bad in (":en", "allenai/c4:"):
        with pytest.raises(ValueError, match="NAME or NAME:CONFIG"):
            hub_dataset_spec(bad)
