"""Membership-inference attacks: pure scoring functions over cached per-record signals, and thin attack classes.

Importing this package registers every attack in :data:`MEMBERSHIP_ATTACKS`.
"""

from modelsec.attacks.membership.base import MEMBERSHIP_ATTACKS, MembershipAttack, MembershipInputs
from modelsec.attacks.membership.label_only import LabelOnly, augmentation_correct, with_augmentation
from modelsec.attacks.membership.lira import LiRAOffline, LiRAOnline
from modelsec.attacks.membership.metric import (
    ConfidenceThreshold,
    EntropyThreshold,
    LossThreshold,
    ModifiedEntropyThreshold,
)
from modelsec.attacks.membership.rmia import RMIAOffline, RMIAOnline
from modelsec.attacks.membership.shadow import ShadowModel
from modelsec.attacks.membership.signals import ReferenceSignals, Signals, compute_signals

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
