"""Analysis of sparsity curves and masks: essential sparsity, ES_robust, paired tests, rank correlation,
mask overlap.

Essential sparsity (ES) is the largest sparsity whose metric stays within ``epsilon`` points of the
dense model, with every lower sparsity of the curve also within it. "Within" means at most
``epsilon`` below dense: a pruned model that scores higher than dense does not end the plateau.
Metrics are in percent (accuracy 91.3, not 0.913), so the default ``epsilon=1.0`` is one point.

ES_robust (Shin, Jaiswal, Liu, Wang, "Unveiling the Intertwined Relationship Between Essential Sparsity
and Robustness in Large Pre-trained Models", TMLR: accuracy on AdvGLUE++ there) is the same on a robust
metric (accuracy on a fixed adversarial set, under a shift, under attack), with a trap:
adversarial sets are built so that the dense model scores below chance on them, so as a pruned model
collapses toward predicting one class its robust accuracy *rises* and would look robust.
:func:`flag_collapsed` marks such points (clean accuracy near the majority-class rate, or one class
taking almost all predictions) and :func:`es_robust` reads the curve over the other points only.

Curves are given as parallel sequences; points are sorted by sparsity here (the input order does not
matter), and a repeated sparsity is an error.

Tests. Every point is evaluated on the same examples as the dense model, so accuracy differences are
tested pairwise with the exact McNemar test (:func:`mcnemar_exact`: a binomial test on the discordant
pairs); a sweep makes many such tests, so their p-values are adjusted with Holm's step-down procedure
(:func:`holm`) over the tests of one metric. The paired bootstrap (:func:`essential_sparsity_paired`)
is kept for what has no exact test: ES itself and its interval. :func:`spearman_test` gives a rank
correlation with a permutation p-value.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

import torch


@dataclass
class CurvePoint:
    """One point of a sparsity curve.

    Attributes:
        sparsity: fraction of weights removed, in [0, 1].
        metric: the clean metric in percent (e.g. accuracy).
        prediction_balance: share of predictions per class id (fractions summing to 1), if measured.
        collapsed: whether the model has collapsed at this point (see :func:`flag_collapsed`).
    """

    sparsity: float
    metric: float
    prediction_balance: dict[int, float] | None = None
    collapsed: bool = False


def _floats(values: Sequence[float], name: str) -> list[float]:
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence of numbers") from None
    bad = [v for v in out if not math.isfinite(v)]
    if bad:
        raise ValueError(f"{name} contains non-finite values {bad[:3]}")
    return out


def _curve(sparsities: Sequence[float], metric: Sequence[float],
           metric_name: str) -> list[tuple[float, float, int]]:
    """(sparsity, metric, original index) sorted by sparsity, validated."""
    s = _floats(sparsities, "sparsities")
    m = _floats(metric, metric_name)
    if len(s) != len(m):
        raise ValueError(f"sparsities has {len(s)} points but {metric_name} has {len(m)}")
    if not s:
        raise ValueError("empty curve: pass at least one (sparsity, metric) point")
    outside = [v for v in s if not 0.0 <= v <= 1.0]
    if outside:
        raise ValueError(f"sparsities must be fractions in [0, 1], got {outside[:3]}")
    points = sorted(zip(s, m, range(len(s))))
    repeated = sorted({a[0] for a, b in pairwise(points) if a[0] == b[0]})
    if repeated:
        raise ValueError(f"sparsities {repeated} appear more than once; average the runs first")
    return points


def _check_epsilon(epsilon: float) -> float:
    if not isinstance(epsilon, (int, float)) or not math.isfinite(epsilon) or epsilon < 0:
        raise ValueError(f"epsilon must be a finite number >= 0 (metric points), got {epsilon!r}")
    return float(epsilon)


def _warn_if_fractions(values: Sequence[float], dense: float, epsilon: float, name: str) -> None:
    if epsilon >= 1.0 and dense <= 1.0 and all(abs(v) <= 1.0 for v in values) and dense > 0:
        warnings.warn(f"{name} and its dense value are all <= 1: metrics are expected in percent "
                      f"(epsilon={epsilon} points would accept everything). Multiply by 100.", stacklevel=3)


def essential_sparsity(sparsities: Sequence[float], metric: Sequence[float], dense_metric: float,
                       epsilon: float = 1.0) -> float:
    """The largest sparsity whose metric, and that of every lower sparsity, is >= dense - epsilon.

    Args:
        sparsities: the curve's sparsities (fractions, any order, no repeats).
        metric: the metric at each sparsity, in percent.
        dense_metric: the dense model's metric, in percent.
        epsilon: allowed drop in points (default 1).

    Returns:
        The essential sparsity, or 0.0 when already the lowest sparsity drops more than ``epsilon``.
    """
    epsilon = _check_epsilon(epsilon)
    points = _curve(sparsities, metric, "metric")
    (dense,) = _floats([dense_metric], "dense_metric")
    _warn_if_fractions([m for _, m, _ in points], dense, epsilon, "metric")
    best = 0.0
    for sparsity, value, _ in points:
        if dense - value > epsilon:
            break
        best = sparsity
    return best


def flag_collapsed(points: Sequence[CurvePoint], majority_rate: float | None, tolerance: float = 2.0,
                   max_class_share: float = 0.9) -> list[bool]:
    """Which curve points have collapsed toward predicting one class.

    A point is collapsed when its ``metric`` is at most ``majority_rate + tolerance`` (no better than
    always answering the majority class, in percent), when one class takes at least ``max_class_share``
    of its predictions (``prediction_balance``), or when it is already marked ``collapsed``.

    Args:
        points: an accuracy curve on one evaluated set, with prediction balances where measured.
        majority_rate: accuracy of always predicting that set's majority class, in percent; None for a
            set whose accuracy says nothing about collapse (an adversarial set, where even the dense
            model scores below chance): then only the prediction balance counts.
        tolerance: margin in points above the majority rate still counted as collapsed.
        max_class_share: prediction share (fraction) of one class that counts as collapse.

    Returns:
        One flag per point, in the order given.
    """
    majority = None
    if majority_rate is not None:
        (majority,) = _floats([majority_rate], "majority_rate")
        if not 0.0 <= majority <= 100.0:
            raise ValueError(f"majority_rate must be a percentage in [0, 100], got {majority_rate}")
    if not 0.0 <= tolerance <= 100.0:
        raise ValueError(f"tolerance must be in [0, 100] points, got {tolerance}")
    if not 0.0 < max_class_share <= 1.0:
        raise ValueError(f"max_class_share must be a fraction in (0, 1], got {max_class_share}")
    flags = []
    for i, point in enumerate(points):
        if not isinstance(point, CurvePoint):
            raise TypeError(f"points[{i}] must be a CurvePoint, got {type(point).__name__}")
        collapsed = point.collapsed or (majority is not None and point.metric <= majority + tolerance)
        if point.prediction_balance:
            shares = _floats(list(point.prediction_balance.values()), f"points[{i}].prediction_balance")
            if any(v < 0 for v in shares) or abs(sum(shares) - 1.0) > 1e-3:
                raise ValueError(f"points[{i}].prediction_balance must hold fractions summing to 1, got "
                                 f"{point.prediction_balance}")
            collapsed = collapsed or max(shares) >= max_class_share
        flags.append(collapsed)
    return flags


def es_robust(sparsities: Sequence[float], robust_metric: Sequence[float], dense_robust: float,
              collapsed: Sequence[bool], epsilon: float = 1.0) -> float:
    """Essential sparsity of a robust metric over the points that have not collapsed.

    Collapsed points (``collapsed[i]`` True, e.g. from :func:`flag_collapsed`) are dropped before
    :func:`essential_sparsity` is read off the remaining curve, so a model that gains robust accuracy
    only by predicting one class does not extend ES_robust. Returns 0.0 when every point collapsed.
    """
    epsilon = _check_epsilon(epsilon)
    flags = [bool(flag) for flag in collapsed]
    if len(flags) != len(sparsities):
        raise ValueError(f"sparsities has {len(sparsities)} points but collapsed has {len(flags)}")
    _curve(sparsities, robust_metric, "robust_metric")  # validates the whole curve
    kept = [i for i, flag in enumerate(flags) if not flag]
    if not kept:
        return 0.0
    return essential_sparsity([sparsities[i] for i in kept], [robust_metric[i] for i in kept], dense_robust,
                              epsilon)


@dataclass(frozen=True)
class PairedEssentialSparsity:
    """Essential sparsity decided by paired tests against the dense model (see
    :func:`essential_sparsity_paired`).

    Attributes:
        es: the largest sparsity at which, and below which, the drop is not significantly larger than
            ``epsilon`` at level ``alpha``.
        es_interval: the (2.5 %, 97.5 %) percentiles of the fixed-``epsilon`` ES over bootstrap resamples of
            the examples: how much ES itself moves with the evaluation set.
        drops: per point (in the order given), the observed drop ``dense - pruned`` in points.
        drop_lower: per point, the one-sided lower ``1 - alpha`` bootstrap bound of the drop: the drop is
            significantly larger than ``epsilon`` where this bound exceeds ``epsilon``.
        drop_upper: per point, the one-sided upper bound: below 0, the bootstrap finds the point *higher*
            than the dense model; with few discordant pairs it is liberal (n=100, 6 vs 1 discordant: the
            bound is below 0 while the exact one-sided p is 0.0625), so test a gain with :func:`mcnemar_exact`.
        es_resampled: the fixed-rule ES on each bootstrap resample. Calls with the same ``seed``,
            ``resamples`` and number of examples draw the same resamples, so two methods' lists pair up.
    """

    es: float
    es_interval: tuple[float, float]
    drops: list[float]
    drop_lower: list[float]
    drop_upper: list[float]
    es_resampled: list[float]


def essential_sparsity_paired(sparsities: Sequence[float], correct: Sequence[Sequence[bool]],
                              dense_correct: Sequence[bool], epsilon: float = 1.0, alpha: float = 0.05,
                              resamples: int = 2000, seed: int = 0) -> PairedEssentialSparsity:
    """Essential sparsity with the noise of a finite evaluation set taken into account.

    Every point is evaluated on the same examples as the dense model, so the drop ``dense - pruned``
    (in points) is tested pairwise: a paired bootstrap resamples the examples (the same indices for the
    dense model and every point) ``resamples`` times, and a point's drop is *significantly larger than
    epsilon* when the one-sided ``alpha`` quantile of its resampled drops exceeds ``epsilon``. ES is the
    largest sparsity at which, and below which, no drop is. The same resamples give the interval of the
    fixed-rule ES (:func:`essential_sparsity`) itself.

    Args:
        sparsities: the curve's sparsities (no repeats).
        correct: per point, whether each example was answered correctly (same examples, same order as
            ``dense_correct``; for several seeds, the seeds' vectors concatenated in the same order).
        dense_correct: the dense model's per-example correctness.
        epsilon: tolerated drop in points; alpha: the test's level; resamples, seed: the bootstrap.
    """
    import numpy as np

    epsilon = _check_epsilon(epsilon)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 100:
        raise ValueError(f"resamples must be an int >= 100, got {resamples!r}")
    dense = np.asarray(dense_correct, dtype=bool)
    points = np.asarray([np.asarray(c, dtype=bool) for c in correct])
    if dense.ndim != 1 or dense.size == 0 or points.ndim != 2 or points.shape[1] != dense.size:
        raise ValueError(f"every point needs one correctness value per dense example ({dense.size}), got "
                         f"shape {points.shape}")
    order = [i for _, _, i in _curve(sparsities, [0.0] * len(sparsities), "correct")]
    rng = np.random.default_rng(seed)
    n = dense.size
    index = rng.integers(0, n, size=(resamples, n))
    dense_acc = 100.0 * dense[index].mean(axis=1)  # [resamples]
    drops = 100.0 * (dense.mean() - points.mean(axis=1))
    resampled = dense_acc[:, None] - 100.0 * points[:, index].mean(axis=2).T  # [resamples, points]
    lower = np.quantile(resampled, alpha, axis=0)
    upper = np.quantile(resampled, 1 - alpha, axis=0)
    es = 0.0
    for i in order:
        if lower[i] > epsilon:
            break
        es = float(sparsities[i])
    fixed = []
    for b in range(resamples):
        value = 0.0
        for i in order:
            if resampled[b, i] > epsilon:
                break
            value = float(sparsities[i])
        fixed.append(value)
    low, high = np.quantile(np.asarray(fixed), [0.025, 0.975])
    return PairedEssentialSparsity(es, (float(low), float(high)), [float(d) for d in drops],
                                   [float(v) for v in lower], [float(v) for v in upper], fixed)


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation of two equally long series (``scipy.stats.spearmanr``).

    Returns NaN when either series is constant (the correlation is undefined).

    Raises:
        ValueError: fewer than 2 points, different lengths, or NaN / Inf values.
    """
    from scipy.stats import spearmanr

    x, y = _floats(a, "a"), _floats(b, "b")
    if len(x) != len(y):
        raise ValueError(f"a has {len(x)} values but b has {len(y)}")
    if len(x) < 2:
        raise ValueError(f"Spearman correlation needs at least 2 points, got {len(x)}")
    if len(set(x)) == 1 or len(set(y)) == 1:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def spearman_test(a: Sequence[float], b: Sequence[float], resamples: int = 9999,
                  seed: int = 0) -> tuple[float, float]:
    """Spearman's rho with a two-sided permutation p-value (``scipy.stats.permutation_test``, pairings).

    The null distribution comes from re-pairing ``a`` with permutations of ``b``: exact (every one of the
    ``n!`` orders) when ``n! <= resamples``, else ``resamples`` random orders drawn from ``seed``. The
    p-value is scipy's two-sided one, ``2 * min(P(rho* >= rho), P(rho* <= rho))`` capped at 1. A curve of
    four points cannot reach 5 %: its smallest p is 2/24.

    Returns:
        ``(rho, p)``; both NaN when either series is constant.
    """
    import numpy as np
    from scipy.stats import permutation_test, rankdata

    rho = spearman(a, b)
    if math.isnan(rho):
        return math.nan, math.nan
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"resamples must be a positive int, got {resamples!r}")
    x = rankdata(_floats(a, "a"))
    x = (x - x.mean()) / np.linalg.norm(x - x.mean())

    def rank_pearson(y: np.ndarray, axis: int = -1) -> np.ndarray:  # Spearman = Pearson of the ranks
        y = y - y.mean(axis=axis, keepdims=True)
        return (y * x).sum(axis=axis) / np.linalg.norm(y, axis=axis)

    result = permutation_test((rankdata(_floats(b, "b")),), rank_pearson, permutation_type="pairings",
                              vectorized=True, n_resamples=resamples, alternative="two-sided",
                              random_state=np.random.default_rng(seed))
    return rho, float(result.pvalue)


