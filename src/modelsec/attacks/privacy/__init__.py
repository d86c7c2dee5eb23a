"""Membership-inference attacks: pure scoring functions over cached per-record signals, and thin attack classes.

Importing this package registers every attack in :data:`MEMBERSHIP_ATTACKS`.
"""

from modelsec.attacks.privacy.base import MEMBERSHIP_ATTACKS, MembershipAttack, MembershipInputs
from modelsec.attacks.privacy.label_only import LabelOnly, augmentation_correct, with_augmentation
from modelsec.attacks.privacy.lira import LiRAOffline, LiRAOnline
from modelsec.attacks.privacy.metric import (
    ConfidenceThreshold,
    EntropyThreshold,
    LossThreshold,
    ModifiedEntropyThreshold,
)
from modelsec.attacks.privacy.rmia import RMIAOffline, RMIAOnline
from modelsec.attacks.privacy.shadow import ShadowModel
from modelsec.attacks.privacy.signals import ReferenceSignals, Signals, compute_signals

__all__ = [
    "MEMBERSHIP_ATTACKS",
    "ConfidenceThreshold",
    "EntropyThreshold",
    "LabelOnly",
    "LiRAOffline",
    "LiRAOnline",
    "LossThreshold",
    "MembershipAttack",
    "MembershipInputs",
    "ModifiedEntropyThreshold",
    "RMIAOffline",
    "RMIAOnline",
    "ReferenceSignals",
    "ShadowModel",
    "Signals",
    "augmentation_correct",
    "compute_signals",
    "with_augmentation",
]
