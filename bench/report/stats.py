"""The statistics behind the report: confidence intervals, paired tests, Pareto fronts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class MeanCI:
    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def mean_ci(values: Sequence[float], level: float = 0.95) -> MeanCI:
    """Mean with a Student-t confidence interval over seeds (no interval for one value)."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if len(x) == 0:
        return MeanCI(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if len(x) == 1:
        return MeanCI(mean, math.nan, math.nan, 1)
    half = float(stats.t.ppf((1 + level) / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return MeanCI(mean, mean - half, mean + half, len(x))


def mcnemar_exact(leader_only: int, other_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs (binomial test, p = 0.5)."""
    n = leader_only + other_only
    if n == 0:
        return 1.0
    return float(stats.binomtest(leader_only, n, 0.5).pvalue)


def bootstrap_mean(
    groups: Sequence[np.ndarray], samples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """Mean of per-item values pooled over ``groups`` (one array per training seed, e.g. 0/1
    outcomes or paired differences of the same test images), with a percentile bootstrap interval
    that resamples items *within* each group: seeds are not pooled as if independent, and the
    interval stays inside the values' range."""
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(g, dtype=float) for g in groups]
    total = sum(len(a) for a in arrays)
    sums = np.zeros(samples)
    for a in arrays:
        sums += a[rng.integers(0, len(a), size=(samples, len(a)))].sum(1)
    tail = (1 - level) / 2
    low, high = np.quantile(sums / total, [tail, 1 - tail])
    return float(np.concatenate(arrays).mean()), float(low), float(high)


def paired_bootstrap_diff(
    a: np.ndarray, b: np.ndarray, samples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """Accuracy difference ``mean(a) - mean(b)`` of paired 0/1 outcomes, with a bootstrap
    interval over the paired items."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(samples, len(a)))
    diffs = a[idx].mean(1) - b[idx].mean(1)
    tail = (1 - level) / 2
    low, high = np.quantile(diffs, [tail, 1 - tail])
    return float(a.mean() - b.mean()), float(low), float(high)


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
