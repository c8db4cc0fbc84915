"""Textual adversarial attacks in the shape of TextAttack: goal function, transformations, constraints,
greedy word-importance search, five recipes, and an engine that batches and caches model queries.

    from robustprune.eval.attacks import attack
    report = attack(classifier, dataset, "textfooler", max_examples=100)
    print(report.summary()); report.to_dict()   # Clean%, Aua%, Suc%, #Query, perturbed-word %
"""

from robustprune.eval.attacks.attack import Attack, AttackReport, ExampleResult, Recipe, attack, merge_reports
from robustprune.eval.attacks.goal import GoalResult, ProbabilityModel, UntargetedClassification
from robustprune.eval.attacks.recipes import RECIPES, build_recipe, load_masked_lm
from robustprune.eval.attacks.text import AttackedText

__all__ = [
    "RECIPES",
    "Attack",
    "AttackReport",
    "AttackedText",
    "ExampleResult",
    "GoalResult",
    "ProbabilityModel",
    "Recipe",
    "UntargetedClassification",
    "attack",
    "build_recipe",
    "load_masked_lm",
    "merge_reports",
]
