"""The empirical epsilon lower bound and the balanced accuracy: analytic cases, validity, point-estimate ceiling."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from modelsec.stats.metrics import (
    FPR_TARGETS,
    advantage,
    balanced_accuracy,
    clopper_pearson,
    epsilon_lower_bound,
    epsilon_thresholds,
    roc,
    tpr_at_fpr,
)

pytestmark = pytest.mark.numerics  # rerun by `make test-numerics` under another CPU configuration


def test_fpr_targets() -> None:
    assert FPR_TARGETS == (0.001, 0.01, 0.1)


def test_balanced_accuracy_is_half_of_one_plus_advantage() -> None:
    rng = np.random.default_rng(0)
    fpr, tpr, _ = roc(rng.normal(0.7, 1, 500), rng.normal(0, 1, 400))
    assert balanced_accuracy(fpr, tpr) == pytest.approx((1 + advantage(fpr, tpr)) / 2, abs=1e-12)
    # Perfect separation: 1; identical scores: 0.5 (the threshold that flags nothing).
    perfect = roc(np.array([2.0, 3.0]), np.array([0.0, 1.0]))
    assert balanced_accuracy(perfect[0], perfect[1]) == 1.0
    same = roc(np.zeros(5), np.zeros(5))
    assert balanced_accuracy(same[0], same[1]) == 0.5


def test_perfect_separation_matches_clopper_pearson_by_hand() -> None:
    bound = epsilon_lower_bound(np.linspace(1, 2, 1000), np.linspace(-2, -1, 1000))
    a = 0.05 / 12  # 6 thresholds, 2 one-sided bounds each
    # Threshold at 0.1% FPR: all 1000 members and 1 non-member flagged.
    tpr_low = a ** (1 / 1000)  # Clopper-Pearson lower bound of 1000/1000
    fpr_high = stats.beta.ppf(1 - a, 2, 999)  # upper bound of 1/1000
    expected = math.log((1 - fpr_high) / (1 - tpr_low))
    # The FNR threshold at 0.1% (999 members, 0 non-members) gives the same number through TPR <= e^eps FPR.
    same = math.log(stats.beta.ppf(a, 999, 2) / (1 - a ** (1 / 1000)))
    assert expected == pytest.approx(same, rel=1e-12)
    assert bound.value == pytest.approx(expected, rel=1e-12)
    assert 5.2 < bound.value < 5.21
    ev = bound.evidence
    assert ev is not None and ev.thresholds == 6 and ev.level == 0.95
    assert (ev.rule, ev.target, ev.inequality) == ("fpr", 0.001, "tnr")
    assert (ev.tpr, ev.fpr) == (1.0, 0.001)
    assert ev.tpr_low == pytest.approx(tpr_low) and ev.fpr_high == pytest.approx(fpr_high)


def test_identical_distributions_give_zero() -> None:
    values = [
        epsilon_lower_bound(rng.normal(0, 1, 1000), rng.normal(0, 1, 1000)).value
        for rng in (np.random.default_rng(seed) for seed in range(40))
    ]
    # Under the null every positive bound is a failure of a simultaneous 95% interval.
    assert sum(v == 0.0 for v in values) >= 36
    assert max(values) < 0.5
    zero = epsilon_lower_bound(np.zeros(100), np.zeros(100))  # all tied: nothing to see
    assert zero.value == 0.0 and zero.evidence is None


def test_bound_holds_for_a_mechanism_with_known_epsilon() -> None:
    """Laplace scores with shift mu and scale b: the likelihood ratio is at most e^(mu/b), so every threshold
    test is (mu/b, 0)-DP and the bound must stay below mu/b with probability at least 95%."""
    eps_true = 2.0
    rng = np.random.default_rng(5)
    values = np.array(
        [epsilon_lower_bound(rng.laplace(eps_true, 1.0, 1000), rng.laplace(0.0, 1.0, 1000)).value for _ in range(100)]
    )
    assert np.mean(values <= eps_true) >= 0.95
    assert np.mean(values) > 1.0  # and the attack's evidence is not thrown away


@pytest.mark.parametrize("seed", range(6))
def test_bound_never_exceeds_point_estimates(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shift = [0.0, 0.3, 1.0, 2.5, 4.0, 0.5][seed]
    n_m, n_n = [(500, 500), (1000, 800), (300, 2000), (1000, 1000), (200, 200), (700, 700)][seed]
    m = rng.normal(shift, 1, n_m)
    n = rng.normal(0, 1, n_n)
    if seed == 5:  # heavy ties
        m, n = np.round(m), np.round(n)
    bound = epsilon_lower_bound(m, n)
    point = 0.0
    for t in epsilon_thresholds(m, n):
        tpr, fpr = t.members / n_m, t.nonmembers / n_n
        ratios = [tpr / fpr if fpr > 0 else math.inf, (1 - fpr) / (1 - tpr) if tpr < 1 else math.inf]
        point = max(point, *(math.log(r) for r in ratios if r > 0))
    assert 0.0 <= bound.value <= point
    if bound.evidence is not None:
        ev = bound.evidence
        assert ev.tpr_low <= ev.tpr and ev.fpr_high >= ev.fpr
        estimate = ev.tpr / ev.fpr if ev.inequality == "tpr" and ev.fpr > 0 else math.inf
        if ev.inequality == "tnr" and ev.tpr < 1:
            estimate = (1 - ev.fpr) / (1 - ev.tpr)
        assert bound.value <= math.log(estimate)


@pytest.mark.parametrize("ties", [False, True])
def test_thresholds_are_those_of_the_reported_rates(ties: bool) -> None:
    rng = np.random.default_rng(11)
    m, n = rng.normal(0.8, 1, 2000), rng.normal(0, 1, 1500)
    if ties:
        m, n = np.round(m, 1), np.round(n, 1)
    fpr, tpr, _ = roc(m, n)
    thresholds = epsilon_thresholds(m, n)
    assert [(t.rule, t.target) for t in thresholds] == [("fpr", f) for f in FPR_TARGETS] + [
        ("fnr", f) for f in FPR_TARGETS
    ]
    for t in thresholds:
        if t.rule == "fpr":  # the threshold of tpr_at_fpr: the reported TPR, at most the target FPR
            assert t.members / m.size == pytest.approx(tpr_at_fpr(fpr, tpr, t.target), abs=1e-12)
            assert t.nonmembers <= t.rank == math.floor(t.target * n.size)
        else:  # the smallest FPR among thresholds missing at most the target share of members
            assert t.members >= t.rank == m.size - math.floor(t.target * m.size)
            assert t.nonmembers / n.size == pytest.approx(fpr[tpr >= 1 - t.target - 1e-12].min(), abs=1e-12)
        assert (t.nonmembers == t.rank if t.rule == "fpr" else t.members == t.rank) or ties


def test_bounds_cover_their_level_with_tied_scores() -> None:
    """With discrete scores a threshold chosen on one group flags more (or fewer) of that group than its rank; the
    bound uses the rank, so each one-sided Clopper-Pearson bound still fails at most alpha of the time. (With the
    observed counts, the bound at the 1% FNR threshold fails about 6% of the time at alpha = 5% here.)"""
    rng = np.random.default_rng(0)
    alpha, lam, trials = 0.05, 20, 3000
    fails = np.zeros(6)
    for _ in range(trials):
        m, n = rng.poisson(lam, 300).astype(float), rng.poisson(lam, 300).astype(float)
        for i, t in enumerate(epsilon_thresholds(m, n)):
            if t.rule == "fpr":  # true FPR of "score > v": flagged at most rank of the non-members
                v = np.sort(n)[n.size - 1 - t.rank]
                fails[i] += stats.poisson.sf(v, lam) > clopper_pearson(t.rank, n.size, 1 - 2 * alpha).high
            else:  # true TPR of "score >= u": at least rank of the members flagged
                u = np.sort(m)[m.size - t.rank]
                fails[i] += stats.poisson.sf(u - 1, lam) < clopper_pearson(t.rank, m.size, 1 - 2 * alpha).low
    assert np.all(fails / trials <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / trials)), fails / trials


def test_bound_validates_its_inputs() -> None:
    with pytest.raises(ValueError, match="level"):
        epsilon_lower_bound(np.ones(3), np.zeros(3), level=1.0)
    with pytest.raises(ValueError, match="at least one"):
        epsilon_lower_bound(np.ones(3), np.zeros(0))
