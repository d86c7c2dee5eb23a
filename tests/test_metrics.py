"""Metrics against slow references and pinned values."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from modelsec.attacks.membership import LossThreshold, MembershipInputs, Signals
from modelsec.audits.membership import evaluate_membership, summarise_membership
from modelsec.stats.metrics import (
    _auc_fast,
    advantage,
    auc,
    auc_bootstrap_ci,
    clopper_pearson,
    downsample_roc,
    rate_with_ci,
    roc,
    tpr_at_fpr,
)

pytestmark = pytest.mark.numerics  # rerun by `make test-numerics` under another CPU configuration


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (24, 1000), (500, 1000)])
def test_clopper_pearson_matches_scipy_exact_interval(k: int, n: int) -> None:
    ref = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    ci = clopper_pearson(k, n)
    assert ci.low == pytest.approx(ref.low, abs=1e-9)
    assert ci.high == pytest.approx(ref.high, abs=1e-9)
    assert ci.low <= k / n <= ci.high


def test_rate_with_ci() -> None:
    rate, ci = rate_with_ci(np.array([True, False, False, False]))
    assert rate == 0.25 and ci.low < 0.25 < ci.high


def test_fast_auc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    m = rng.integers(0, 5, 300).astype(float)
    n = rng.integers(0, 4, 200).astype(float)
    ref = roc_auc_score(np.r_[np.ones(300), np.zeros(200)], np.r_[m, n])
    assert _auc_fast(m, n) == pytest.approx(ref, abs=1e-12)
    assert auc(m, n) == pytest.approx(ref, abs=1e-12)


def test_tpr_at_fpr_is_conservative_on_a_hand_made_roc() -> None:
    # members 10, 9, 8, 2; non-members 7, 1, 0, -1: the threshold above 7 gives TPR 3/4 at FPR 0
    m = np.array([10.0, 9.0, 8.0, 2.0])
    n = np.array([7.0, 1.0, 0.0, -1.0])
    fpr, tpr, _ = roc(m, n)
    assert tpr_at_fpr(fpr, tpr, 0.0) == 0.75
    assert tpr_at_fpr(fpr, tpr, 0.2) == 0.75  # FPR 0.25 exceeds 0.2: not allowed
    assert tpr_at_fpr(fpr, tpr, 0.25) == 1.0
    assert advantage(fpr, tpr) == 0.75
    assert auc(m, n) == pytest.approx(15 / 16)


def test_bootstrap_ci_brackets_auc_and_is_seeded() -> None:
    rng = np.random.default_rng(1)
    m, n = rng.normal(0.5, 1, 500), rng.normal(0, 1, 500)
    a = auc_bootstrap_ci(m, n, rng=np.random.default_rng(7))
    b = auc_bootstrap_ci(m, n, rng=np.random.default_rng(7))
    assert a == b
    assert a.low < auc(m, n) < a.high
    assert a.method == "bootstrap-percentile"


def test_downsample_roc_keeps_ends_and_order() -> None:
    rng = np.random.default_rng(2)
    fpr, tpr, _ = roc(rng.normal(1, 1, 5000), rng.normal(0, 1, 5000))
    fx, tx = downsample_roc(fpr, tpr, points=100)
    assert len(fx) <= 100 and fx[0] == 0.0 and fx[-1] == 1.0 and tx[-1] == 1.0
    assert all(a <= b for a, b in itertools.pairwise(fx))


def test_loss_threshold_attack_on_signals() -> None:
    """Members with lower loss -> AUC above chance; identical distributions -> AUC near 0.5."""
    rng = np.random.default_rng(3)

    def signals(loss: np.ndarray) -> Signals:
        return Signals(logits=np.zeros((loss.size, 2), np.float32), labels=np.zeros(loss.size, np.int64), loss=loss)

    pool = signals(np.concatenate([rng.exponential(0.1, 2000), rng.exponential(0.5, 2000)]))
    members, nonmembers = np.arange(2000), np.arange(2000, 4000)
    (res,), scores = evaluate_membership(
        [LossThreshold()], MembershipInputs(pool), members, nonmembers, rng=np.random.default_rng(0)
    )
    np.testing.assert_array_equal(scores["loss-threshold"], -pool.loss)
    assert res.auc > 0.7 and res.auc_ci.low > 0.5
    assert res.tpr_at_fpr["0.01"] >= res.tpr_at_fpr["0.001"]
    same = summarise_membership("x", rng.normal(0, 1, 2000), rng.normal(0, 1, 2000), rng=np.random.default_rng(0))
    assert same.auc_ci.low < 0.5 < same.auc_ci.high
