"""Attacks: evasion (adversarial examples) and privacy (membership inference)."""

from modelsec.attacks.base import EvasionAttack, EvasionResult, ThreatModel

__all__ = ["EvasionAttack", "EvasionResult", "ThreatModel"]
