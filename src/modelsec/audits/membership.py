"""The membership-inference audit: score members vs non-members and summarise each attack's ROC.

Members (the target's training records) are the positive class. Member and non-member sets of equal size are
drawn from the splits with an explicit seed.
"""

from __future__ import annotations

import time

import numpy as np

from modelsec.attacks.membership.base import MEMBERSHIP_ATTACKS, MembershipAttack, MembershipInputs
from modelsec.audits.reference_models import ReferenceConfig
from modelsec.core.errors import ConfigError
from modelsec.models.base import Capability
from modelsec.results.audit import MembershipAttackResult
from modelsec.stats.metrics import (
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
    accuracy, the empirical epsilon lower bound (:func:`modelsec.stats.metrics.epsilon_lower_bound`), a ROC sketch."""
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
    inputs: MembershipInputs,
    members: np.ndarray,
    nonmembers: np.ndarray,
    *,
    rng: np.random.Generator,
) -> tuple[list[MembershipAttackResult], dict[str, np.ndarray]]:
    """Score the pool with every attack and summarise it on the candidate ``members`` and ``nonmembers`` (index
    arrays into the pool). Returns the summaries and each attack's scores on the whole pool, by attack label."""
    results, scores = [], {}
    for attack in attacks:
        start = time.perf_counter()
        s = attack(inputs)
        unjudged = int(np.isnan(s[members]).sum() + np.isnan(s[nonmembers]).sum())
        if unjudged:
            raise ConfigError(
                f"{attack.label} cannot judge {unjudged} candidate records (they lack the reference models it "
                "needs); train more reference models"
            )
        scores[attack.label] = s
        results.append(
            summarise_membership(
                attack.label,
                s[members],
                s[nonmembers],
                rng=rng,
                seconds=time.perf_counter() - start,
                params=attack.params(),
            )
        )
    return results, scores


# -- the membership part of an audit ----------------------------------------------------------------------------


def plan_membership_attacks(
    names: tuple[str, ...] | None, capability: Capability, reference: ReferenceConfig | None
) -> tuple[list[MembershipAttack], list[str]]:
    """The attacks to run and notes on what was left out. Explicit names that cannot run are a
    :class:`ConfigError` (before any work); by default every registered attack that can run does, except the
    label-only attack, which runs by default only on models that return labels alone."""
    notes: list[str] = []
    chosen: list[MembershipAttack] = []
    explicit = names is not None
    for name in names if names is not None else tuple(MEMBERSHIP_ATTACKS.names()):
        cls = MEMBERSHIP_ATTACKS.get(name)
        reason = None
        if capability < cls.requires:
            reason = f"needs {cls.requires.name.lower()} but the model returns {capability.name.lower()}"
        elif cls.needs_reference and reference is None:
            reason = "needs reference models (--reference-models N)"
        elif cls.needs_online and reference is not None and not reference.online:
            reason = "is an online attack and the reference models are offline"
        elif not explicit and cls.requires is Capability.LABELS and capability >= Capability.SCORES:
            continue  # label-only runs by default only where nothing stronger can
        if reason is not None:
            if explicit:
                raise ConfigError(f"membership attack {name} {reason}")
            notes.append(f"{name} not run: {reason}")
            continue
        chosen.append(cls())
    if not chosen:
        raise ConfigError("no membership attack can run on this model: " + "; ".join(notes))
    if capability < Capability.SCORES:
        notes.append("the model returns labels only: only label-only membership attacks apply")
    return chosen, notes


def strongest(results: list[MembershipAttackResult], fpr: float = 0.001) -> MembershipAttackResult:
    """The attack that leaks most where it matters, at low FPR: the highest TPR at ``fpr`` (0.1%), then the
    highest AUC (NaN counts as lowest). The one definition the report, the exposed records and ``compare`` use."""

    def key(a: MembershipAttackResult) -> tuple[float, float]:
        tpr = a.tpr_at_fpr.get(repr(fpr), float("nan"))
        return (tpr if np.isfinite(tpr) else -1.0, a.auc if np.isfinite(a.auc) else -1.0)

    if not results:
        raise ValueError("no membership attack results")
    return max(results, key=key)
