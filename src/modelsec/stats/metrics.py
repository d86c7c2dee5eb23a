"""Metrics with confidence intervals: exact binomial intervals for rates, ROC summaries for membership inference.

Conventions: members are the positive class; a higher score means "more likely a member". TPR at a target FPR is
conservative: the largest TPR among ROC points whose FPR does not exceed the target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from modelsec.stats.intervals import EpsilonEvidence, Interval

# The FPRs at which membership TPRs are reported (0.1%, 1%, 10%); the same numbers serve as FNR targets for the
# thresholds of the empirical epsilon bound.
FPR_TARGETS = (0.001, 0.01, 0.1)


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
    from scipy import stats  # imported when used: SciPy and scikit-learn take seconds to import

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
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(labels, np.concatenate([m, n]), drop_intermediate=False)
    return fpr, tpr, thr


def auc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half)."""
    m, n = _check_scores(member_scores, nonmember_scores)
    labels = np.concatenate([np.ones(m.size), np.zeros(n.size)])
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, np.concatenate([m, n])))


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """The largest TPR whose FPR does not exceed ``target`` (0 when no such point but the origin)."""
    ok = fpr <= target + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def advantage(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Membership advantage ``max(TPR - FPR)`` over thresholds (Yeom et al. 2018)."""
    return float(np.max(tpr - fpr))


def balanced_accuracy(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """The best balanced accuracy of a threshold: ``max((TPR + 1 - FPR) / 2)``, i.e. ``(1 + advantage) / 2``.

    A membership attack's accuracy when members and non-members are equally likely; 0.5 is a random guess.

    >>> balanced_accuracy(np.array([0.0, 0.25, 1.0]), np.array([0.0, 0.75, 1.0]))
    0.75
    """
    return float(np.max((np.asarray(tpr) + 1.0 - np.asarray(fpr)) / 2.0))


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
    from scipy import stats

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


# -- empirical epsilon lower bound -------------------------------------------------------------


@dataclass(frozen=True)
class EpsilonBound:
    """An empirical lower bound on the epsilon of (epsilon, 0)-DP and the threshold that gave it.

    ``evidence`` is ``None`` when ``value`` is 0: no threshold showed more than chance.
    """

    value: float
    evidence: EpsilonEvidence | None = None


def _count_above(sorted_scores: np.ndarray, threshold: float, *, inclusive: bool) -> int:
    """How many of ``sorted_scores`` (ascending) are ``> threshold`` (``>=`` when ``inclusive``)."""
    index = np.searchsorted(sorted_scores, threshold, side="left" if inclusive else "right")
    return int(sorted_scores.size - index)


@dataclass(frozen=True)
class EpsilonThreshold:
    """One threshold of the epsilon bound: ``members`` and ``nonmembers`` are how many of each it flags.

    ``rule`` "fpr": chosen on the non-member scores for an FPR ``target``; ``rule`` "fnr": chosen on the member
    scores for an FNR ``target``. ``rank`` is the count that the order statistic guarantees for the group that chose
    it: at most ``rank`` non-members flagged ("fpr"), at least ``rank`` members flagged ("fnr"). With continuous
    scores it equals the observed count; with ties the bound must use it, not the observed count (see
    :func:`epsilon_thresholds`).
    """

    rule: str
    target: float
    members: int
    nonmembers: int
    rank: int


def epsilon_thresholds(
    member_scores: np.ndarray, nonmember_scores: np.ndarray, targets: tuple[float, ...] = FPR_TARGETS
) -> list[EpsilonThreshold]:
    """The thresholds the epsilon bound is evaluated at: first one per FPR target, then one per FNR target.

    For an FPR target the threshold of :func:`tpr_at_fpr`: flag every score above ``v``, the
    ``(floor(target * n_n) + 1)``-th largest non-member score, so at most ``floor(target * n_n)`` non-members are
    flagged. For an FNR target the complementary one: flag every score at or above ``u``, the
    ``(floor(target * n_m) + 1)``-th smallest member score, so at most ``floor(target * n_m)`` members are missed.

    Each threshold is an order statistic of one group, so the intervals stay valid although the thresholds come
    from the data: the other group's count is a binomial independent of the threshold, and the true rate of the
    group that chose it is bounded by a Beta order-statistic law that is exactly a Clopper-Pearson bound of the
    count ``rank`` (for ties, stochastically: the probability integral transform of a discrete order statistic).
    With tied scores the observed count of that group can differ from ``rank`` in the attacker's favour; a bound
    computed from it would hold less often than the stated level.

    >>> [(t.rule, t.members, t.nonmembers, t.rank) for t in epsilon_thresholds(
    ...     np.array([4.0, 5.0, 5.0, 7.0]), np.array([0.0, 1.0, 2.0, 5.0]), (0.25,))]
    [('fpr', 4, 1, 1), ('fnr', 3, 1, 3)]
    """
    m, n = _check_scores(member_scores, nonmember_scores)
    m_asc, n_asc = np.sort(m), np.sort(n)
    out: list[EpsilonThreshold] = []
    for f in targets:
        k = min(math.floor(f * n.size + 1e-9), n.size)
        if k == n.size:
            out.append(EpsilonThreshold("fpr", f, m.size, n.size, n.size))
            continue
        v = float(n_asc[n.size - 1 - k])  # the (k + 1)-th largest non-member score
        flagged_m, flagged_n = _count_above(m_asc, v, inclusive=False), _count_above(n_asc, v, inclusive=False)
        out.append(EpsilonThreshold("fpr", f, flagged_m, flagged_n, k))
    for g in targets:
        j = min(math.floor(g * m.size + 1e-9), m.size)
        if j == m.size:
            out.append(EpsilonThreshold("fnr", g, 0, 0, 0))
            continue
        u = float(m_asc[j])  # the (j + 1)-th smallest member score
        flagged_m, flagged_n = _count_above(m_asc, u, inclusive=True), _count_above(n_asc, u, inclusive=True)
        out.append(EpsilonThreshold("fnr", g, flagged_m, flagged_n, m.size - j))
    return out


def epsilon_lower_bound(
    member_scores: np.ndarray,
    nonmember_scores: np.ndarray,
    *,
    targets: tuple[float, ...] = FPR_TARGETS,
    level: float = 0.95,
) -> EpsilonBound:
    """An empirical lower bound on epsilon from one membership attack's scores, valid at confidence ``level``.

    If training were (epsilon, 0)-differentially private, every membership test would satisfy
    ``TPR <= e^eps * FPR`` and ``1 - FPR <= e^eps * (1 - TPR)`` (the hypothesis-testing view of DP: Kairouz, Oh
    & Viswanath, "The Composition Theorem for Differential Privacy", 2015). An attack whose rates violate them
    shows that epsilon must be larger; "Auditing Differentially Private Machine Learning: How Private is Private
    SGD?" (Jagielski, Ullman & Oprea, 2020) turns this into a bound with Clopper-Pearson intervals:

        eps_lb = max(ln(TPR_low / FPR_high), ln((1 - FPR_high) / (1 - TPR_low)), 0)

    with ``TPR_low`` a one-sided lower bound of the TPR and ``FPR_high`` an upper bound of the FPR (the lower
    bound of ``1 - FPR`` is ``1 - FPR_high``, so both inequalities rest on the same two bounds). It is evaluated
    only at the few thresholds of :func:`epsilon_thresholds` (an FPR and an FNR threshold per target, six by
    default), each one-sided bound at ``(1 - level) / (2 * thresholds)`` (Bonferroni), so the maximum holds
    simultaneously at ``level``.

    This is a LOWER bound: the evidence of one attack on one trained model, never a privacy guarantee. A
    stronger attack, more records or more trained models may give a larger bound, and 0 does not mean private.
    (Training on one fixed data set also measures membership on the population, not a worst-case neighbour.)

    Perfectly separated scores of 1,000 members and 1,000 non-members: the threshold for 0.1% FPR flags every
    member and one non-member; with alpha = 0.05 / 12 per one-sided bound, ``TPR_low = alpha ** (1 / 1000)``
    (all 1,000 members flagged) and the second inequality gives the bound (the FNR threshold at 0.1%, 999 members
    and no non-member, gives the same number through the first: Clopper-Pearson is symmetric):

    >>> bound = epsilon_lower_bound(np.arange(1000.0) + 1000.0, np.arange(1000.0))
    >>> round(bound.value, 4), bound.evidence.rule, bound.evidence.target, bound.evidence.inequality
    (5.2016, 'fpr', 0.001, 'tnr')
    >>> from scipy import stats
    >>> a = 0.05 / 12
    >>> tpr_low, fpr_high = a ** (1 / 1000), stats.beta.ppf(1 - a, 2, 999)
    >>> round(float(np.log((1 - fpr_high) / (1 - tpr_low))), 4)
    5.2016
    """
    m, n = _check_scores(member_scores, nonmember_scores)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    thresholds = epsilon_thresholds(m, n, targets)
    alpha = (1.0 - level) / (2 * len(thresholds))  # per one-sided bound
    best = EpsilonBound(0.0)
    for t in thresholds:
        # The group that chose the threshold is bounded through its rank (see epsilon_thresholds).
        k1, k0 = (t.members, t.rank) if t.rule == "fpr" else (t.rank, t.nonmembers)
        tpr_low = clopper_pearson(k1, m.size, 1.0 - 2.0 * alpha).low
        fpr_high = clopper_pearson(k0, n.size, 1.0 - 2.0 * alpha).high
        candidates = {
            "tpr": math.log(tpr_low / fpr_high) if tpr_low > 0.0 else -math.inf,
            "tnr": math.log((1.0 - fpr_high) / (1.0 - tpr_low)) if fpr_high < 1.0 else -math.inf,
        }
        for inequality, value in candidates.items():
            if value > best.value:
                evidence = EpsilonEvidence(
                    rule=t.rule,
                    target=t.target,
                    inequality=inequality,
                    tpr=t.members / m.size,
                    fpr=t.nonmembers / n.size,
                    tpr_low=tpr_low,
                    fpr_high=fpr_high,
                    thresholds=len(thresholds),
                    level=level,
                )
                best = EpsilonBound(value, evidence)
    return best
