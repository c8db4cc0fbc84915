"""Clean evaluation: accuracy on the real fine-tuned SST-2 classifier (slow tier: it trains first); batching,
F1 and errors on MiniLM with a seeded, untrained head (the arithmetic does not need a trained one)."""

from __future__ import annotations

import pytest
import torch

from robustprune.data.datasets import TextDataset
from robustprune.eval.classifier import TextClassifier, evaluate_classifier


@pytest.fixture(scope="module")
def minilm_with_head(minilm_path, minilm_tokenizer):
    """(all-MiniLM-L6-v2 with a seeded two-class head, its tokenizer), eval mode."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=2).eval(), minilm_tokenizer


@pytest.mark.slow
def test_finetuned_minilm_beats_chance_on_sst2_dev(sst2_classifier, sst2_dev):
    result = evaluate_classifier(sst2_classifier, sst2_dev)
    assert result.accuracy >= 80.0
    assert len(result.predictions) == len(sst2_dev)
    assert sum(result.prediction_balance.values()) == pytest.approx(1.0)
    assert 0.3 < result.prediction_balance[1] < 0.7  # not collapsed onto one class
    assert result.majority_rate == pytest.approx(100 * 444 / 872)
    # the same numbers by hand, from unbatched single-example predictions
    subset = sst2_dev.subset(range(0, 872, 29))
    manual = [int(sst2_classifier.predict_logits([text]).argmax()) for text in subset.texts]
    assert evaluate_classifier(sst2_classifier, subset).predictions == manual


def test_batched_prediction_matches_one_at_a_time(minilm_with_head):
    model, tokenizer = minilm_with_head
    texts = ["a gripping , beautifully acted film .", "dull .", "it never finds its footing , and the jokes "
             "land with a thud that echoes long after the credits roll .", "fine"]
    batched = TextClassifier(model, tokenizer, batch_size=3).predict_proba(texts)
    single = torch.cat([TextClassifier(model, tokenizer).predict_proba([text]) for text in texts])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)
    assert torch.allclose(batched.sum(dim=1), torch.ones(4))
    assert model.training is False


def test_f1_and_pairs_by_hand(minilm_with_head):
    model, tokenizer = minilm_with_head
    classifier = TextClassifier(model, tokenizer)
    data = TextDataset(texts=["great fun", "awful , boring mess", "a triumph", "painfully bad"], labels=[1, 0, 0, 1])
    result = evaluate_classifier(classifier, data)
    predictions = torch.tensor(result.predictions)
    labels = torch.tensor(data.labels)
    tp = int(((predictions == 1) & (labels == 1)).sum())
    fp = int(((predictions == 1) & (labels == 0)).sum())
    fn = int(((predictions == 0) & (labels == 1)).sum())
    assert result.f1 == pytest.approx(0.0 if tp == 0 else 100 * 2 * tp / (2 * tp + fp + fn))
    pairs = classifier.predict_proba([("a triumph", "great fun"), ("dull", "bad")])
    assert pairs.shape == (2, 2)


def test_errors(minilm_with_head):
    model, tokenizer = minilm_with_head
    classifier = TextClassifier(model, tokenizer)
    with pytest.raises(ValueError, match="empty"):
        evaluate_classifier(classifier, TextDataset(texts=[], labels=[]))
    with pytest.raises(ValueError, match="3 labels"):
        evaluate_classifier(classifier, TextDataset(texts=["a"], labels=[2], num_labels=3))
    with pytest.raises(TypeError, match="all strings"):
        classifier.predict_proba(["a", ("b", "c")])
    with pytest.raises(ValueError, match="batch_size"):
        TextClassifier(model, tokenizer, batch_size=0)
    with pytest.raises(ValueError, match="num_labels"):
        TextClassifier(torch.nn.Linear(2, 2), tokenizer)
