"""LiRA, the likelihood-ratio attack (Carlini, Chien, Nasr, Song, Terzis & Tramer 2022, "Membership Inference
Attacks From First Principles").

Threat model: black-box with scores, plus data from the same distribution on which the attacker trains reference
models of the same kind. For each record LiRA models the target's scaled logit ``phi = log(p_y / (1 - p_y))`` as a
Gaussian under the reference models that trained on the record (IN) and under those that did not (OUT):

- **online**: score = ``log N(phi; mu_in, sigma_in) - log N(phi; mu_out, sigma_out)``, the log likelihood ratio;
- **offline**: score = ``(phi - mu_out) / sigma_out``, one-sided: how far above the OUT distribution the record's
  confidence lies (a monotone function of the paper's ``1 - Pr[Z > phi]``, so the same ROC).

Variance: ``per-example`` estimates sigma for each record (and for IN and OUT) from its own models; ``global``
(the paper's "fixed variance") uses one sigma for every record and for IN and OUT alike, the within-record spread
pooled over all records (see :func:`global_sigma`), which is better with few reference models (Carlini et al.
find it better below 64). ``auto`` uses per-example from 64 models on. Each record's mean is the mean over its
models. Unlike the paper, modelsec does not query augmented copies of a record.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelsec.attacks.membership.base import MEMBERSHIP_ATTACKS, MembershipAttack, MembershipInputs
from modelsec.attacks.membership.signals import Signal, scaled_logit
from modelsec.core.errors import ConfigError

VARIANCES = ("auto", "global", "per-example")
PER_EXAMPLE_FROM = 64  # reference models from which "auto" uses per-example variances (Carlini et al. 2022)
MIN_SIGMA = 1e-6


def _masked_mean_std(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-record mean, standard deviation and count of ``values[k, i]`` over the models ``k`` where ``mask``
    (NaN mean where a record has no such model)."""
    count = mask.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(mask, values, 0.0).sum(axis=0) / count
        var = np.where(mask, (values - mean) ** 2, 0.0).sum(axis=0) / np.maximum(count, 1)
    return mean, np.sqrt(var), count


def global_sigma(values: np.ndarray, groups: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """One standard deviation for every record (the "fixed variance"): the within-record spread pooled over all
    records and the given (mask, per-record mean) groups, i.e. around each record's own IN or OUT mean. Where no
    record has two models in a group (two online models: one IN and one OUT each) that spread is not estimable, and
    the spread of all the groups' values across records is used instead, as Carlini et al.'s code does."""
    resid, dof = 0.0, 0
    for mask, mean in groups:
        usable = mask & (mask.sum(axis=0) >= 2)[None, :]
        resid += float(np.where(usable, (values - mean) ** 2, 0.0).sum())
        dof += int(usable.sum() - (usable.any(axis=0)).sum())  # one mean estimated per record and group
    if dof > 0 and resid > 0:
        return float(np.sqrt(resid / dof))
    pooled = np.concatenate([values[mask] for mask, _ in groups])
    return max(float(pooled.std()), MIN_SIGMA)


def _log_normal(x: np.ndarray, mean: np.ndarray, sigma: np.ndarray | float) -> np.ndarray:
    return -0.5 * ((x - mean) / sigma) ** 2 - np.log(sigma)  # the common -log(sqrt(2 pi)) cancels in the ratio


def lira_scores(
    target_phi: np.ndarray,
    reference_phi: np.ndarray,
    inclusion: np.ndarray,
    *,
    online: bool,
    per_example_variance: bool,
) -> np.ndarray:
    """LiRA scores from the target's scaled logits ``(n,)`` and the reference models' ``(models, n)``. A record
    without the models its test needs (an OUT model; online, an IN model too) scores NaN: it cannot be judged."""
    out_mean, out_std, _ = _masked_mean_std(reference_phi, ~inclusion)
    if not online:
        sigma = (
            np.maximum(out_std, MIN_SIGMA)
            if per_example_variance
            else global_sigma(reference_phi, [(~inclusion, out_mean)])
        )
        return (target_phi - out_mean) / sigma
    in_mean, in_std, _ = _masked_mean_std(reference_phi, inclusion)
    if per_example_variance:
        in_sigma, out_sigma = np.maximum(in_std, MIN_SIGMA), np.maximum(out_std, MIN_SIGMA)
        return _log_normal(target_phi, in_mean, in_sigma) - _log_normal(target_phi, out_mean, out_sigma)
    sigma = global_sigma(reference_phi, [(inclusion, in_mean), (~inclusion, out_mean)])
    return _log_normal(target_phi, in_mean, sigma) - _log_normal(target_phi, out_mean, sigma)


@dataclass(frozen=True, kw_only=True)
class _LiRA(MembershipAttack):
    variance: str = "auto"
    signals = frozenset({Signal.TARGET_SCORES, Signal.REFERENCE})

    def __post_init__(self) -> None:
        if self.variance not in VARIANCES:
            raise ConfigError(f"{self.name}: variance must be one of {VARIANCES}, got {self.variance!r}")

    def per_example(self, models: int) -> bool:
        return self.variance == "per-example" or (self.variance == "auto" and models >= PER_EXAMPLE_FROM)

    def score(self, inputs: MembershipInputs) -> np.ndarray:
        target, reference, inclusion = inputs.target_and_reference(scaled_logit)
        online = Signal.ONLINE_REFERENCE in self.signals
        return lira_scores(
            target, reference, inclusion, online=online, per_example_variance=self.per_example(len(inclusion))
        )


@MEMBERSHIP_ATTACKS.register("lira")
@dataclass(frozen=True, kw_only=True)
class LiRAOnline(_LiRA):
    """Online LiRA: IN and OUT Gaussians per record (needs reference models trained on the candidates)."""

    name = "lira"
    signals = frozenset({Signal.TARGET_SCORES, Signal.ONLINE_REFERENCE})


@MEMBERSHIP_ATTACKS.register("lira-offline")
@dataclass(frozen=True, kw_only=True)
class LiRAOffline(_LiRA):
    """Offline LiRA: a one-sided test against the OUT Gaussian only."""

    name = "lira-offline"
