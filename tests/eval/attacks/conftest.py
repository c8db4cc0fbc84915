"""Shared pieces for the attack tests: real resources (GloVe, WordNet, the MiniLM sentence encoder) and a
tiny keyword-weight classifier whose probabilities can be worked out by hand."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import torch


class KeywordModel:
    """A logistic model over word weights: p(positive) = sigmoid(sum of the weights of its words).

    A real (if tiny) classifier implementing the ProbabilityModel protocol, so query counts and scores
    can be checked by hand. Records every call.
    """

    num_labels = 2

    def __init__(self, weights: dict[str, float]) -> None:
        self.weights = weights
        self.calls: list[list] = []

    def logit(self, text: str) -> float:
        return sum(self.weights.get(w, 0.0) for w in text.split())

    def p_positive(self, text: str) -> float:
        return 1.0 / (1.0 + math.exp(-self.logit(text)))

    def predict_proba(self, inputs: Sequence) -> torch.Tensor:
        self.calls.append(list(inputs))
        rows = []
        for item in inputs:
            text = item if isinstance(item, str) else " ".join(item)
            p = self.p_positive(text)
            rows.append([1.0 - p, p])
        return torch.tensor(rows, dtype=torch.float32)


@pytest.fixture(scope="package", autouse=True)
def one_intra_op_thread():
    """Attacks run many small forward passes, where a second intra-op thread buys little; on a shared,
    oversubscribed 2-core machine its synchronisation made these tests 5-10x slower. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def keyword_model() -> KeywordModel:
    return KeywordModel({"good": 1.0, "fine": 0.2, "okay": -0.4, "movie": 0.5, "film": -0.2, "bad": -1.0})


@pytest.fixture(scope="session")
def glove():
    from robustprune.eval.word_vectors import load_glove

    try:
        return load_glove()
    except ImportError as err:
        pytest.skip(f"GloVe 6B 50-d not loadable: {err}")


@pytest.fixture(scope="session")
def wordnet_ok():
    """The package's own WordNet, loaded once (it ships with robustprune: nothing to skip for)."""
    from robustprune.eval.wordnet import wordnet

    wordnet()
    return True


@pytest.fixture(scope="session")
def sentence_encoder(minilm_path):
    from robustprune.eval.attacks.constraints import default_sentence_encoder

    return default_sentence_encoder()


@pytest.fixture(scope="session")
def random_mlm(minilm_tokenizer):
    """A small randomly initialised BertForMaskedLM over the MiniLM vocabulary: it exercises the real
    masked-LM code path, but its candidate words are meaningless."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=minilm_tokenizer.vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=128,
    )
    return BertForMaskedLM(config).eval()
