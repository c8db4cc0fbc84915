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


# Boundaries and independent values: each test below pins a comparison or a constant that a one-character
# change would otherwise leave unnoticed.

def test_a_drop_of_exactly_epsilon_stays_within():
    # 90.5 - 89.5 is exactly 1.0 in binary floating point: "within epsilon" means a drop of at most epsilon
    assert essential_sparsity([0.1, 0.2, 0.3], [90.5, 89.5, 89.0], 90.5, epsilon=1.0) == 0.2
    assert essential_sparsity([0.1, 0.2], [90.5, 90.5], 90.5, epsilon=0.0) == 0.2  # no drop at all, epsilon 0


def test_collapse_thresholds_are_inclusive():
    # accuracy exactly majority + tolerance (50.5 + 2.0 = 52.5, exact) is "at most" the threshold: collapsed
    assert flag_collapsed([CurvePoint(0.5, 52.5), CurvePoint(0.6, 52.75)], majority_rate=50.5) == [True, False]
    # exactly max_class_share (0.9) of the predictions in one class: collapsed
    points = [CurvePoint(0.5, 80.0, {0: 0.9, 1: 0.1}), CurvePoint(0.6, 80.0, {0: 0.875, 1: 0.125})]
    assert flag_collapsed(points, majority_rate=None) == [True, False]


