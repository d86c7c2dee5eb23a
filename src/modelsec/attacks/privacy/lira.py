"""LiRA, the likelihood-ratio attack (Carlini, Chien, Nasr, Song, Terzis & Tramer 2022, "Membership Inference
Attacks From First Principles").

Threat model: black-box with scores, plus data from the same distribution on which the attacker trains reference
models of the same kind. For each record LiRA models the target's scaled logit ``phi = log(p_y / (1 - p_y))`` as a
Gaussian under the reference models that trained on the record (IN) and under those that did not (OUT):

- **online**: score = ``log N(phi; mu_in, sigma_in) - log N(phi; mu_out, sigma_out)``, the log likelihood ratio;
- **offline**: score = ``(phi - mu_out) / sigma_out``, one-sided: how far above the OUT distribution the record's
  confidence lies (a monotone function of the paper's ``1 - Pr[Z > phi]``, so the same ROC).

Variance: ``per-example`` estimates sigma for each record from its own IN / OUT models; ``global`` (the paper's
"fixed variance") pools the within-record spread over all records, which is better with few reference models
(Carlini et al. find it better below 64). ``auto`` uses per-example from 64 models on. Each record's mean is the
mean over its models. Unlike the paper, modelsec does not query augmented copies of a record.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelsec.attacks.privacy.base import MEMBERSHIP_ATTACKS, MembershipAttack, MembershipInputs
from modelsec.attacks.privacy.signals import scaled_logit
from modelsec.errors import ConfigError

VARIANCES = ("auto", "global", "per-example")
PER_EXAMPLE_FROM = 64  # reference models from which "auto" uses per-example variances (Carlini et al. 2022)
MIN_SIGMA = 1e-6


def _masked_mean_std(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-record mean, standard deviation and count of ``values[k, i]`` over the models ``k`` where ``mask``."""
    count = mask.sum(axis=0)
    safe = np.maximum(count, 1)
    mean = np.where(mask, values, 0.0).sum(axis=0) / safe
    var = np.where(mask, (values - mean) ** 2, 0.0).sum(axis=0) / safe
    return mean, np.sqrt(var), count


def _global_std(values: np.ndarray, mask: np.ndarray, mean: np.ndarray) -> float:
    """The within-record standard deviation pooled over all records: sqrt(sum of squared residuals / count)."""
    resid = np.where(mask, (values - mean) ** 2, 0.0)
    return float(np.sqrt(resid.sum() / max(int(mask.sum()), 1)))


def _sigma(values: np.ndarray, mask: np.ndarray, mean: np.ndarray, std: np.ndarray, per_example: bool) -> np.ndarray:
    sigma = std if per_example else np.full_like(mean, _global_std(values, mask, mean))
    return np.maximum(sigma, MIN_SIGMA)


def _log_normal(x: np.ndarray, mean: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    return -0.5 * ((x - mean) / sigma) ** 2 - np.log(sigma)  # the common -log(sqrt(2 pi)) cancels in the ratio


def lira_scores(
    target_phi: np.ndarray,
    reference_phi: np.ndarray,
    inclusion: np.ndarray,
    *,
    online: bool,
    per_example_variance: bool,
) -> np.ndarray:
    """LiRA scores from the target's scaled logits ``(n,)`` and the reference models' ``(models, n)``."""
    out_mean, out_std, out_count = _masked_mean_std(reference_phi, ~inclusion)
    if (out_count == 0).any():
        raise ConfigError(f"LiRA: {(out_count == 0).sum()} records have no OUT reference model")
    out_sigma = _sigma(reference_phi, ~inclusion, out_mean, out_std, per_example_variance)
    if not online:
        return (target_phi - out_mean) / out_sigma
    in_mean, in_std, in_count = _masked_mean_std(reference_phi, inclusion)
    if (in_count == 0).any():
        raise ConfigError(f"LiRA online: {(in_count == 0).sum()} records have no IN reference model")
    in_sigma = _sigma(reference_phi, inclusion, in_mean, in_std, per_example_variance)
    return _log_normal(target_phi, in_mean, in_sigma) - _log_normal(target_phi, out_mean, out_sigma)


@dataclass(frozen=True, kw_only=True)
class _LiRA(MembershipAttack):
    variance: str = "auto"
    needs_reference = True

    def __post_init__(self) -> None:
        if self.variance not in VARIANCES:
            raise ConfigError(f"{self.name}: variance must be one of {VARIANCES}, got {self.variance!r}")

    def per_example(self, models: int) -> bool:
        return self.variance == "per-example" or (self.variance == "auto" and models >= PER_EXAMPLE_FROM)

    def _scores(self, inputs: MembershipInputs, online: bool) -> np.ndarray:
        ref = inputs.reference
        assert ref is not None
        t = inputs.target
        return lira_scores(
            scaled_logit(t.logits, t.labels),
            scaled_logit(ref.logits, ref.labels),
            ref.inclusion,
            online=online,
            per_example_variance=self.per_example(ref.num_models),
        )


@MEMBERSHIP_ATTACKS.register("lira")
@dataclass(frozen=True, kw_only=True)
class LiRAOnline(_LiRA):
    """Online LiRA: IN and OUT Gaussians per record (needs reference models trained on the candidates)."""

    name = "lira"
    needs_online = True

    def score(self, inputs: MembershipInputs) -> np.ndarray:
        return self._scores(inputs, online=True)


@MEMBERSHIP_ATTACKS.register("lira-offline")
@dataclass(frozen=True, kw_only=True)
class LiRAOffline(_LiRA):
    """Offline LiRA: a one-sided test against the OUT Gaussian only."""

    name = "lira-offline"

    def score(self, inputs: MembershipInputs) -> np.ndarray:
        return self._scores(inputs, online=False)
