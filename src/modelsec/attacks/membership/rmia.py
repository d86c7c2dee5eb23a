"""RMIA, the robust membership inference attack (Zarifzadeh, Liu, Shokri & Shokri 2024, "Low-Cost High-Power
Membership Inference Attacks").

Threat model: black-box with scores, plus population data on which the attacker trains (few) reference models.
RMIA tests a record ``x`` through the likelihood ratio ``LR(x) = p(x | theta) / p(x)``: ``p(x | theta)`` is the
target's probability of the true label, ``p(x)`` its average under reference models, i.e. how likely the label is
for a model of this kind whether or not it trained on ``x``:

- **online**: ``p(x)`` = the mean over all reference models (half of them trained on ``x``);
- **offline**: only OUT models exist for the candidates, so ``p(x) = ((1 + a) / 2) * mean_OUT p(x) + (1 - a) / 2``,
  the paper's linear approximation of the missing IN half. ``a`` is chosen on the reference models themselves
  (each in turn playing the target, the AUC maximised over a grid), as the paper does, or fixed by the user.

The paper's score is ``Pr_z[LR(x) / LR(z) > gamma]`` over population records ``z``: the empirical distribution of
``LR(z)`` evaluated at ``LR(x) / gamma``. For a fixed set of ``z`` that is a non-decreasing function of ``LR(x)``,
so it orders records, and traces the ROC, exactly as ``log LR(x)`` does (with ties wherever two records fall
between the same two ``z``); modelsec scores ``log LR(x)`` and :func:`rmia_pairwise_scores` gives the paper's
form. Probabilities stay in log space: ``log p`` is the float64 ``-loss``, so saturated models do not tie.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelsec.attacks.membership.base import MEMBERSHIP_ATTACKS, MembershipAttack, MembershipInputs
from modelsec.attacks.membership.signals import Signal, logsumexp, true_class_log_prob
from modelsec.core.errors import ConfigError
from modelsec.stats.metrics import auc

A_GRID = tuple(round(0.1 * i, 1) for i in range(11))
DEFAULT_A = 0.3  # when it cannot be tuned (a single reference model)


def _log_mean_p(ref_logp: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``log mean_{k in mask} p_k`` per record, from log-probabilities ``(models, n)``; NaN for a record without
    such a model (it cannot be judged)."""
    count = mask.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.asarray(logsumexp(np.where(mask, ref_logp, -np.inf), axis=0)) - np.log(count)
    return np.where(count > 0, out, np.nan)


def log_p_population(ref_logp: np.ndarray, inclusion: np.ndarray, *, online: bool, a: float) -> np.ndarray:
    """``log p(x)`` from the reference models' true-label log-probabilities ``(models, n)``."""
    if online:
        return _log_mean_p(ref_logp, np.ones_like(inclusion, dtype=bool))
    out = _log_mean_p(ref_logp, ~inclusion)
    if a >= 1.0:
        return out
    with np.errstate(invalid="ignore"):  # NaN (no OUT model) stays NaN
        return np.logaddexp(np.log1p(a) - np.log(2.0) + out, np.log((1.0 - a) / 2.0))


def rmia_log_ratio(
    target_logp: np.ndarray, ref_logp: np.ndarray, inclusion: np.ndarray, *, online: bool, a: float
) -> np.ndarray:
    """``log LR(x) = log p(x | theta) - log p(x)`` for every record."""
    return target_logp - log_p_population(ref_logp, inclusion, online=online, a=a)


def rmia_pairwise_scores(log_lr_x: np.ndarray, log_lr_z: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """The paper's score: the fraction of population records ``z`` with ``LR(x) / LR(z) > gamma``.

    >>> rmia_pairwise_scores(np.log([1.0, 2.0, 4.0]), np.log([1.0, 3.0]), gamma=1.0).tolist()
    [0.0, 0.5, 1.0]
    """
    z = np.sort(np.asarray(log_lr_z, dtype=np.float64))
    return np.searchsorted(z, np.asarray(log_lr_x) - np.log(gamma), side="left") / max(z.size, 1)


def tune_offline_a(ref_logp: np.ndarray, inclusion: np.ndarray, grid: tuple[float, ...] = A_GRID) -> float:
    """The ``a`` of the offline approximation that maximises the mean AUC when each reference model in turn plays
    the target and the others are its (OUT) references, over the records it could have trained on."""
    models = inclusion.shape[0]
    if models < 2:
        return DEFAULT_A
    best_a, best_auc = DEFAULT_A, -1.0
    for a in grid:
        aucs = []
        for r in range(models):
            others = np.delete(np.arange(models), r)
            out = ~inclusion[others]
            usable = out.any(axis=0) & inclusion.any(axis=0)  # eligible records with an OUT model among the others
            member = inclusion[r, usable]
            if member.all() or not member.any():
                continue
            lr = rmia_log_ratio(ref_logp[r, usable], ref_logp[others][:, usable], inclusion[others][:, usable],
                                online=False, a=a)  # fmt: skip
            aucs.append(auc(lr[member], lr[~member]))
        if aucs and float(np.mean(aucs)) > best_auc:
            best_a, best_auc = a, float(np.mean(aucs))
    return best_a


@MEMBERSHIP_ATTACKS.register("rmia")
@dataclass(frozen=True, kw_only=True)
class RMIAOnline(MembershipAttack):
    """Online RMIA: ``p(x)`` averaged over all reference models (needs models trained on the candidates)."""

    name = "rmia"
    signals = frozenset({Signal.TARGET_SCORES, Signal.ONLINE_REFERENCE})

    def score(self, inputs: MembershipInputs) -> np.ndarray:
        target, ref, inclusion = inputs.target_and_reference(true_class_log_prob)
        return rmia_log_ratio(target, ref, inclusion, online=True, a=1.0)


@MEMBERSHIP_ATTACKS.register("rmia-offline")
@dataclass(frozen=True, kw_only=True)
class RMIAOffline(MembershipAttack):
    """Offline RMIA: ``p(x)`` from OUT models with the linear approximation; ``a`` = None tunes it on the
    reference models (a fixed 0.3 with a single model)."""

    name = "rmia-offline"
    signals = frozenset({Signal.TARGET_SCORES, Signal.REFERENCE})
    a: float | None = None

    def __post_init__(self) -> None:
        if self.a is not None and not 0.0 <= self.a <= 1.0:
            raise ConfigError(f"{self.name}: a must lie in [0, 1], got {self.a}")

    def score(self, inputs: MembershipInputs) -> np.ndarray:
        target, ref, inclusion = inputs.target_and_reference(true_class_log_prob)
        a = self.a if self.a is not None else tune_offline_a(ref, inclusion)
        return rmia_log_ratio(target, ref, inclusion, online=False, a=a)
