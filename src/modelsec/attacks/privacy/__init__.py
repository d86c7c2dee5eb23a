"""Membership-inference attacks: pure scoring functions over cached per-record signals."""

from modelsec.attacks.privacy.base import MEMBERSHIP_ATTACKS, MembershipAttack
from modelsec.attacks.privacy.loss_threshold import LossThreshold
from modelsec.attacks.privacy.signals import Signals, compute_signals

__all__ = ["MEMBERSHIP_ATTACKS", "LossThreshold", "MembershipAttack", "Signals", "compute_signals"]
