"""Projected gradient descent (Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial
Attacks") and the basic iterative method (Kurakin et al. 2017, "Adversarial examples in the physical world").

Threat model: white-box (input gradients), untargeted, L-inf or L2 ball of radius eps inside the input bounds.
Defaults: 20 steps of 2.5 * eps / 20 from a random start, cross-entropy loss, one restart.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelsec.attacks.evasion.gradient import GradientAttack
from modelsec.attacks.evasion.registry import EVASION_ATTACKS


@EVASION_ATTACKS.register("pgd")
@dataclass(frozen=True, kw_only=True)
class PGD(GradientAttack):
    """PGD with a random start. ``PGD(steps=100, restarts=10)`` is a strong first-order evaluation."""

    name = "pgd"


@EVASION_ATTACKS.register("bim")
@dataclass(frozen=True, kw_only=True)
class BIM(GradientAttack):
    """The basic iterative method: PGD from the clean input (no random start), step eps / 10 by default."""

    name = "bim"
    random_start: bool = False
    rel_step_size: float | None = 0.1
