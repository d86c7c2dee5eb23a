"""Membership-inference attacks: pure scoring functions over cached per-record signals, and thin attack classes.

Importing this package registers every attack in :data:`MEMBERSHIP_ATTACKS`.
"""

from modelsec.attacks.membership.augmentation import Augmentation, augmentation_correct, with_augmentation
from modelsec.attacks.membership.base import MEMBERSHIP_ATTACKS, MembershipAttack, MembershipInputs, target_signals
from modelsec.attacks.membership.label_only import LabelOnly
from modelsec.attacks.membership.lira import LiRAOffline, LiRAOnline
from modelsec.attacks.membership.metric import (
    ConfidenceThreshold,
    EntropyThreshold,
    LossThreshold,
    ModifiedEntropyThreshold,
)
from modelsec.attacks.membership.rmia import RMIAOffline, RMIAOnline
from modelsec.attacks.membership.shadow import ShadowModel
from modelsec.attacks.membership.signals import ReferenceSignals, Signal, Signals, compute_signals

__all__ = [
    "MEMBERSHIP_ATTACKS",
    "Augmentation",
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
    "Signal",
    "Signals",
    "augmentation_correct",
    "compute_signals",
    "target_signals",
    "with_augmentation",
]
