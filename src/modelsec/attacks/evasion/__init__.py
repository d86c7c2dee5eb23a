"""Evasion attacks, registered by name in :data:`EVASION_ATTACKS`."""

from modelsec.attacks.evasion.apgd import APGD as APGD
from modelsec.attacks.evasion.apgd import APGDTargeted as APGDTargeted
from modelsec.attacks.evasion.cw import CarliniWagnerL2
from modelsec.attacks.evasion.deepfool import DeepFool
from modelsec.attacks.evasion.fgsm import FGSM
from modelsec.attacks.evasion.gradient import GradientAttack
from modelsec.attacks.evasion.hopskipjump import HopSkipJump
from modelsec.attacks.evasion.pgd import BIM, PGD
from modelsec.attacks.evasion.registry import EVASION_ATTACKS
from modelsec.attacks.evasion.square import Square

__all__ = [
    "BIM",
    "EVASION_ATTACKS",
    "FGSM",
    "PGD",
    "CarliniWagnerL2",
    "DeepFool",
    "GradientAttack",
    "HopSkipJump",
    "Square",
]
