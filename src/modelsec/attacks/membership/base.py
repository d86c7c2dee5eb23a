"""The membership-attack contract: score cached signals, higher = more likely a member.

An attack never touches a model. It receives :class:`MembershipInputs` (the target's signals on a pool of
records and, for attacks that need them, reference models' signals on the same records) and returns one float64
score per record of the pool. The audit then reads off the scores of the candidate members and non-members, so a
second attack, or a re-run with cached reference signals, costs no forward pass.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from modelsec.attacks.membership.signals import ReferenceSignals, Signals
from modelsec.core.errors import ConfigError
from modelsec.core.registry import Registry
from modelsec.models.base import Capability


@dataclass(frozen=True)
class MembershipInputs:
    """What an attacker has: the target's signals on every record of a pool, optionally reference models'
    signals on the same records (``reference.inclusion`` is the membership matrix), and whether those reference
    models were trained online (on the candidate records too, each in half of them) or offline (never on them).
    """

    target: Signals
    reference: ReferenceSignals | None = None
    online: bool = False

    def __post_init__(self) -> None:
        if self.reference is not None and len(self.reference) != len(self.target):
            raise ValueError(f"reference signals cover {len(self.reference)} records, the target's {len(self.target)}")


@dataclass(frozen=True, kw_only=True)
class MembershipAttack(abc.ABC):
    """A membership-inference attack over cached signals. Subclasses are frozen keyword-only dataclasses that
    validate their hyper-parameters in ``__post_init__`` and declare what they need:

    - ``requires``: the least the target must expose (scores, or only labels);
    - ``needs_reference``: reference models' signals; ``needs_online``: reference models trained on the
      candidate records too (online attacks).
    """

    name: ClassVar[str]
    requires: ClassVar[Capability] = Capability.SCORES
    needs_reference: ClassVar[bool] = False
    needs_online: ClassVar[bool] = False

    @property
    def label(self) -> str:
        """The name reports use (subclasses add their variant)."""
        return self.name

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check_inputs(self, inputs: MembershipInputs) -> None:
        """Raise :class:`ConfigError` when ``inputs`` lack what this attack needs."""
        if self.needs_reference and inputs.reference is None:
            raise ConfigError(f"{self.label} needs reference models; set reference_models (--reference-models)")
        if self.needs_online and not inputs.online:
            raise ConfigError(
                f"{self.label} is an online attack: it needs reference models trained on the candidate records "
                "(reference_mode='online')"
            )

    def __call__(self, inputs: MembershipInputs) -> np.ndarray:
        """Scores for every record of the pool (float64; NaN only for a record the attack cannot judge, such as
        one without an OUT reference model)."""
        self.check_inputs(inputs)
        scores = np.asarray(self.score(inputs), dtype=np.float64)
        if scores.shape != (len(inputs.target),):
            raise RuntimeError(f"{self.label} returned scores of shape {scores.shape} for {len(inputs.target)} records")
        if np.isinf(scores).any():
            raise RuntimeError(f"{self.label} returned infinite scores")
        return scores

    @abc.abstractmethod
    def score(self, inputs: MembershipInputs) -> np.ndarray:
        """One membership score per record of ``inputs.target`` (higher = member; NaN where it cannot judge)."""


MEMBERSHIP_ATTACKS: Registry[type[MembershipAttack]] = Registry("membership attack")
