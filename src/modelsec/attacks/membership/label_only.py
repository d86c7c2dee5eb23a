"""The label-only membership attack, data-augmentation variant (Choquette-Choo, Tramer, Carlini & Papernot 2021,
"Label-Only Membership Inference Attacks").

Threat model: black-box with labels only (decision-based; :attr:`Capability.LABELS`). The attacker queries the
target on a record and on label-preserving transformations of it and sees only the predicted labels. A model is
more robust around its training records, so a member keeps its true label under more of the transformations: the
score is how many of the ``a`` queries (the record itself first) return the true label. Choquette-Choo et al. also
fit a threshold or a small classifier on the boolean vector; the count is its simplest, model-free form. Scores are
integers, so many records tie: the membership metrics count ties honestly (half), and no tie-breaking is added.

The attack declares its signal (:attr:`Signal.AUGMENTED_LABELS`, with the parameters of :meth:`LabelOnly.augmentation`);
the transformations and the queries that fill it are in :mod:`modelsec.attacks.membership.augmentation`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from modelsec.attacks.membership.augmentation import Augmentation
from modelsec.attacks.membership.base import MEMBERSHIP_ATTACKS, MembershipAttack, MembershipInputs
from modelsec.attacks.membership.signals import Signal, Signals
from modelsec.models.base import Classifier


@MEMBERSHIP_ATTACKS.register("label-only")
@dataclass(frozen=True, kw_only=True)
class LabelOnly(MembershipAttack):
    """Choquette-Choo et al.'s augmentation attack: the number of transformations that keep the true label.

    The hyper-parameters say how :attr:`Signals.augmented_correct` is filled (:meth:`augmentation`); the scores
    need that signal, with ``augmentations`` columns.

    Args:
        augmentations: queries per record, the record itself included.
        max_shift: the largest translation of an image, in pixels.
        noise_std: the Gaussian noise, as a fraction of the width of the input bounds (non-image inputs, and the
            image columns beyond the distinct shifts).

    >>> s = Signals(np.zeros((3, 2), np.float32), np.zeros(3, np.int64), np.zeros(3),
    ...             augmented_correct=np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=bool))
    >>> LabelOnly(augmentations=3)(MembershipInputs(s)).tolist()
    [2.0, 1.0, 3.0]
    """

    name = "label-only"
    signals = frozenset({Signal.AUGMENTED_LABELS})
    augmentations: int = 10
    max_shift: int = 1
    noise_std: float = 0.05

    def __post_init__(self) -> None:
        self.augmentation()  # validates the parameters

    def augmentation(self) -> Augmentation:
        return Augmentation(augmentations=self.augmentations, max_shift=self.max_shift, noise_std=self.noise_std)

    def augment(
        self, signals: Signals, classifier: Classifier, x: torch.Tensor | np.ndarray, *, generator: torch.Generator
    ) -> Signals:
        """``signals`` with this attack's signal filled by querying ``classifier`` on the records ``x``."""
        return self.augmentation().apply(signals, classifier, x, generator=generator)

    def score(self, inputs: MembershipInputs) -> np.ndarray:
        correct = inputs.target.augmented_correct
        assert correct is not None  # checked by the base class
        return np.asarray(correct, dtype=bool).sum(axis=1).astype(np.float64)