def _wilson_closed_form(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson (1927) score interval without continuity correction, in percent, written out."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = correct / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return 100 * (center - half), 100 * (center + half)


def test_wilson_interval_is_the_95_percent_wilson_score_interval():
    from robustprune.eval.analysis import wilson_interval

    # by hand, 8 of 10 at z = 1.959964: center (8 + z^2/2) / (10 + z^2) = 0.716744, half-width
    # z / (10 + z^2) * sqrt(8 * 2 / 10 + z^2 / 4) = 0.226575
    assert wilson_interval(8, 10) == pytest.approx((49.0169, 94.3319), abs=1e-3)
    for correct, n in [(8, 10), (0, 24), (24, 24), (160, 200), (3, 148), (700, 872)]:
        assert wilson_interval(correct, n) == pytest.approx(_wilson_closed_form(correct, n), abs=1e-9)
        assert wilson_interval(correct, n, 0.90) == pytest.approx(_wilson_closed_form(correct, n, 0.90), abs=1e-9)
    # not Clopper-Pearson: for 8 of 10 the exact interval is (44.39, 97.48) (beta quantiles)
    from scipy.stats import beta

    assert (100 * beta.ppf(0.025, 8, 3), 100 * beta.ppf(0.975, 9, 2)) == pytest.approx((44.39, 97.48), abs=0.01)
    assert wilson_interval(8, 10)[0] > 48.0


def _lost(n: int, lost: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense right everywhere; the point wrong on the first ``lost`` examples: the resampled drop is
    100 * Binomial(n, lost / n) / n, whose quantiles scipy gives exactly."""
    dense = np.ones(n, dtype=bool)
    point = dense.copy()
    point[:lost] = False
    return dense, point


def test_paired_es_is_not_significant_at_exactly_epsilon():
    from robustprune.eval.analysis import essential_sparsity_paired

    dense = np.arange(200) % 4 != 0
    # identical to dense: every resampled drop is exactly 0, so "larger than epsilon = 0" never holds
    result = essential_sparsity_paired([0.1, 0.2], [dense, dense], dense, epsilon=0.0, resamples=200)
    assert result.es == 0.2 and result.drop_lower == [0.0, 0.0] and result.es_interval == (0.2, 0.2)
    # the dense model right everywhere, the point nowhere: every resampled drop is exactly 100 points
    result = essential_sparsity_paired([0.1], [np.zeros(200, dtype=bool)], np.ones(200, dtype=bool), epsilon=100.0,
                                       resamples=200)
    assert result.es == 0.1 and result.drop_lower == [100.0]


def test_paired_drop_bounds_are_the_one_sided_alpha_quantiles():
    from scipy.stats import binom

    from robustprune.eval.analysis import essential_sparsity_paired

    n, lost = 1000, 500  # drop 50 points, bootstrap sd ~1.6 points
    dense, point = _lost(n, lost)
    result = essential_sparsity_paired([0.5], [point], dense, epsilon=1.0, alpha=0.05, resamples=4000, seed=0)

    def quantile(q):  # of the drop in points, from the binomial law of the resampled losses
        return 100 * binom.ppf(q, n, lost / n) / n

    assert quantile(0.05) == 47.4 and quantile(0.025) == 46.9  # what one-sided vs two-sided would give
    assert result.drop_lower[0] == pytest.approx(quantile(0.05), abs=0.15)
    assert result.drop_upper[0] == pytest.approx(quantile(0.95), abs=0.15)


def test_es_interval_is_the_2_5_to_97_5_percent_range():
    from scipy.stats import binom

    from robustprune.eval.analysis import essential_sparsity_paired

    # epsilons sit between attainable drops (multiples of 0.25 point), so no resample lands on them
    n, lost = 400, 8  # drop 2 points; ES falls to 0 on a resample that loses > 12 examples (> 3.1 points)
    share = binom.sf(12, n, lost / n)  # P(resampled drop > 3.1 points) = 0.062
    assert 0.04 < share < 0.075  # between the 2.5 % and the 10 % quantile, clear of both
    dense, point = _lost(n, lost)
    result = essential_sparsity_paired([0.5], [point], dense, epsilon=3.1, resamples=2000, seed=0)
    assert np.mean(np.asarray(result.es_resampled) == 0.0) == pytest.approx(share, abs=0.015)
    assert result.es == 0.5 and result.es_interval == (0.0, 0.5)  # a 10-90 % range would read (0.5, 0.5)
    # the upper end: 0.3 always holds (no loss); 0.6 (drop 3.5 points) only on resamples losing <= 8 examples
    far = _lost(n, 14)[1]
    share = binom.cdf(8, n, 14 / n)  # P(resampled drop <= 2.1 points) = 0.059
    assert 0.04 < share < 0.075
    result = essential_sparsity_paired([0.3, 0.6], [dense, far], dense, epsilon=2.1, resamples=2000, seed=0)
    assert np.mean(np.asarray(result.es_resampled) == 0.6) == pytest.approx(share, abs=0.015)
    assert result.es_interval == (0.3, 0.6)  # a 10-90 % range would read (0.3, 0.3)


def test_mcnemar_exact_against_binomtest_and_the_bootstrap_case():
    from scipy.stats import binomtest

    from robustprune.eval.analysis import essential_sparsity_paired, mcnemar_exact

    # n = 100, 6 gained vs 1 lost: P(X >= 6 | X ~ Bin(7, 1/2)) = (7 + 1) / 128 = 0.0625 by hand
    dense = np.arange(100) % 2 == 0
    point = dense.copy()
    point[np.flatnonzero(~dense)[:6]] = True
    point[np.flatnonzero(dense)[:1]] = False
    result = mcnemar_exact(dense, point, "greater")
    assert (result.lost, result.gained) == (1, 6)
    assert result.pvalue == pytest.approx(8 / 128, abs=1e-12) and result.pvalue > 0.05  # not significant
    assert result.pvalue == pytest.approx(binomtest(6, 7, 0.5, alternative="greater").pvalue, abs=1e-12)
    assert mcnemar_exact(dense, point).pvalue == pytest.approx(16 / 128, abs=1e-12)  # two-sided
    assert mcnemar_exact(dense, point, "less").pvalue == pytest.approx(127 / 128, abs=1e-12)
    # the paired bootstrap on the same pairs declares the +5 points a significant rise (its one-sided upper
    # bound of the drop is below 0): with 7 discordant pairs it is liberal
    bootstrap = essential_sparsity_paired([0.5], [point], dense, epsilon=1.0, resamples=2000, seed=0)
    assert bootstrap.drops == [pytest.approx(-5.0)] and bootstrap.drop_upper[0] < 0
    rng = np.random.default_rng(3)
    dense, point = rng.random(300) < 0.7, rng.random(300) < 0.6
    b, c = int(np.sum(dense & ~point)), int(np.sum(~dense & point))
    for alternative in ("two-sided", "greater", "less"):
        assert mcnemar_exact(dense, point, alternative).pvalue == pytest.approx(
            binomtest(c, b + c, 0.5, alternative=alternative).pvalue, rel=1e-12)
    assert mcnemar_exact(dense, dense, "greater").pvalue == 1.0  # no discordant pair
    with pytest.raises(ValueError, match="alternative"):
        mcnemar_exact(dense, point, "larger")
    with pytest.raises(ValueError, match="one value per dense example"):
        mcnemar_exact(dense, point[:10])


def test_holm_on_a_hand_made_example():
    from robustprune.eval.analysis import holm

    # m = 4, sorted 0.005, 0.01, 0.03, 0.04: 4 * 0.005 = 0.02; 3 * 0.01 = 0.03; 2 * 0.03 = 0.06;
    # 1 * 0.04 = 0.04, raised to 0.06 (adjusted p-values never fall with the rank)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)
    # 0.04 was below 5 % alone; after correction two of four survive at 5 %
    assert [p <= 0.05 for p in holm([0.01, 0.04, 0.03, 0.005])] == [True, False, False, True]
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1
    assert holm([0.02]) == [0.02] and holm([]) == []
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.5, 1.5])


def _rho(x, y):  # Spearman without ties, by the textbook formula
    n = len(x)
    rx = {v: i for i, v in enumerate(sorted(x))}
    ry = {v: i for i, v in enumerate(sorted(y))}
    d2 = sum((rx[a] - ry[b]) ** 2 for a, b in zip(x, y))
    return 1 - 6 * d2 / (n * (n * n - 1))


def test_spearman_permutation_p_by_enumeration():
    import itertools

    from robustprune.eval.analysis import spearman_test

    assert spearman_test([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx((1.0, 2 / 24))  # 4 points: never < 5 %
    assert spearman_test([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]) == pytest.approx((-1.0, 2 / 120))
    x, y = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [2.0, 1.0, 4.0, 3.0, 6.0, 5.0]
    observed = _rho(x, y)  # 1 - 6 * 6 / 210
    assert observed == pytest.approx(1 - 36 / 210)
    rhos = [_rho(x, list(p)) for p in itertools.permutations(y)]
    expected = 2 * min(np.mean([r >= observed - 1e-12 for r in rhos]), np.mean([r <= observed + 1e-12 for r in rhos]))
    rho, p = spearman_test(x, y)
    assert rho == pytest.approx(observed) and p == pytest.approx(expected)
    assert p == pytest.approx(42 / 720)  # 21 of the 720 orders reach rho >= 0.829
    rho, p = spearman_test(list(range(10)), [0, 2, 1, 3, 5, 4, 6, 8, 7, 9], resamples=2000, seed=1)
    assert 0 < p < 0.01  # Monte Carlo beyond 7 points
    assert all(math.isnan(v) for v in spearman_test([1, 1, 1], [1, 2, 3]))
