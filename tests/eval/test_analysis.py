"""Curve analysis (ES, collapse flags, ES_robust), Spearman, mask cosine and Hamming distance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from robustprune.eval.analysis import (
    CurvePoint,
    es_robust,
    essential_sparsity,
    flag_collapsed,
    hamming_distance,
    mask_cosine,
    spearman,
)

SPARSITIES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
CLEAN = [91.5, 91.2, 90.9, 90.6, 90.4, 89.1, 86.0, 70.2, 50.9]  # dense 91.3, SST-2-like
DENSE = 91.3


def test_essential_sparsity_on_a_hand_made_curve():
    assert essential_sparsity(SPARSITIES, CLEAN, DENSE) == 0.5          # 90.4 is 0.9 below; 89.1 is 2.2 below
    assert essential_sparsity(SPARSITIES, CLEAN, DENSE, epsilon=2.5) == 0.6
    assert essential_sparsity(SPARSITIES, CLEAN, DENSE, epsilon=0.0) == 0.1  # 91.5 > dense is within
    assert essential_sparsity(SPARSITIES, CLEAN, 95.0) == 0.0          # already the first point drops too far
    assert essential_sparsity([0.5], [91.0], 91.3) == 0.5


def test_every_lower_sparsity_must_stay_within():
    # a dip at 0.3 ends the plateau even though 0.4 and 0.5 recover
    assert essential_sparsity([0.1, 0.2, 0.3, 0.4, 0.5], [91, 91, 88, 91, 91], 91) == 0.2


def test_points_are_sorted_and_validated():
    order = [4, 0, 8, 2, 6, 1, 3, 7, 5]
    assert essential_sparsity([SPARSITIES[i] for i in order], [CLEAN[i] for i in order], DENSE) == 0.5
    with pytest.raises(ValueError, match="9 points but metric has 8"):
        essential_sparsity(SPARSITIES, CLEAN[:-1], DENSE)
    with pytest.raises(ValueError, match=r"sparsities \[0.2\] appear more than once"):
        essential_sparsity([0.1, 0.2, 0.2], [90, 90, 90], 90)
    with pytest.raises(ValueError, match="fractions in"):
        essential_sparsity([10, 20], [90, 90], 90)
    with pytest.raises(ValueError, match="non-finite"):
        essential_sparsity([0.1, 0.2], [90, float("nan")], 90)
    with pytest.raises(ValueError, match="empty curve"):
        essential_sparsity([], [], 90)
    with pytest.raises(ValueError, match="epsilon"):
        essential_sparsity([0.1], [90], 90, epsilon=-1)
    with pytest.warns(UserWarning, match="percent"):
        essential_sparsity([0.1, 0.2], [0.91, 0.5], 0.913)


# The collapse trap: adversarial accuracy of the dense model is below chance, and it rises as the
# pruned model collapses toward one class (here from 0.7 on).
ROBUST = [31.0, 30.6, 30.4, 30.0, 29.9, 29.0, 27.1, 42.0, 49.5]
DENSE_ROBUST = 30.5
BALANCE = [{0: 0.48, 1: 0.52}] * 6 + [{0: 0.40, 1: 0.60}, {0: 0.93, 1: 0.07}, {0: 1.0, 1: 0.0}]


def _points() -> list[CurvePoint]:
    return [CurvePoint(s, m, b) for s, m, b in zip(SPARSITIES, CLEAN, BALANCE)]


def test_flag_collapsed():
    flags = flag_collapsed(_points(), majority_rate=50.9)
    # 0.8: 93 % of predictions in one class; 0.9: clean accuracy at the majority rate
    assert flags == [False] * 7 + [True, True]
    by_accuracy_only = flag_collapsed([CurvePoint(s, m) for s, m in zip(SPARSITIES, CLEAN)], 50.9)
    assert by_accuracy_only == [False] * 8 + [True]
    marked = _points()
    marked[2].collapsed = True
    assert flag_collapsed(marked, 50.9)[2] is True
    with pytest.raises(ValueError, match="majority_rate must be a percentage"):
        flag_collapsed(_points(), majority_rate=0.509 * 1000)
    with pytest.raises(ValueError, match="summing to 1"):
        flag_collapsed([CurvePoint(0.1, 90.0, {0: 0.7, 1: 0.7})], 50.0)
    with pytest.raises(TypeError, match="CurvePoint"):
        flag_collapsed([(0.1, 90.0)], 50.0)


def test_es_robust_ignores_collapsed_points():
    collapsed = flag_collapsed(_points(), majority_rate=50.9)
    # naively the robust curve "recovers" at 0.8 / 0.9; over the non-collapsed points ES_robust is 0.5
    assert essential_sparsity(SPARSITIES, ROBUST, DENSE_ROBUST, epsilon=1.0) == 0.5
    assert es_robust(SPARSITIES, ROBUST, DENSE_ROBUST, collapsed, epsilon=1.0) == 0.5
    assert es_robust(SPARSITIES, ROBUST, DENSE_ROBUST, collapsed, epsilon=4.0) == 0.7
    # without the flags a loose epsilon would wrongly run through the collapsed tail
    assert essential_sparsity(SPARSITIES, ROBUST, DENSE_ROBUST, epsilon=4.0) == 0.9
    assert es_robust(SPARSITIES, ROBUST, DENSE_ROBUST, [True] * 9) == 0.0
    assert es_robust(SPARSITIES, ROBUST, DENSE_ROBUST, np.array(collapsed), epsilon=4.0) == 0.7
    with pytest.raises(ValueError, match="collapsed has 8"):
        es_robust(SPARSITIES, ROBUST, DENSE_ROBUST, collapsed[:-1])


def test_spearman_matches_scipy_and_validates():
    a, b = [0.1, 0.4, 0.2, 0.9, 0.5], [3.0, 1.0, 2.0, 5.0, 4.0]
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic)
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="at least 2 points"):
        spearman([1.0], [2.0])
    with pytest.raises(ValueError, match="3 values but b has 2"):
        spearman([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="non-finite"):
        spearman([1, float("nan")], [1, 2])


def _masks(seed: int, density: float) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"layer.0.weight": torch.rand(64, 32, generator=g) < density,
            "layer.1.weight": torch.rand(16, 48, generator=g) < density}


def _flat(masks: dict[str, torch.Tensor]) -> np.ndarray:
    return np.concatenate([m.numpy().ravel().astype(np.float64) for m in masks.values()])


def test_mask_cosine_and_hamming_match_the_concatenated_definition():
    a, b = _masks(0, 0.5), _masks(1, 0.3)
    x, y = _flat(a), _flat(b)
    assert mask_cosine(a, b) == pytest.approx(x @ y / np.linalg.norm(x) / np.linalg.norm(y), rel=1e-12)
    assert hamming_distance(a, b) == pytest.approx(np.mean(x != y), rel=1e-12)
    assert mask_cosine(a, a) == pytest.approx(1.0) and hamming_distance(a, a) == 0.0
    complement = {k: ~v for k, v in a.items()}
    assert mask_cosine(a, complement) == 0.0 and hamming_distance(a, complement) == 1.0
    as_float = {k: v.float() for k, v in b.items()}  # 0/1 float masks work too
    assert mask_cosine(a, as_float) == mask_cosine(a, b)
    reordered = dict(reversed(list(b.items())))
    assert hamming_distance(a, reordered) == hamming_distance(a, b)


def test_mask_errors():
    a = _masks(0, 0.5)
    with pytest.raises(ValueError, match=r"only in masks_a \['layer.1.weight'\]"):
        mask_cosine(a, {"layer.0.weight": a["layer.0.weight"]})
    with pytest.raises(ValueError, match="shape"):
        hamming_distance(a, {**a, "layer.1.weight": torch.ones(4, 4, dtype=torch.bool)})
    with pytest.raises(ValueError, match="0/1 values.*unpack_mask"):
        mask_cosine(a, {k: torch.full(v.shape, 3, dtype=torch.uint8) for k, v in a.items()})
    with pytest.raises(ValueError, match="keeps no entry"):
        mask_cosine(a, {k: torch.zeros_like(v) for k, v in a.items()})
    with pytest.raises(ValueError, match="empty"):
        hamming_distance({}, {})


def test_collapse_without_a_majority_rate_uses_the_prediction_share_alone():
    from robustprune.eval.analysis import CurvePoint, flag_collapsed

    points = [CurvePoint(0.0, 20.0, {0: 0.5, 1: 0.5}), CurvePoint(0.5, 55.0, {0: 0.95, 1: 0.05})]
    assert flag_collapsed(points, None) == [False, True]  # 20 % accuracy alone is no collapse here
    assert flag_collapsed(points, 50.0) == [True, True]


def test_paired_essential_sparsity_separates_noise_from_drops():
    import numpy as np

    from robustprune.eval.analysis import essential_sparsity, essential_sparsity_paired

    n = 872
    dense = np.arange(n) % 5 != 0  # 80 % correct
    def flipped(lost, gained=0):  # `lost` correct answers become wrong, `gained` wrong ones right
        pruned = dense.copy()
        pruned[np.flatnonzero(dense)[:lost]] = False
        pruned[np.flatnonzero(~dense)[:gained]] = True
        return pruned

    sparsities = [0.1, 0.3, 0.5, 0.7]
    # net drops 0, 1.8 (40 lost, 24 gained: 64 discordant pairs), 6.9 and 22.9 points
    points = [flipped(0), flipped(40, 24), flipped(60), flipped(200)]
    fixed = essential_sparsity(sparsities, [100 * p.mean() for p in points], 100 * dense.mean(), 1.0)
    result = essential_sparsity_paired(sparsities, points, dense, epsilon=1.0, resamples=2000, seed=0)
    assert fixed == 0.1  # 1.8 points > 1: the fixed rule stops, though 16 of 872 examples is within noise
    assert result.es == 0.3  # 1.8 is not significantly above 1; 6.9 is
    assert result.drops[1] == pytest.approx(100 * 16 / n)
    assert result.drop_lower[1] < 1.0 < result.drop_lower[2]
    assert result.es_interval[0] <= fixed <= result.es_interval[1]
    with pytest.raises(ValueError, match="one correctness value per dense example"):
        essential_sparsity_paired(sparsities, [p[:10] for p in points], dense)
