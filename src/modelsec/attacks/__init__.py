"""Attacks: evasion (adversarial examples) and privacy (membership inference)."""

from modelsec.attacks.ball import Ball
from modelsec.attacks.base import AttackBatch, EvasionAttack, EvasionResult, ThreatModel

__all__ = ["AttackBatch", "Ball", "EvasionAttack", "EvasionResult", "ThreatModel"]
