"""The membership-inference audit: score members vs non-members and summarise each attack's ROC.

Members (the target's training records) are the positive class. Member and non-member sets of equal size are
drawn from the splits with an explicit seed.
"""

from __future__ import annotations

import time

import numpy as np

from modelsec.attacks.privacy.base import MembershipAttack
from modelsec.attacks.privacy.signals import Signals
from modelsec.metrics import (
    FPR_TARGETS,
    advantage,
    auc,
    auc_bootstrap_ci,
    balanced_accuracy,
    downsample_roc,
    epsilon_lower_bound,
    roc,
    tpr_at_fpr,
    tpr_ci_at_fpr,
)
from modelsec.results import MembershipAttackResult


def summarise_membership(
    name: str,
    member_scores: np.ndarray,
    nonmember_scores: np.ndarray,
    *,
    rng: np.random.Generator,
    seconds: float = 0.0,
    params: dict[str, object] | None = None,
) -> MembershipAttackResult:
    """AUC with a bootstrap interval, TPR at each target FPR with an exact interval, advantage and balanced
    accuracy, the empirical epsilon lower bound (:func:`modelsec.metrics.epsilon_lower_bound`), a ROC sketch."""
    fpr, tpr, _ = roc(member_scores, nonmember_scores)
    n_m = int(np.asarray(member_scores).size)
    fx, tx = downsample_roc(fpr, tpr)
    eps = epsilon_lower_bound(member_scores, nonmember_scores)
    return MembershipAttackResult(
        attack=name,
        auc=auc(member_scores, nonmember_scores),
        auc_ci=auc_bootstrap_ci(member_scores, nonmember_scores, rng=rng),
        tpr_at_fpr={repr(t): tpr_at_fpr(fpr, tpr, t) for t in FPR_TARGETS},
        tpr_ci={repr(t): tpr_ci_at_fpr(fpr, tpr, t, n_m) for t in FPR_TARGETS},
        advantage=advantage(fpr, tpr),
        n_members=n_m,
        n_nonmembers=int(np.asarray(nonmember_scores).size),
        roc_fpr=fx,
        roc_tpr=tx,
        seconds=seconds,
        params=dict(params or {}),
        balanced_accuracy=balanced_accuracy(fpr, tpr),
        epsilon_lower_bound=eps.value,
        epsilon_evidence=eps.evidence,
    )


def evaluate_membership(
    attacks: list[MembershipAttack],
    members: Signals,
    nonmembers: Signals,
    *,
    rng: np.random.Generator,
) -> list[MembershipAttackResult]:
    """Score both sets with every attack and summarise."""
    results = []
    for attack in attacks:
        start = time.perf_counter()
        sm, sn = attack.score(members), attack.score(nonmembers)
        results.append(
            summarise_membership(
                attack.name, sm, sn, rng=rng, seconds=time.perf_counter() - start, params=attack.params()
            )
        )
    return results
