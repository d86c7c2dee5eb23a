"""The loss-threshold attack (Yeom, Giacomelli, Fredrikson & Jha 2018, "Privacy Risk in Machine Learning:
Analyzing the Connection to Overfitting").

Threat model: black-box with scores; the attacker sees the model's output on a record and its true label and
guesses "member" when the loss is low. The score is the negative cross-entropy, so sweeping a threshold over it
traces the attack's ROC. It is calibrated globally (one threshold for all records), hence weak at low FPR.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelsec.attacks.privacy.base import MEMBERSHIP_ATTACKS, MembershipAttack
from modelsec.attacks.privacy.signals import Signals


def loss_threshold_scores(loss: np.ndarray) -> np.ndarray:
    """Membership scores from per-record losses: ``-loss`` (float64)."""
    return -np.asarray(loss, dtype=np.float64)


@MEMBERSHIP_ATTACKS.register("loss-threshold")
@dataclass(frozen=True, kw_only=True)
class LossThreshold(MembershipAttack):
    name = "loss-threshold"

    def score(self, target: Signals) -> np.ndarray:
        return loss_threshold_scores(target.loss)
