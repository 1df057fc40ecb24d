"""95 % intervals whose unit is the independent item, not the sample.

Several crops or flips of one photo are one photo: their answers rise and fall together,
and an interval that counts them as independent samples is too narrow (60 views of 5
photos claimed [73.9–91.9] % and gave 65 % on the next photos). Every figure here takes a
`groups` array (one id per sample; each sample its own group when absent) and rests on
the groups:

- proportions and ratios (top-1 agreement, detection F1 = 2TP / (2TP + FP + FN)): Wilson's
  score interval at the effective sample size the spread between groups allows (Kish's
  design effect, the ratio estimator's linearised variance), with Student's t for the
  number of groups instead of the normal quantile. All groups perfect says nothing about
  how they vary: then the groups themselves are the count (6 perfect photos: [61–100] %);
- means (cosines): Student's t over the group means;
- reported-only figures (mAP50): a percentile bootstrap that resamples whole groups.

benchmarks/interval_coverage.py measures how often these intervals hold the truth when
small sets are drawn from a larger pool of real photos.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["Z95", "wilson_interval", "ratio_interval", "mean_interval", "group_bootstrap", "group_index",
           "t_quantile", "groups_to_promise"]

Z95 = 1.959964  # the normal quantile of a two-sided 95 % interval
# Student's t, two-sided 95 %, by degrees of freedom 1..30 (beyond: the normal quantile).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)
BOOTSTRAP_RESAMPLES = 400
BOOTSTRAP_SEED = 0  # the same data gives the same interval


def t_quantile(dof: int) -> float:
    """Two-sided 95 % quantile of Student's t with `dof` degrees of freedom."""
    if dof < 1:
        return _T975[0]
    return _T975[dof - 1] if dof <= len(_T975) else Z95


def group_index(groups: Optional[np.ndarray], count: int) -> np.ndarray:
    """Dense group numbers 0..G-1 in order of first appearance (each sample its own without `groups`)."""
    if groups is None:
        return np.arange(count)
    _, first, inverse = np.unique(np.asarray(groups), return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # rank of each unique id by where it first appears
    return order[inverse.reshape(-1)]


def _wilson(p: float, n: float, z: float) -> tuple[float, float]:
    centre = (p + z ** 2 / (2 * n)) / (1 + z ** 2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z ** 2 / (4 * n ** 2)) / (1 + z ** 2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def wilson_interval(successes: int, total: int) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion of independent trials, in percent."""
    if total == 0:
        return 0.0, 100.0
    low, high = _wilson(successes / total, total, Z95)
    return low * 100, high * 100


def ratio_interval(successes: ArrayLike, trials: ArrayLike) -> tuple[float, float]:
    """95 % interval (0..1) of Σ successes / Σ trials when each entry is one independent
    group: Wilson at the design-effect sample size, Student's t for the group count."""
    s, t = np.asarray(successes, np.float64), np.asarray(trials, np.float64)
    keep = t > 0
    s, t = s[keep], t[keep]
    groups, total = len(t), float(t.sum())
    if groups == 0:
        return 0.0, 1.0
    p = float(s.sum()) / total
    z = t_quantile(groups - 1)
    if groups == 1:
        return _wilson(p, 1.0, z)  # one unit: nothing to say about the next one
    mean_trials = total / groups
    variance = float(np.sum((s - p * t) ** 2)) / (groups * (groups - 1) * mean_trials ** 2)
    if variance > 0 and 0 < p < 1:
        effective = min(total, max(1.0, p * (1 - p) / variance))
    else:  # no spread between groups (all perfect, or all alike): the groups are the count
        effective = float(groups) if p in (0.0, 1.0) else total
    return _wilson(p, effective, z)


def groups_to_promise(value: float, floor: float, limit: int = 10_000) -> Optional[int]:
    """How many independent groups a proportion of `value` (0..1) needs before the low end
    of its interval clears `floor`, each group counted as one trial (None: not below `limit`)."""
    if value <= floor:
        return None
    groups = 2
    while _wilson(value, groups, t_quantile(groups - 1))[0] < floor:
        groups += 1
        if groups > limit:
            return None
    return groups


def mean_interval(values: np.ndarray, groups: Optional[np.ndarray] = None, low: float = -1.0,
                  high: float = 1.0) -> tuple[float, float]:
    """95 % interval of the mean of per-sample `values` (clipped to [low, high]): Student's t
    over the means of the groups. One group: the value itself."""
    values = np.asarray(values, np.float64)
    index = group_index(groups, len(values))
    means = np.bincount(index, weights=values) / np.bincount(index)
    mean = float(values.mean())
    if len(means) < 2:
        return mean, mean
    half = t_quantile(len(means) - 1) * float(means.std(ddof=1)) / math.sqrt(len(means))
    return max(low, mean - half), min(high, mean + half)


def group_bootstrap(statistic: Callable[[np.ndarray], float], groups: Optional[np.ndarray], count: int
                    ) -> tuple[float, float]:
    """95 % percentile interval of `statistic(sample indices)` over whole groups resampled
    with replacement (reported-only figures: it is too narrow at a handful of groups)."""
    index = group_index(groups, count)
    members = [np.flatnonzero(index == g) for g in range(int(index.max()) + 1 if count else 0)]
    if len(members) < 2:
        value = statistic(np.arange(count))
        return value, value
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    values = [statistic(np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))]))
              for _ in range(BOOTSTRAP_RESAMPLES)]
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)
