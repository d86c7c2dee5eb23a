"""summarise_membership fills every field of a membership result, consistently with the metrics."""

from __future__ import annotations

import numpy as np
import pytest

from modelsec.audits.membership import summarise_membership
from modelsec.stats.metrics import epsilon_lower_bound


def test_summary_has_balanced_accuracy_and_epsilon_bound() -> None:
    rng = np.random.default_rng(4)
    m, n = rng.normal(1.0, 1, 1000), rng.normal(0, 1, 1000)
    res = summarise_membership("x", m, n, rng=np.random.default_rng(0))
    assert set(res.tpr_at_fpr) == set(res.tpr_ci) == {"0.001", "0.01", "0.1"}
    assert res.tpr_at_fpr["0.001"] <= res.tpr_at_fpr["0.01"] <= res.tpr_at_fpr["0.1"]
    assert res.balanced_accuracy == pytest.approx((1 + res.advantage) / 2)
    bound = epsilon_lower_bound(m, n)
    assert res.epsilon_lower_bound == bound.value > 0 and res.epsilon_evidence == bound.evidence


def test_summary_of_identical_scores_has_no_epsilon_evidence() -> None:
    rng = np.random.default_rng(5)
    res = summarise_membership("x", rng.normal(0, 1, 1000), rng.normal(0, 1, 1000), rng=np.random.default_rng(0))
    assert res.epsilon_lower_bound == 0.0 and res.epsilon_evidence is None
    assert res.balanced_accuracy is not None and 0.5 <= res.balanced_accuracy < 0.56
