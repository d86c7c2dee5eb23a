"""Metrics with confidence intervals: exact binomial intervals for rates, ROC summaries for membership inference.

Conventions: members are the positive class; a higher score means "more likely a member". TPR at a target FPR is
conservative: the largest TPR among ROC points whose FPR does not exceed the target.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

from modelsec.results import Interval

FPR_TARGETS = (0.001, 0.01)


def clopper_pearson(successes: int, trials: int, level: float = 0.95) -> Interval:
    """Exact (Clopper-Pearson 1934) interval for a binomial proportion.

    >>> ci = clopper_pearson(0, 10)
    >>> (ci.low, round(ci.high, 4))
    (0.0, 0.3085)
    """
    if trials <= 0:
        return Interval(0.0, 1.0, level, "clopper-pearson")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes={successes} outside [0, {trials}]")
    alpha = 1.0 - level
    low = 0.0 if successes == 0 else float(stats.beta.ppf(alpha / 2, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(stats.beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return Interval(low, high, level, "clopper-pearson")


def rate_with_ci(flags: np.ndarray, level: float = 0.95) -> tuple[float, Interval]:
    """The mean of a boolean array and its exact interval."""
    f = np.asarray(flags, dtype=bool)
    k, n = int(f.sum()), int(f.size)
    return (k / n if n else float("nan")), clopper_pearson(k, n, level)


def _check_scores(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = np.asarray(member_scores, dtype=np.float64)
    n = np.asarray(nonmember_scores, dtype=np.float64)
    if m.size == 0 or n.size == 0:
        raise ValueError("membership metrics need at least one member and one non-member score")
    if not (np.isfinite(m).all() and np.isfinite(n).all()):
        raise ValueError("membership scores must be finite")
    return m, n


def roc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve ``(fpr, tpr, thresholds)``; members positive."""
    m, n = _check_scores(member_scores, nonmember_scores)
    labels = np.concatenate([np.ones(m.size), np.zeros(n.size)])
    fpr, tpr, thr = roc_curve(labels, np.concatenate([m, n]), drop_intermediate=False)
    return fpr, tpr, thr


def auc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half)."""
    m, n = _check_scores(member_scores, nonmember_scores)
    labels = np.concatenate([np.ones(m.size), np.zeros(n.size)])
    return float(roc_auc_score(labels, np.concatenate([m, n])))


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """The largest TPR whose FPR does not exceed ``target`` (0 when no such point but the origin)."""
    ok = fpr <= target + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def advantage(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Membership advantage ``max(TPR - FPR)`` over thresholds (Yeom et al. 2018)."""
    return float(np.max(tpr - fpr))


def auc_bootstrap_ci(
    member_scores: np.ndarray,
    nonmember_scores: np.ndarray,
    *,
    rng: np.random.Generator,
    resamples: int = 200,
    level: float = 0.95,
) -> Interval:
    """Percentile bootstrap interval of the AUC, resampling members and non-members separately."""
    m, n = _check_scores(member_scores, nonmember_scores)
    values = np.empty(resamples)
    for i in range(resamples):
        mb = m[rng.integers(0, m.size, m.size)]
        nb = n[rng.integers(0, n.size, n.size)]
        values[i] = _auc_fast(mb, nb)
    alpha = 1.0 - level
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return Interval(float(low), float(high), level, "bootstrap-percentile")


def _auc_fast(m: np.ndarray, n: np.ndarray) -> float:
    """Mann-Whitney AUC through ranks (ties averaged), O((|m|+|n|) log)."""
    ranks = stats.rankdata(np.concatenate([m, n]))
    r_m = ranks[: m.size].sum()
    return float((r_m - m.size * (m.size + 1) / 2) / (m.size * n.size))


def tpr_ci_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float, n_members: int, level: float = 0.95) -> Interval:
    """Exact interval of the TPR at the threshold chosen for ``target`` (the count of members above it)."""
    t = tpr_at_fpr(fpr, tpr, target)
    return clopper_pearson(round(t * n_members), n_members, level)


def downsample_roc(fpr: np.ndarray, tpr: np.ndarray, points: int = 300) -> tuple[list[float], list[float]]:
    """A log-spaced subset of ROC points for plotting on log axes (keeps the ends)."""
    if fpr.size <= points:
        return fpr.tolist(), tpr.tolist()
    positive = fpr[fpr > 0]
    lo = positive.min() if positive.size else 1e-6
    grid = np.unique(np.concatenate([[0.0], np.geomspace(lo, 1.0, points - 1)]))
    idx = np.searchsorted(fpr, grid, side="right") - 1
    idx = np.unique(np.clip(idx, 0, fpr.size - 1))
    return fpr[idx].tolist(), tpr[idx].tolist()
