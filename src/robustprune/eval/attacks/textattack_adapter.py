"""Running TextAttack itself on robustprune models (optional: ``pip install textattack``, needs network).

TextAttack is not a dependency: it is imported only when one of these functions is called.
:func:`wrap_for_textattack` exposes a :class:`~robustprune.eval.classifier.TextClassifier` (or anything
with ``predict_proba``) as a TextAttack ``ModelWrapper``; :func:`textattack_dataset` converts a
:class:`TextDataset`; :func:`textattack_attack` builds TextAttack's own recipe for one of our recipe
names; :func:`report_from_textattack` turns TextAttack's results into our :class:`AttackReport`, so
numbers from both engines can be compared side by side.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from robustprune.data.datasets import TextDataset
from robustprune.eval.attacks.attack import AttackReport, ExampleResult
from robustprune.eval.attacks.goal import ProbabilityModel
from robustprune.eval.attacks.text import AttackedText

# our recipe name -> TextAttack recipe class (textattack.attack_recipes)
TEXTATTACK_RECIPES = {
    "textfooler": "TextFoolerJin2019",
    "textbugger": "TextBuggerLi2018",
    "pwws": "PWWSRen2019",
    "bert-attack": "BERTAttackLi2020",
    "deepwordbug": "DeepWordBugGao2018",
}


def _textattack() -> Any:
    try:
        import textattack
    except ImportError:
        raise ImportError(
            "this adapter needs TextAttack, an optional dependency: pip install textattack "
            "(it downloads its word embeddings, USE and BERT models on first use); the built-in "
            "engine robustprune.eval.attacks.attack works offline"
        ) from None
    return textattack


def predict_numpy(classifier: ProbabilityModel, inputs: Sequence[str | Sequence[str]]) -> np.ndarray:
    """``[n, num_labels]`` float32 probabilities for TextAttack's inputs (strings, or column tuples for
    pair tasks, which are passed on as ``(first, second)``)."""
    items: list[str | tuple[str, str]] = []
    for item in inputs:
        if isinstance(item, str):
            items.append(item)
        elif len(item) == 1:
            items.append(str(item[0]))
        elif len(item) == 2:
            items.append((str(item[0]), str(item[1])))
        else:
            raise ValueError(f"expected a string or a 1- or 2-column tuple, got {len(item)} columns")
    if not items:
        return np.zeros((0, int(getattr(classifier, "num_labels", 2))), dtype=np.float32)
    return classifier.predict_proba(items).detach().float().cpu().numpy()


def wrap_for_textattack(classifier: ProbabilityModel) -> Any:
    """A ``textattack.models.wrappers.ModelWrapper`` that returns ``classifier``'s probabilities."""
    textattack = _textattack()

    class RobustpruneModelWrapper(textattack.models.wrappers.ModelWrapper):
        def __init__(self, wrapped: ProbabilityModel) -> None:
            self.classifier = wrapped
            self.model = getattr(wrapped, "model", wrapped)  # TextAttack reads .model for device placement

        def __call__(self, text_input_list: Sequence[str | Sequence[str]]) -> np.ndarray:
            return predict_numpy(self.classifier, text_input_list)

    return RobustpruneModelWrapper(classifier)


def textattack_dataset(dataset: TextDataset) -> Any:
    """The dataset as a ``textattack.datasets.Dataset`` (pair tasks get columns premise, hypothesis)."""
    textattack = _textattack()
    if dataset.text_pairs is None:
        rows = [(text, label) for text, label in zip(dataset.texts, dataset.labels)]
        return textattack.datasets.Dataset(rows, input_columns=["text"])
    rows = [((a, b), label) for a, b, label in zip(dataset.texts, dataset.text_pairs, dataset.labels)]
    return textattack.datasets.Dataset(rows, input_columns=["premise", "hypothesis"])


def textattack_attack(classifier: ProbabilityModel, recipe: str) -> Any:
    """TextAttack's own implementation of ``recipe`` (one of :data:`TEXTATTACK_RECIPES`) on ``classifier``."""
    key = recipe.lower().replace("_", "-")
    if key not in TEXTATTACK_RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}: expected one of {sorted(TEXTATTACK_RECIPES)}")
    textattack = _textattack()
    return getattr(textattack.attack_recipes, TEXTATTACK_RECIPES[key]).build(wrap_for_textattack(classifier))


def report_from_textattack(
    results: Sequence[Any], recipe: str, dataset_name: str = "", seconds: float = 0.0
) -> AttackReport:
    """Our :class:`AttackReport` from TextAttack ``AttackResult`` objects (e.g. from
    ``Attacker.attack_dataset()``).

    Single-sentence and pair inputs (the last column is taken as the attacked one) are supported.
    """
    textattack = _textattack()
    kinds = textattack.attack_results
    examples = []
    for i, result in enumerate(results):
        if isinstance(result, kinds.SkippedAttackResult):
            status = "skipped"
        elif isinstance(result, kinds.SuccessfulAttackResult):
            status = "succeeded"
        else:
            status = "failed"
        before, after = result.original_result, result.perturbed_result
        columns = list(before.attacked_text.column_labels)
        original_cols = [before.attacked_text._text_input[c] for c in columns]
        perturbed_cols = [after.attacked_text._text_input[c] for c in columns]
        original = AttackedText.from_text(original_cols[-1], mode="textattack")  # TextAttack's words
        perturbed = AttackedText.from_text(perturbed_cols[-1], mode="textattack")
        if perturbed.num_words == original.num_words:
            changed = tuple(
                (k, original.words[k], perturbed.words[k]) for k in original.words_diff(perturbed)
            )
        else:  # a swap split a word: fall back to TextAttack's own record of the changed indices
            changed = tuple(
                (k, original.words[k], "")
                for k in sorted(after.attacked_text.attack_attrs.get("modified_indices", ()))
                if k < original.num_words
            )
        examples.append(
            ExampleResult(
                index=i,
                original=original.text,
                perturbed=perturbed.text,
                context=original_cols[0] if len(columns) > 1 else None,
                label=int(before.ground_truth_output),
                original_prediction=int(before.output),
                perturbed_prediction=int(after.output),
                status=status,
                queries=int(after.num_queries),
                num_words=original.num_words,
                substitutions=changed,
            )
        )
    return AttackReport(
        recipe=f"textattack:{recipe}",
        dataset=dataset_name,
        results=examples,
        deviations=["run by TextAttack itself"],
        parameters={"engine": "textattack", "finished": time.time()},
        seconds=seconds,
        model_calls=0,
        texts_scored=0,
    )


__all__ = [
    "TEXTATTACK_RECIPES",
    "predict_numpy",
    "report_from_textattack",
    "textattack_attack",
    "textattack_dataset",
    "wrap_for_textattack",
]
