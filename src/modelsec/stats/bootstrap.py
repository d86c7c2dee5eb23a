"""Confidence intervals for a mean by the percentile bootstrap (Efron 1979; Efron and Tibshirani 1993, ch. 13).

The mean return of a policy over N seeded episodes has no convenient closed-form interval: returns are bounded,
skewed and often piled up at a time limit. The percentile bootstrap makes no distributional assumption: resample
the N values with replacement ``resamples`` times, take each resample's mean, and report the ``(1 - level) / 2`` and
``(1 + level) / 2`` quantiles of those means. Its coverage is close to nominal for a few dozen values or more (it
is somewhat narrow for very small N). The resampling is seeded, so the same values and seed give the same interval.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from modelsec.core.errors import DataError
from modelsec.core.seeding import derived_seed
from modelsec.stats.intervals import Interval

BOOTSTRAP_METHOD = "bootstrap-percentile"

_CHUNK = 1 << 22  # resampled values drawn at a time (bounds the memory of large inputs)


def mean_with_ci(
    values: Sequence[float] | np.ndarray,
    *,
    seed: int,
    level: float = 0.95,
    resamples: int = 2000,
) -> tuple[float, Interval]:
    """The mean of ``values`` and its percentile-bootstrap confidence interval at ``level``.

    A single value, or values that are all equal, give a zero-width interval at that value.

    >>> mean, ci = mean_with_ci([1.0, 2.0, 3.0, 4.0], seed=0)
    >>> mean, ci.low <= mean <= ci.high, ci.method
    (2.5, True, 'bootstrap-percentile')
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise DataError("the mean of no values has no confidence interval")
    if not np.isfinite(x).all():
        raise DataError("values contain NaN or Inf")
    if not 0.0 < level < 1.0:
        raise DataError(f"the confidence level must lie in (0, 1), got {level}")
    if resamples < 1:
        raise DataError(f"resamples must be >= 1, got {resamples}")
    mean = float(x.mean())
    if np.all(x == x[0]):
        return float(x[0]), Interval(float(x[0]), float(x[0]), level, BOOTSTRAP_METHOD)
    rng = np.random.default_rng(derived_seed(seed, "bootstrap"))
    n = x.size
    rows = max(1, _CHUNK // n)
    means = np.empty(resamples)
    for start in range(0, resamples, rows):
        stop = min(resamples, start + rows)
        means[start:stop] = x[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return mean, Interval(float(low), float(high), level, BOOTSTRAP_METHOD)
