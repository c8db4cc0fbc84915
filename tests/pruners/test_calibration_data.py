"""Calibration texts and batches: real SST-2 data, the real all-MiniLM-L6-v2 tokenizer."""

import pytest
import torch

from robustprune.data.texts import read_text_lines
from robustprune.pruners.calibration_data import calibration_batches


@pytest.fixture(scope="module")
def tokenizer(minilm_tokenizer):
    return minilm_tokenizer


@pytest.fixture()
def text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    lines = [f"Line {i} of a small corpus talks about pruning, sparsity and robustness of transformers."
             for i in range(40)]
    lines.insert(3, "")
    lines.insert(10, "   ")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_read_sst2_train(sst2_sentences):
    assert len(sst2_sentences) == 3_000  # the repository's sample: the first 3,000 of 67,349
    assert sst2_sentences[0].strip() == "hide new secretions from the parental units"
    assert all(isinstance(s, str) and s.strip() for s in sst2_sentences)
    assert not any("\t" in s or "\n" in s for s in sst2_sentences[:1000])


def test_read_plain_text_skips_empty_lines(text_file):
    texts = read_text_lines(text_file)
    assert len(texts) == 40
    assert texts[0].startswith("Line 0 ") and texts[-1].startswith("Line 39 ")


def test_read_errors(tmp_path):
    missing = tmp_path / "nope.tsv"
    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        read_text_lines(missing)
    tsv = tmp_path / "data.tsv"
    tsv.write_text("sentence\tlabel\na fine film\t1\n", encoding="utf-8")
    assert read_text_lines(tsv, column="sentence") == ["a fine film"]
    with pytest.raises(ValueError, match=r"'text'.*\['sentence', 'label'\]"):
        read_text_lines(tsv, column="text")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no calibration text"):
        read_text_lines(empty)
    header_only = tmp_path / "header.tsv"
    header_only.write_text("sentence\tlabel\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no calibration text"):
        read_text_lines(header_only, column="sentence")


def test_tsv_quotes_are_literal(tmp_path):
    tsv = tmp_path / "quotes.tsv"
    tsv.write_text('sentence\tlabel\n"quoted" start\t1\nan " odd quote\t0\n', encoding="utf-8")
    assert read_text_lines(tsv, column="sentence") == ['"quoted" start', 'an " odd quote']


def test_first_mode_shapes_and_padding(tokenizer, sst2_sentences):
    batches = calibration_batches(tokenizer, sst2_sentences, num_samples=10, seq_len=16, batch_size=4)
    assert [b["input_ids"].shape[0] for b in batches] == [4, 4, 2]
    for start, batch in zip((0, 4, 8), batches):
        assert set(batch) >= {"input_ids", "attention_mask"}
        assert batch["input_ids"].dtype == torch.long
        assert batch["input_ids"].shape == batch["attention_mask"].shape
        assert batch["input_ids"].shape[1] <= 16
        for row, (ids, mask) in enumerate(zip(batch["input_ids"], batch["attention_mask"])):
            expected = tokenizer(sst2_sentences[start + row], truncation=True, max_length=16)["input_ids"]
            n = int(mask.sum())
            assert ids[:n].tolist() == expected  # right padding, real tokens first
            assert torch.all(ids[n:] == tokenizer.pad_token_id) and torch.all(mask[n:] == 0)
    # the longest row of some batch is cut at exactly seq_len
    long_batches = calibration_batches(tokenizer, sst2_sentences, num_samples=64, seq_len=8, batch_size=64)
    assert long_batches[0]["input_ids"].shape == (64, 8)
    assert bool((long_batches[0]["attention_mask"].sum(1) == 8).any())
    assert bool((long_batches[0]["attention_mask"].sum(1) < 8).any())


def test_first_mode_is_deterministic(tokenizer, sst2_sentences):
    a = calibration_batches(tokenizer, sst2_sentences, num_samples=6, seq_len=12, batch_size=3, seed=0)
    b = calibration_batches(tokenizer, sst2_sentences, num_samples=6, seq_len=12, batch_size=3, seed=5)
    assert all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in x)


