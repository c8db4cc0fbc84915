"""A small deterministic sentiment classifier that both robustprune's attack engine and TextAttack can query.

A bag-of-words logistic regression trained on the bundled SST-2 sample (``fixtures/train_bow.py``; weights in
``fixtures/bow_sst2.json``): p(positive) = sigmoid(bias + sum of the weights of the text's tokens), tokens =
``text.lower().split()``, unknown tokens weigh 0. Everything is computed in Python floats (float64), token by
token in text order, so every caller gets bit-identical probabilities.

This module imports only the standard library at module level, so TextAttack's separate venv can import it
standalone (``fixtures/record_textattack.py``); ``predict_proba`` imports torch lazily.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures"
DEFAULT_MODEL = FIXTURES / "bow_sst2.json"


def _sigmoid(z: float) -> float:
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class BagOfWordsClassifier:
    """p(positive) = sigmoid(bias + sum of ``weights[token]`` over ``text.lower().split()``).

    Labels: 0 = negative, 1 = positive (SST-2's). Implements robustprune's ProbabilityModel protocol
    (``num_labels``, ``predict_proba``).
    """

    num_labels = 2

    def __init__(self, path: str | Path = DEFAULT_MODEL) -> None:
        self.path = Path(path)
        raw = self.path.read_bytes()
        self.sha256 = hashlib.sha256(raw).hexdigest()
        spec = json.loads(raw.decode("utf-8"))
        self.bias: float = float(spec["bias"])
        self.weights: dict[str, float] = {str(k): float(v) for k, v in spec["weights"].items()}

    @staticmethod
    def tokens(text: str) -> list[str]:
        return text.lower().split()

    def logit(self, text: str) -> float:
        z = self.bias
        for tok in self.tokens(text):
            z += self.weights.get(tok, 0.0)
        return z

    def p_positive(self, text: str) -> float:
        return _sigmoid(self.logit(text))

    def probabilities(self, texts: Sequence[str]) -> list[list[float]]:
        """``[[p_negative, p_positive], ...]`` for each text, as Python floats."""
        out = []
        for text in texts:
            p = self.p_positive(text)
            out.append([1.0 - p, p])
        return out

    def predict(self, texts: Sequence[str]) -> list[int]:
        return [int(p_pos > p_neg) for p_neg, p_pos in self.probabilities(texts)]

    def predict_proba(self, inputs: Sequence[Any]) -> Any:
        """robustprune's protocol: each input a string or a list of words (joined with single spaces);
        returns a torch.float64 tensor of shape [n, 2]."""
        import torch

        texts = [item if isinstance(item, str) else " ".join(item) for item in inputs]
        return torch.tensor(self.probabilities(texts), dtype=torch.float64).reshape(len(texts), 2)
