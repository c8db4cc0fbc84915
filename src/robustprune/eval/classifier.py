"""Clean evaluation of sequence classifiers: batched prediction and accuracy / F1 on a :class:`TextDataset`.

:class:`TextClassifier` wraps a Hugging Face sequence classifier and its tokenizer behind one call,
``predict_proba(inputs) -> [n, num_labels]``, which the attacks and the experiment runner share. Inputs
are tokenised once, sorted by length and padded per batch (dynamic padding), so short sentences never pay
for long ones; results come back in input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robustprune.data.datasets import ClassifierInput, TextDataset
from robustprune.devices import autocast, check_precision


def _split_inputs(inputs: Sequence[ClassifierInput]) -> tuple[list[str], list[str] | None]:
    if all(isinstance(item, str) for item in inputs):
        return list(inputs), None  # type: ignore[arg-type]
    if all(isinstance(item, tuple) and len(item) == 2 for item in inputs):
        return [a for a, _ in inputs], [b for _, b in inputs]  # type: ignore[misc]
    raise TypeError("inputs must be all strings (single sentences) or all (first, second) string pairs")


class TextClassifier:
    """A Hugging Face sequence classifier and its tokenizer, queried in length-sorted batches.

    Args:
        model: an ``AutoModelForSequenceClassification``-style module returning ``.logits``.
        tokenizer: the model's tokenizer.
        batch_size: examples per forward pass.
        max_length: inputs are truncated to this many tokens (special tokens included).
        device: where to run the model; None: the device of its first parameter.
        precision: ``fp32``, ``bf16`` or ``fp16``: forward passes under autocast at that precision
            (:func:`robustprune.devices.autocast`); logits come back as float32 either way.

    The model is put in eval mode for each call and restored to its previous mode afterwards.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, *, batch_size: int = 64, max_length: int = 128,
                 device: torch.device | str | None = None, precision: str = "fp32") -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        num_labels = getattr(getattr(model, "config", None), "num_labels", None)
        if not isinstance(num_labels, int) or num_labels < 2:
            raise ValueError("model must be a sequence classifier whose config has num_labels >= 2 "
                             f"(got num_labels={num_labels!r})")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self.num_labels = num_labels
        if device is None:
            param = next(model.parameters(), None)
            device = param.device if param is not None else "cpu"
        self.device = torch.device(device)
        self.precision = check_precision(precision)

    def _encode(self, inputs: Sequence[ClassifierInput]) -> list[dict[str, list[int]]]:
        texts, pairs = _split_inputs(inputs)
        enc = self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length)
        keys = list(enc.keys())
        return [{key: enc[key][i] for key in keys} for i in range(len(texts))]

    @torch.no_grad()
    def predict_logits(self, inputs: Sequence[ClassifierInput]) -> torch.Tensor:
        """``[n, num_labels]`` float32 logits on CPU, in input order."""
        if len(inputs) == 0:
            return torch.empty(0, self.num_labels)
        rows = self._encode(inputs)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
        out = torch.empty(len(rows), self.num_labels)
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(order), self.batch_size):
                index = order[start:start + self.batch_size]
                batch = self.tokenizer.pad([rows[i] for i in index], return_tensors="pt")
                batch = {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}
                with autocast(self.device, self.precision):
                    logits = self.model(**batch).logits
                out[index] = logits.float().cpu()
        finally:
            self.model.train(was_training)
        return out

    def predict_proba(self, inputs: Sequence[ClassifierInput]) -> torch.Tensor:
        """``[n, num_labels]`` float32 softmax probabilities on CPU, in input order."""
        return self.predict_logits(inputs).softmax(dim=-1)

    def __call__(self, inputs: Sequence[ClassifierInput]) -> torch.Tensor:
        return self.predict_proba(inputs)


@dataclass(frozen=True)
class ClassificationResult:
    """Clean evaluation of one model on one dataset.

    Attributes:
        accuracy: percent of examples predicted correctly.
        f1: binary tasks: F1 (percent) of class 1, as GLUE reports it for MRPC/QQP; otherwise macro-F1.
        predictions: predicted class per example, in dataset order.
        prediction_balance: fraction of predictions per class (``{class: fraction}``); a pruned model that
            collapses onto one class shows up here.
        majority_rate: percent of the dataset's most frequent true label (the accuracy of always
            predicting it).
    """

    accuracy: float
    f1: float
    predictions: list[int]
    prediction_balance: dict[int, float]
    majority_rate: float

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "f1": self.f1, "prediction_balance": self.prediction_balance,
                "majority_rate": self.majority_rate}


def _f1(labels: torch.Tensor, predictions: torch.Tensor, num_labels: int) -> float:
    scores = []
    for cls in range(num_labels):
        tp = int(((predictions == cls) & (labels == cls)).sum())
        fp = int(((predictions == cls) & (labels != cls)).sum())
        fn = int(((predictions != cls) & (labels == cls)).sum())
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return 100.0 * (scores[1] if num_labels == 2 else sum(scores) / num_labels)


def evaluate_classifier(classifier: TextClassifier, dataset: TextDataset) -> ClassificationResult:
    """Accuracy, F1 and the prediction balance of ``classifier`` on ``dataset``.

    Raises:
        ValueError: an empty dataset, or a dataset whose ``num_labels`` differs from the model's.
    """
    if len(dataset) == 0:
        raise ValueError(f"dataset {dataset.name!r} is empty")
    if dataset.num_labels != classifier.num_labels:
        raise ValueError(f"dataset {dataset.name!r} has {dataset.num_labels} labels but the model predicts "
                         f"{classifier.num_labels}")
    predictions = classifier.predict_logits(dataset.inputs()).argmax(dim=-1)
    labels = torch.tensor(dataset.labels)
    counts = torch.bincount(predictions, minlength=dataset.num_labels)
    majority = torch.bincount(labels, minlength=dataset.num_labels).max()
    return ClassificationResult(
        accuracy=100.0 * float((predictions == labels).float().mean()),
        f1=_f1(labels, predictions, dataset.num_labels),
        predictions=predictions.tolist(),
        prediction_balance={cls: float(counts[cls]) / len(dataset) for cls in range(dataset.num_labels)},
        majority_rate=100.0 * float(majority) / len(dataset),
    )


__all__ = ["ClassificationResult", "TextClassifier", "evaluate_classifier"]
