"""A sweep's calibration sources (``pruning.calibration.source`` / ``compare``): which texts each calibrated
method's batches are cut from, and what its record says about them."""

from __future__ import annotations

import pytest
import torch

from robustprune.data.datasets import TextDataset, load_glue_task
from robustprune.experiments.config import ConfigError, parse_config
from robustprune.experiments.methods import PointPruner
from robustprune.pruners.calibration_data import calibration_batches
from tests.conftest import SST2_DIR

TRAIN = load_glue_task(SST2_DIR, "sst2", "train").subset(range(20))
ROBUST = TextDataset(["a dul film .", "a gorgeous , wity film .", "not bad at al ."], [0, 1, 1])


def pruner(tmp_path, tokenizer, robust=ROBUST, **calibration):
    config = parse_config({"data": {"robust_set": "sst2-adv-sample"}, "pruning": {
        "methods": ["wanda", "sparsegpt"], "calibration": {"samples": 8, "seq_len": 16, "batch_size": 4,
                                                           **calibration}}})
    return PointPruner(config, torch.nn.Linear(2, 2), tokenizer, TRAIN, 3, tmp_path, False, robust=robust)


def test_each_source_gives_its_own_texts(tmp_path, minilm_tokenizer):
    texts = tmp_path / "calibration.txt"
    texts.write_text("\n".join(f"line {i} of my own text" for i in range(10)) + "\n")
    p = pruner(tmp_path, minilm_tokenizer, compare={"adv": "robust_set", "mine": str(texts), "sst": "sst2-sample"})

    def ids(batches):
        return [row.tolist() for batch in batches for row in batch["input_ids"]]

    # the training split: its first 8 texts, as before sources existed
    assert ids(p.batches("train")) == ids(calibration_batches(minilm_tokenizer, TRAIN.texts, 8, 16, 4, mode="first"))
    # 3 adversarial texts for 8 samples: 8 windows of exactly 16 tokens cut from them, seeded by the seed (3)
    assert ids(p.batches("robust_set")) == ids(calibration_batches(minilm_tokenizer, ROBUST.texts, 8, 16, 4,
                                                                   mode="windows", seed=3))
    assert all(len(row) == 16 for row in ids(p.batches("robust_set")))
    first_of_file = minilm_tokenizer.decode(p.batches(str(texts))[0]["input_ids"][0], skip_special_tokens=True)
    assert first_of_file == "line 0 of my own text"
    shipped = minilm_tokenizer.decode(p.batches("sst2-sample")[0]["input_ids"][0], skip_special_tokens=True)
    assert shipped == minilm_tokenizer.decode(minilm_tokenizer(TRAIN.texts[0], truncation=True,
                                                               max_length=16)["input_ids"], skip_special_tokens=True)
    assert p.calibration_record("wanda") == {"source": "train", "texts": 20, "samples": 8, "mode": "first"}
    assert p.calibration_record("sparsegpt@adv") == {"source": "robust_set", "texts": 3, "samples": 8,
                                                     "mode": "windows"}
    assert p.calibration_record("wanda@mine") == {"source": str(texts), "texts": 10, "samples": 8, "mode": "first"}


def test_a_bad_source_is_a_config_error(tmp_path, minilm_tokenizer):
    with pytest.raises(ConfigError, match=r"'pruning.calibration'.*no such file 'nothing.txt'"):
        pruner(tmp_path, minilm_tokenizer, source="nothing.txt").batches("nothing.txt")
    with pytest.raises(ConfigError, match="the source 'robust_set' needs the robust set"):
        pruner(tmp_path, minilm_tokenizer, robust=None).batches("robust_set")
