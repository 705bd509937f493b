"""The statistics of human ratings: agreement between raters, paired differences between
systems, pairwise strengths, and whether an automatic metric ranks items as raters do.

- Krippendorff's alpha (ordinal by default) from the `krippendorff` package: any number of
  raters, missing ratings allowed.
- Weighted Cohen's kappa for two raters (linear or quadratic weights), written out here.
- A system's mean with a percentile bootstrap CI; the paired difference of two systems on the
  items both were rated on, with a paired bootstrap CI and the Wilcoxon signed-rank test.
- Bradley-Terry strengths from pairwise judgements (ties count half to each side), fitted by
  the minorisation-maximisation iteration (Hunter, 2004), normalised to a geometric mean of 1.
- Spearman and Kendall rank correlation between per-item human scores and a metric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import krippendorff
import numpy as np

from tunelab.core.deferred import stats
from tunelab.core.errors import TunelabError

Level = Literal["nominal", "ordinal", "interval", "ratio"]
"""Krippendorff's levels of measurement (how far apart two different values are)."""

def krippendorff_alpha(ratings: Mapping[str, Mapping[str, float]], level: Level = "ordinal",
                       domain: Sequence[float] | None = None) -> float:
    """Alpha over rater -> item -> value (items a rater skipped are missing); NaN when fewer
    than two raters share an item."""
    raters = sorted(ratings)
    items = sorted({item for values in ratings.values() for item in values})
    data = np.array([[ratings[r].get(i, np.nan) for i in items] for r in raters], dtype=float)
    pairable = (np.sum(~np.isnan(data), axis=0) >= 2).sum()
    if len(raters) < 2 or pairable == 0:
        return float("nan")
    if len(np.unique(data[~np.isnan(data)])) < 2:
        return 1.0  # everyone gave the same value: perfect agreement, no variance
    return float(krippendorff.alpha(reliability_data=data, level_of_measurement=level,
                                    value_domain=None if domain is None else list(domain)))


def weighted_kappa(a: Sequence[int], b: Sequence[int], categories: Sequence[int],
                   quadratic: bool = True) -> float:
    """Cohen's kappa of two raters on the same items, with linear or quadratic disagreement
    weights over the ordered `categories`."""
    if len(a) != len(b) or not a:
        raise TunelabError("weighted kappa: the two raters need ratings of the same items")
    index = {c: i for i, c in enumerate(categories)}
    k = len(categories)
    observed = np.zeros((k, k))
    for x, y in zip(a, b, strict=True):
        observed[index[x], index[y]] += 1
    observed /= observed.sum()
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    distance = np.abs(np.subtract.outer(np.arange(k), np.arange(k))).astype(float)
    w = distance ** 2 if quadratic else distance
    disagreement = (w * expected).sum()
    return 1.0 if disagreement == 0 else float(1 - (w * observed).sum() / disagreement)


def mean_ci(values: Sequence[float], resamples: int = 1000, seed: int = 0
            ) -> tuple[float, float, float]:
    """(mean, low, high): percentile bootstrap 95% CI over the values."""
    x = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (resamples, len(x)))].mean(axis=1)
    return float(x.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def bradley_terry(judgements: Sequence[tuple[str, str, int]], iterations: int = 500,
                  tolerance: float = 1e-10) -> dict[str, float]:
    """Strength per system from (first, second, preference) with -1 = first better, 0 = tie,
    1 = second better; P(i beats j) = s_i / (s_i + s_j)."""
    systems = sorted({s for first, second, _ in judgements for s in (first, second)})
    at = {s: i for i, s in enumerate(systems)}
    n = len(systems)
    wins = np.zeros((n, n))
    for first, second, preference in judgements:
        i, j = at[first], at[second]
        wins[i, j] += {-1: 1.0, 0: 0.5, 1: 0.0}[preference]
        wins[j, i] += {-1: 0.0, 0: 0.5, 1: 1.0}[preference]
    games = wins + wins.T
    strength = np.ones(n)
    for _ in range(iterations):
        denominator = np.array([sum(games[i, j] / (strength[i] + strength[j])
                                    for j in range(n) if j != i and games[i, j])
                                for i in range(n)])
        updated = np.where(denominator > 0, wins.sum(axis=1) / np.where(denominator > 0,
                                                                         denominator, 1), 0)
        updated = np.maximum(updated, 1e-12)
        updated /= np.exp(np.mean(np.log(updated)))
        if np.max(np.abs(updated - strength)) < tolerance:
            strength = updated
            break
        strength = updated
    return {s: float(strength[at[s]]) for s in systems}


def rank_correlations(human: Sequence[float], metric: Sequence[float]) -> tuple[float, float]:
    """(Spearman rho, Kendall tau-b) of per-item human scores and a metric; NaN when either
    side is constant."""
    if len(set(human)) < 2 or len(set(metric)) < 2:
        return float("nan"), float("nan")
    return (float(stats.spearmanr(human, metric).statistic),
            float(stats.kendalltau(human, metric).statistic))
