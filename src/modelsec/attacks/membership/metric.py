"""Metric-based membership attacks: one global threshold on a per-record statistic of the target's output.

Threat model: black-box with scores; the attacker sees the model's output on a record (and, for the label-aware
metrics, its true label) and guesses "member" when the statistic says the model is confident on it. Sweeping the
threshold traces each attack's ROC. They need no reference model, and because the threshold is the same for every
record they are weak at low FPR: easy non-members look as confident as members (Carlini et al. 2022).

- ``loss-threshold``: ``-loss`` (Yeom, Giacomelli, Fredrikson & Jha 2018, "Privacy Risk in Machine Learning:
  Analyzing the Connection to Overfitting").
- ``confidence``: ``log max_j p_j``, the prediction's confidence, needing no label (Salem et al. 2019, "ML-Leaks").
  (The true-class probability ``p_y`` would rank records exactly as the loss does.)
- ``entropy``: ``-H(p)`` (Salem et al. 2019; Song & Mittal 2021).
- ``modified-entropy``: ``-Mentr(p, y)`` (Song & Mittal 2021, "Systematic Evaluation of Privacy Risks of Machine
  Learning Models"), which, unlike entropy, tells a confident correct prediction from a confident wrong one.

Every statistic is computed in float64 log space (:mod:`modelsec.attacks.membership.signals`): a saturated model still
gives every record a distinct score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelsec.attacks.membership.base import MEMBERSHIP_ATTACKS, MembershipAttack, MembershipInputs
from modelsec.attacks.membership.signals import entropy, max_log_prob, modified_entropy


def loss_threshold_scores(loss: np.ndarray) -> np.ndarray:
    """Membership scores from per-record losses: ``-loss`` (float64)."""
    return -np.asarray(loss, dtype=np.float64)


@MEMBERSHIP_ATTACKS.register("loss-threshold")
@dataclass(frozen=True, kw_only=True)
class LossThreshold(MembershipAttack):
    """Low loss = member (Yeom et al. 2018)."""

    name = "loss-threshold"

    def score(self, inputs: MembershipInputs) -> np.ndarray:
        return loss_threshold_scores(inputs.target.loss)


@MEMBERSHIP_ATTACKS.register("confidence")
@dataclass(frozen=True, kw_only=True)
class ConfidenceThreshold(MembershipAttack):
    """High top-class probability = member (Salem et al. 2019); label-agnostic."""

    name = "confidence"

    def score(self, inputs: MembershipInputs) -> np.ndarray:
        return max_log_prob(inputs.target.logits)


@MEMBERSHIP_ATTACKS.register("entropy")
@dataclass(frozen=True, kw_only=True)
class EntropyThreshold(MembershipAttack):
    """Low prediction entropy = member (Salem et al. 2019)."""

    name = "entropy"

    def score(self, inputs: MembershipInputs) -> np.ndarray:
        return -entropy(inputs.target.logits)


@MEMBERSHIP_ATTACKS.register("modified-entropy")
@dataclass(frozen=True, kw_only=True)
class ModifiedEntropyThreshold(MembershipAttack):
    """Low modified entropy = member (Song & Mittal 2021)."""

    name = "modified-entropy"

    def score(self, inputs: MembershipInputs) -> np.ndarray:
        return -modified_entropy(inputs.target.logits, inputs.target.labels)
