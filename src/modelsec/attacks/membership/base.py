"""The membership-attack contract: score cached signals, higher = more likely a member.

An attack never touches a model. It declares the signals it scores (:attr:`MembershipAttack.signals`), receives
them as :class:`MembershipInputs` (the target's signals on a pool of records and, for attacks that need them,
reference models' signals on the same records) and returns one float64 score per record of the pool. The audit
computes what its attacks declare (:func:`target_signals` for the target's part), then reads off the scores of the
candidate members and non-members, so a second attack, or a re-run with cached reference signals, costs no forward
pass.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from modelsec.attacks.membership.augmentation import Augmentation
from modelsec.attacks.membership.signals import ReferenceSignals, Signal, Signals, compute_signals
from modelsec.core.errors import ConfigError
from modelsec.core.progress import NullProgress, Progress
from modelsec.core.registry import Registry
from modelsec.data.dataset import Dataset
from modelsec.models.base import Capability, Classifier

Statistic = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""A per-record statistic of logits ``(..., n, classes)`` and labels ``(n,)`` (a scaled logit, a log-probability)."""


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

    def target_and_reference(self, statistic: Statistic) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What an attack with reference models compares: ``statistic(logits, labels)`` on the target's signals
        (``(n, ...)``) and on every reference model's (``(models, n, ...)``), and the membership matrix
        ``(models, n)``."""
        ref = self.reference
        if ref is None:  # the attacks' check_inputs refuse this before scoring
            raise ValueError("no reference signals to compare with")
        t = self.target
        return statistic(t.logits, t.labels), statistic(ref.logits, ref.labels), np.asarray(ref.inclusion, dtype=bool)


@dataclass(frozen=True, kw_only=True)
class MembershipAttack(abc.ABC):
    """A membership-inference attack over cached signals. Subclasses are frozen keyword-only dataclasses that
    validate their hyper-parameters in ``__post_init__`` and declare the signals they score in ``signals``
    (:class:`~modelsec.attacks.membership.signals.Signal`; an attack that scores ``AUGMENTED_LABELS`` also says
    which augmentations in :meth:`augmentation`). From ``signals`` every subclass gets:

    - ``requires``: the least the target must expose (scores, or only labels);
    - ``needs_reference``: reference models' signals; ``needs_online``: reference models trained on the
      candidate records too (online attacks).
    """

    name: ClassVar[str]
    signals: ClassVar[frozenset[Signal]] = frozenset({Signal.TARGET_SCORES})
    requires: ClassVar[Capability] = Capability.SCORES
    needs_reference: ClassVar[bool] = False
    needs_online: ClassVar[bool] = False
    test_params: ClassVar[dict[str, Any]] = {}  # small settings for the conformance tests

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.requires = max(s.capability for s in cls.signals)
        cls.needs_reference = bool(cls.signals & {Signal.REFERENCE, Signal.ONLINE_REFERENCE})
        cls.needs_online = Signal.ONLINE_REFERENCE in cls.signals

    def augmentation(self) -> Augmentation | None:
        """The augmented copies whose labels the attack scores (:attr:`Signal.AUGMENTED_LABELS`); ``None`` for an
        attack that scores none."""
        return None

    @property
    def label(self) -> str:
        """The name reports use (subclasses add their variant)."""
        return self.name

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check_inputs(self, inputs: MembershipInputs) -> None:
        """Raise :class:`ConfigError` when ``inputs`` lack a signal this attack declares."""
        if Signal.AUGMENTED_LABELS in self.signals:
            augmentation = self.augmentation()
            if augmentation is None:  # a bug in the attack class
                raise TypeError(f"{self.label} declares augmented labels but its augmentation() gives none")
            correct = inputs.target.augmented_correct
            if correct is None:
                raise ConfigError(
                    f"{self.label} needs the target's predictions on augmented records (Signals.augmented_correct); "
                    "fill them with modelsec.attacks.membership.target_signals or the attack's augmentation().apply"
                )
            if correct.ndim != 2 or correct.shape[1] != augmentation.augmentations:
                raise ConfigError(
                    f"{self.label}: augmented_correct has shape {correct.shape}, expected "
                    f"(n, {augmentation.augmentations}); fill it with the same augmentations as the attack"
                )
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


def target_signals(
    attacks: Iterable[MembershipAttack],
    classifier: Classifier,
    records: Dataset,
    *,
    generator: torch.Generator,
    progress: Progress | None = None,
) -> Signals:
    """The target's signals on ``records`` with everything ``attacks`` declare: its scores (one query per record),
    and the labels of the augmented copies that attacks scoring :attr:`Signal.AUGMENTED_LABELS` ask for (their
    random choices from ``generator``). Attacks that need different augmentations cannot share one pool."""
    progress = progress or NullProgress()
    with progress.task("membership signals", total=1) as advance:
        target = compute_signals(classifier, records)
        advance(1)
    augmentations = {a.augmentation() for a in attacks if Signal.AUGMENTED_LABELS in a.signals}
    if len(augmentations) > 1:
        raise ConfigError(f"membership attacks that need different augmentations cannot run together: {augmentations}")
    for augmentation in augmentations:
        if augmentation is None:  # a bug in the attack class
            raise TypeError("an attack declares augmented labels but its augmentation() gives none")
        with progress.task("label-only augmentations", total=1) as advance:
            target = augmentation.apply(target, classifier, records.x, generator=generator)
            advance(1)
    return target