def test_windows_mode_on_sst2(tokenizer, sst2_sentences):
    seq_len = 64  # longer than any single SST-2 sentence tokenization in most draws: texts get concatenated
    batches = calibration_batches(tokenizer, sst2_sentences, num_samples=10, seq_len=seq_len, batch_size=4,
                                  mode="windows", seed=0)
    assert [b["input_ids"].shape for b in batches] == [(4, seq_len), (4, seq_len), (2, seq_len)]
    for batch in batches:
        assert torch.all(batch["attention_mask"] == 1)
        assert torch.all(batch["input_ids"][:, 0] == tokenizer.cls_token_id)
        assert torch.all(batch["input_ids"][:, -1] == tokenizer.sep_token_id)
        inner = batch["input_ids"][:, 1:-1]
        assert not torch.isin(inner, torch.tensor(tokenizer.all_special_ids)).any()

    same = calibration_batches(tokenizer, sst2_sentences, num_samples=10, seq_len=seq_len, batch_size=4,
                               mode="windows", seed=0)
    other = calibration_batches(tokenizer, sst2_sentences, num_samples=10, seq_len=seq_len, batch_size=4,
                                mode="windows", seed=1)
    assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(batches, same))
    assert not all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(batches, other))


def test_windows_mode_on_text_file(tokenizer, text_file):
    texts = read_text_lines(text_file)
    line_tokens = tokenizer(texts[0], add_special_tokens=False)["input_ids"]
    # windows shorter than one line come from a single line; longer ones span several lines
    for seq_len in (8, 3 * len(line_tokens)):
        batches = calibration_batches(tokenizer, texts, num_samples=5, seq_len=seq_len, batch_size=2,
                                      mode="windows", seed=3)
        ids = torch.cat([b["input_ids"] for b in batches])
        assert ids.shape == (5, seq_len)
        corpus = " ".join(texts)
        for row in ids:
            decoded = tokenizer.decode(row[1:-1])
            assert decoded in tokenizer.decode(tokenizer(corpus, add_special_tokens=False)["input_ids"])
    with pytest.raises(ValueError, match="fewer than one window"):
        calibration_batches(tokenizer, texts[:2], num_samples=1, seq_len=200, mode="windows")


def test_seq_len_capped_by_tokenizer_limit(tokenizer, sst2_sentences):
    assert tokenizer.model_max_length == 512
    batches = calibration_batches(tokenizer, sst2_sentences, num_samples=2, seq_len=512, mode="windows")
    assert batches[0]["input_ids"].shape == (2, 512)
    with pytest.raises(ValueError, match=r"seq_len=513.*model_max_length=512"):
        calibration_batches(tokenizer, sst2_sentences, num_samples=2, seq_len=513)


def test_argument_errors(tokenizer, sst2_sentences):
    with pytest.raises(ValueError, match="empty calibration set"):
        calibration_batches(tokenizer, sst2_sentences, num_samples=0)
    with pytest.raises(ValueError, match="empty calibration set"):
        calibration_batches(tokenizer, [], num_samples=4)
    with pytest.raises(ValueError, match="seq_len"):
        calibration_batches(tokenizer, sst2_sentences, num_samples=4, seq_len=0)
    with pytest.raises(ValueError, match="batch_size"):
        calibration_batches(tokenizer, sst2_sentences, num_samples=4, batch_size=0)
    with pytest.raises(ValueError, match="mode"):
        calibration_batches(tokenizer, sst2_sentences, num_samples=4, mode="random")
    with pytest.raises(ValueError, match="only 3 were given"):
        calibration_batches(tokenizer, sst2_sentences[:3], num_samples=4)
    with pytest.raises(ValueError, match="no room for text"):
        calibration_batches(tokenizer, sst2_sentences, num_samples=1, seq_len=2, mode="windows")
    with pytest.raises(TypeError, match="not one string"):
        calibration_batches(tokenizer, "one long string", num_samples=1)