@dataclass(frozen=True)
class McNemarResult:
    """The exact McNemar test of one point against the dense model on the same examples.

    Attributes:
        lost: examples the dense model answers correctly and the point does not (``b``).
        gained: examples the point answers correctly and the dense model does not (``c``).
        pvalue: ``scipy.stats.binomtest(gained, lost + gained, 0.5, alternative).pvalue``; 1.0 without
            discordant pairs.
        alternative: ``"greater"`` (H1: the point scores higher than dense), ``"less"`` (lower) or
            ``"two-sided"``.
    """

    lost: int
    gained: int
    pvalue: float
    alternative: str


def mcnemar_exact(dense_correct: Sequence[bool], correct: Sequence[bool],
                  alternative: str = "two-sided") -> McNemarResult:
    """Exact McNemar test of a paired accuracy difference (point vs dense model, same examples, same order).

    Only the discordant pairs carry information: of the ``b + c`` examples on which the two disagree,
    under H0 (equal accuracy) the point is the one right on ``c`` ~ Binomial(b + c, 1/2). The p-value is
    the exact binomial one (``scipy.stats.binomtest``), one-sided when the claim is one-sided: with
    ``alternative="greater"`` it is ``P(X >= c)`` (the claim "the point scores higher"), with ``"less"``
    ``P(X <= c)`` ("it scores lower"). Example: 6 gained, 1 lost gives one-sided p = 8/128 = 0.0625,
    not significant at 5 %, whatever the number of examples.
    """
    import numpy as np

    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative must be 'two-sided', 'greater' or 'less', got {alternative!r}")
    dense = np.asarray(dense_correct, dtype=bool)
    point = np.asarray(correct, dtype=bool)
    if dense.ndim != 1 or dense.shape != point.shape:
        raise ValueError(f"correct needs one value per dense example ({dense.size}), got shape {point.shape}")
    lost, gained = int((dense & ~point).sum()), int((point & ~dense).sum())
    if lost + gained == 0:
        return McNemarResult(0, 0, 1.0, alternative)
    from scipy.stats import binomtest

    return McNemarResult(lost, gained, float(binomtest(gained, lost + gained, 0.5, alternative=alternative).pvalue),
                         alternative)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given.

    With the ``m`` p-values sorted ascending, ``p_(1) <= ... <= p_(m)``, the adjusted value of the i-th is
    ``max over j <= i of min(1, (m - j + 1) * p_(j))``. Rejecting every hypothesis whose adjusted p is
    <= alpha keeps the chance of any false rejection among the ``m`` at most alpha, whatever their
    dependence (Holm 1979).
    """
    values = _floats(pvalues, "pvalues")
    if any(not 0.0 <= p <= 1.0 for p in values):
        raise ValueError(f"p-values must lie in [0, 1], got {values}")
    m = len(values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda k: values[k])):
        running = max(running, min(1.0, (m - rank) * values[i]))
        adjusted[i] = running
    return adjusted


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of an accuracy measured as ``correct`` of ``n`` examples, in percent
    (``scipy.stats.binomtest(...).proportion_ci(method="wilson")``). Unlike the normal approximation it
    stays inside [0, 100] and is sensible at 0 or ``n`` correct.

    Raises:
        ValueError: ``n < 1``, ``correct`` outside ``[0, n]``, or ``confidence`` outside (0, 1).
    """
    from scipy.stats import binomtest

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if isinstance(correct, bool) or not isinstance(correct, int) or not 0 <= correct <= n:
        raise ValueError(f"correct must be an int in [0, {n}], got {correct!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    interval = binomtest(correct, n).proportion_ci(confidence_level=confidence, method="wilson")
    return 100.0 * float(interval.low), 100.0 * float(interval.high)


def _mask_pairs(masks_a: Mapping[str, torch.Tensor], masks_b: Mapping[str, torch.Tensor]):
    if not isinstance(masks_a, Mapping) or not isinstance(masks_b, Mapping):
        raise TypeError("masks_a and masks_b must be mappings of name -> mask tensor")
    only_a, only_b = sorted(set(masks_a) - set(masks_b)), sorted(set(masks_b) - set(masks_a))
    if only_a or only_b:
        raise ValueError(f"masks name different tensors: only in masks_a {only_a[:5]}, "
                         f"only in masks_b {only_b[:5]}")
    if not masks_a:
        raise ValueError("masks_a and masks_b are empty")
    for name in masks_a:
        a, b = masks_a[name], masks_b[name]
        if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
            raise TypeError(f"mask {name!r} must be a tensor in both mappings")
        if a.shape != b.shape:
            raise ValueError(f"mask {name!r} has shape {tuple(a.shape)} in masks_a but {tuple(b.shape)} "
                             "in masks_b")
        yield name, _binary(a, name, "masks_a"), _binary(b, name, "masks_b")


def _binary(mask: torch.Tensor, name: str, which: str) -> torch.Tensor:
    if mask.dtype == torch.bool:
        return mask
    if not ((mask == 0) | (mask == 1)).all():
        packed = mask.dtype == torch.uint8
        hint = " (bit-packed masks: unpack them with robustprune.ops.unpack_mask first)" if packed else ""
        raise ValueError(f"{which}[{name!r}] must hold 0/1 values{hint}")
    return mask != 0


def mask_cosine(masks_a: Mapping[str, torch.Tensor], masks_b: Mapping[str, torch.Tensor]) -> float:
    """Cosine similarity of two sets of 0/1 keep-masks, as if each set were one concatenated vector.

    Computed tensor by tensor (counts of kept and jointly kept entries), never concatenating. For 0/1
    vectors this is ``|A and B| / sqrt(|A| |B|)``.

    Raises:
        ValueError: different names or shapes, non-binary values, or a set with no kept entry.
    """
    both = kept_a = kept_b = 0
    for _, a, b in _mask_pairs(masks_a, masks_b):
        both += int(torch.count_nonzero(a & b))
        kept_a += int(torch.count_nonzero(a))
        kept_b += int(torch.count_nonzero(b))
    if kept_a == 0 or kept_b == 0:
        empty = "masks_a" if kept_a == 0 else "masks_b"
        raise ValueError(f"cosine is undefined: {empty} keeps no entry")
    return both / math.sqrt(kept_a * kept_b)


def hamming_distance(masks_a: Mapping[str, torch.Tensor], masks_b: Mapping[str, torch.Tensor]) -> float:
    """Normalised Hamming distance: the fraction of mask entries that differ, over all tensors."""
    differ = total = 0
    for _, a, b in _mask_pairs(masks_a, masks_b):
        differ += int(torch.count_nonzero(a != b))
        total += a.numel()
    if total == 0:
        raise ValueError("the masks hold no entries")
    return differ / total


__all__ = ["CurvePoint", "McNemarResult", "PairedEssentialSparsity", "es_robust", "essential_sparsity",
           "essential_sparsity_paired", "flag_collapsed", "hamming_distance", "holm", "mask_cosine", "mcnemar_exact",
           "spearman", "spearman_test", "wilson_interval"]
