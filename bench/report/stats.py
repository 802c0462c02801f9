"""The statistics behind the report: bootstrap intervals, paired tests, Pareto fronts."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats


def mcnemar_exact(leader_only: int, other_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs (binomial test, p = 0.5)."""
    n = leader_only + other_only
    if n == 0:
        return 1.0
    return float(stats.binomtest(leader_only, n, 0.5).pvalue)


def bootstrap_mean(
    groups: Sequence[np.ndarray],
    samples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    outcomes: bool = False,
) -> tuple[float, float, float]:
    """Mean of per-item values pooled over ``groups`` (one array per training seed, e.g. 0/1
    outcomes or paired differences of the same test images), with a percentile bootstrap interval
    that resamples items *within* each group: seeds are not pooled as if independent, and the
    interval stays inside the values' range. With ``outcomes`` (0/1 values) an all-0 or all-1
    pool gets :func:`boundary_interval` instead of the bootstrap's zero width."""
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(g, dtype=float) for g in groups]
    pooled = np.concatenate(arrays)
    if outcomes and (edge := boundary_interval(pooled, np.ones_like(pooled), level)):
        return float(pooled.mean()), *edge
    tail = (1 - level) / 2
    low, high = np.quantile(resampled_means(arrays, rng, samples), [tail, 1 - tail])
    return float(pooled.mean()), float(low), float(high)


def boundary_interval(
    numerators: np.ndarray, denominators: np.ndarray, level: float = 0.95
) -> tuple[float, float] | None:
    """Where every item sits at a bound of its ratio (no image read right, or every one; every
    character wrong), resampling draws the same items again and the bootstrap interval has zero
    width, claiming a certainty that a finite test set cannot give. There, the Wilson interval of
    the pooled count (successes of trials, all items taken as independent) says how far from the
    bound the rate could still be; None elsewhere."""
    num, den = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)
    if not num.size or not (np.all(num == 0) or np.all(num == den)):
        return None
    ci = stats.binomtest(round(num.sum()), round(den.sum())).proportion_ci(level, "wilson")
    return float(ci.low), float(ci.high)


def resampled_means(arrays: list[np.ndarray], rng: np.random.Generator, samples: int) -> np.ndarray:
    """``samples`` bootstrap draws of the pooled mean, items resampled within each array."""
    sums = np.zeros(samples)
    for a in arrays:
        sums += a[rng.integers(0, len(a), size=(samples, len(a)))].sum(1)
    return sums / sum(len(a) for a in arrays)


def bootstrap_difference(
    first: Sequence[np.ndarray],
    second: Sequence[np.ndarray],
    samples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """Pooled mean of ``first`` minus that of ``second`` when their items are not paired (e.g.
    two splits' different test images), with a percentile interval from independent bootstraps
    of each side (items resampled within each group)."""
    rng = np.random.default_rng(seed)
    a, b = ([np.asarray(g, dtype=float) for g in side] for side in (first, second))
    draws = resampled_means(a, rng, samples) - resampled_means(b, rng, samples)
    tail = (1 - level) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return float(np.concatenate(a).mean() - np.concatenate(b).mean()), float(low), float(high)


def bootstrap_ratio(
    numerators: Sequence[np.ndarray],
    denominators: Sequence[np.ndarray] | None = None,
    samples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """The pooled ratio ``sum(numerator) / sum(denominator)`` over the items (test images) of all
    groups (one per training run: a seed, or a seed's fold), with a two-level percentile bootstrap
    interval: each resample draws the groups with replacement, then each drawn group's images
    with replacement (numerator and denominator together), and pools them again.

    Sequence accuracy is the ratio of correct images to images (no ``denominators``: ones), CER
    of edit distances to label lengths, character accuracy of right positions to positions. Runs
    on the same images (seeds) pool to the mean of their metrics; the folds of a cross-validation
    pool to the metric over every image. Every resampled value is a ratio of non-negative sums,
    so the interval stays inside the per-item ratios' range (an accuracy inside [0, 1], a CER
    inside [0, the worst image's CER]), unlike a t interval over few runs. It covers the spread
    between runs (seeds, and which images a fold tests) and the sampling of the test images.
    Where every item sits at a bound (0% or 100%), :func:`boundary_interval`.
    """
    nums = [np.asarray(g, dtype=float) for g in numerators]
    dens = (
        [np.ones_like(n) for n in nums]
        if denominators is None
        else [np.asarray(g, dtype=float) for g in denominators]
    )
    if not nums:
        return math.nan, math.nan, math.nan
    point = float(sum(n.sum() for n in nums) / sum(d.sum() for d in dens))
    if edge := boundary_interval(np.concatenate(nums), np.concatenate(dens), level):
        return point, *edge
    rng = np.random.default_rng(seed)
    num_sums = np.empty((samples, len(nums)))  # images resampled within each group
    den_sums = np.empty((samples, len(nums)))
    for j, (num, den) in enumerate(zip(nums, dens, strict=True)):
        idx = rng.integers(0, len(num), size=(samples, len(num)))
        num_sums[:, j], den_sums[:, j] = num[idx].sum(1), den[idx].sum(1)
    drawn = rng.integers(0, len(nums), size=(samples, len(nums)))  # groups resampled
    resampled = np.take_along_axis(num_sums, drawn, 1).sum(1) / np.take_along_axis(
        den_sums, drawn, 1
    ).sum(1)
    tail = (1 - level) / 2
    low, high = np.quantile(resampled, [tail, 1 - tail])
    return point, float(low), float(high)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    order = np.argsort(p_values)
    m = len(p_values)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted.tolist()


def pareto_front(cost: Sequence[float], value: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats (lower or equal cost and higher or equal value,
    one of them strictly), sorted by cost."""
    points = list(zip(cost, value, strict=True))
    front = [
        i
        for i, (c, v) in enumerate(points)
        if not any((c2 <= c and v2 >= v) and (c2 < c or v2 > v) for c2, v2 in points)
    ]
    return sorted(front, key=lambda i: points[i][0])


def first_epoch_reaching(values: Sequence[float], threshold: float) -> float:
    """1-based epoch at which ``values`` first reach ``threshold`` (NaN if never)."""
    for epoch, value in enumerate(values, start=1):
        if value >= threshold:
            return float(epoch)
    return math.nan


def first_time_reaching(values: Sequence[float], times: Sequence[float], threshold: float) -> float:
    """``times`` at the first of ``values`` reaching ``threshold`` (NaN if never or untimed)."""
    for value, time in zip(values, times, strict=True):
        if value >= threshold:
            return float(time)
    return math.nan
