"""The registry of evasion attacks (name -> class)."""

from __future__ import annotations

from modelsec.attacks.base import EvasionAttack
from modelsec.core.registry import Registry

EVASION_ATTACKS: Registry[type[EvasionAttack]] = Registry("evasion attack")
