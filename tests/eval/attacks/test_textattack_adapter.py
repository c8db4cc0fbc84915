"""The TextAttack adapter: probabilities in TextAttack's input forms, and a clear error without TextAttack."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from robustprune.data.datasets import TextDataset
from robustprune.eval.attacks import textattack_adapter

HAS_TEXTATTACK = importlib.util.find_spec("textattack") is not None


def test_predict_numpy_accepts_textattack_inputs(keyword_model):
    out = textattack_adapter.predict_numpy(
        keyword_model, ["a good movie", ("a bad movie",), ("premise", "good")]
    )
    assert out.dtype == np.float32 and out.shape == (3, 2)
    assert np.allclose(
        out[:, 1], [keyword_model.p_positive(t) for t in ["a good movie", "a bad movie", "premise good"]]
    )
    assert keyword_model.calls[-1] == ["a good movie", "a bad movie", ("premise", "good")]
    assert textattack_adapter.predict_numpy(keyword_model, []).shape == (0, 2)
    with pytest.raises(ValueError, match="columns"):
        textattack_adapter.predict_numpy(keyword_model, [("a", "b", "c")])


def test_every_recipe_has_a_textattack_counterpart():
    from robustprune.eval.attacks.recipes import RECIPES

    assert set(textattack_adapter.TEXTATTACK_RECIPES) == set(RECIPES)


@pytest.mark.skipif(
    HAS_TEXTATTACK, reason="TextAttack is installed: the missing-dependency error cannot occur"
)
def test_clear_error_without_textattack(keyword_model):
    with pytest.raises(ImportError, match="pip install textattack"):
        textattack_adapter.wrap_for_textattack(keyword_model)
    with pytest.raises(ImportError, match="pip install textattack"):
        textattack_adapter.textattack_dataset(TextDataset(texts=["x"], labels=[0]))


def test_unknown_recipe_is_rejected_before_importing(keyword_model):
    with pytest.raises(ValueError, match="unknown recipe"):
        textattack_adapter.textattack_attack(keyword_model, "hotflip")


@pytest.mark.skipif(not HAS_TEXTATTACK, reason="TextAttack is not installed (optional: pip install textattack)")
def test_wrapper_returns_probabilities(keyword_model):
    wrapper = textattack_adapter.wrap_for_textattack(keyword_model)
    assert np.allclose(wrapper(["a good movie"])[0, 1], keyword_model.p_positive("a good movie"))
