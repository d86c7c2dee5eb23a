"""``standard``: plain training, no defense: the baseline every hardened model is compared with, made the same way
(same loop, same knobs, same files and provenance) so that a comparison differs only in the defense."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from modelsec.defenses.base import DEFENSES, Defense, DefenseConfig, Guarantees


@dataclass(frozen=True, kw_only=True)
class StandardConfig(DefenseConfig):
    """Only the shared training knobs (Adam, cross-entropy on clean mini-batches)."""

    defense_name: ClassVar[str] = "standard"


@DEFENSES.register("standard")
class Standard(Defense):
    """Standard training (empirical risk minimisation on clean data). Threat model: none."""

    name = "standard"
    config_class = StandardConfig

    def guarantees(self) -> Guarantees:
        return Guarantees(
            kind="none",
            summary="no defense: standard training; no robustness or privacy guarantee",
        )
