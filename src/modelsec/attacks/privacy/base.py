"""The membership-attack contract: score cached signals, higher = more likely a member."""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from modelsec.attacks.privacy.signals import Signals
from modelsec.registry import Registry


@dataclass(frozen=True, kw_only=True)
class MembershipAttack(abc.ABC):
    """A membership-inference attack over target signals. Subclasses are frozen keyword-only dataclasses."""

    name: ClassVar[str]

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @abc.abstractmethod
    def score(self, target: Signals) -> np.ndarray:
        """One membership score per record (float64, finite; higher = member)."""


MEMBERSHIP_ATTACKS: Registry[type[MembershipAttack]] = Registry("membership attack")
