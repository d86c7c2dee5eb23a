"""The fast gradient sign method (Goodfellow, Shlens & Szegedy 2015, "Explaining and Harnessing Adversarial
Examples"); for L2 it is the fast gradient method, one step of length eps along the normalised gradient.

Threat model: white-box (input gradients), untargeted, one step of size eps. A single-step attack: an
evaluation that finds FGSM stronger than PGD points at gradient masking (Carlini et al. 2019).
"""

from __future__ import annotations

from dataclasses import dataclass

from modelsec.attacks.evasion.gradient import GradientAttack
from modelsec.attacks.evasion.registry import EVASION_ATTACKS


@EVASION_ATTACKS.register("fgsm")
@dataclass(frozen=True, kw_only=True)
class FGSM(GradientAttack):
    name = "fgsm"
    steps: int = 1
    rel_step_size: float | None = 1.0
    random_start: bool = False
