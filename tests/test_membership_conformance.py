"""Conformance of every registered membership attack, driven by the registry and by the signals each declares.

For every attack in :data:`MEMBERSHIP_ATTACKS` (a new one is tested by registering it): on synthetic signals of the
right shape (what its ``signals`` declare: the target's scores, its labels on augmented copies, reference models
online or offline) it returns one float64 score per record, ranks members above non-members on an easy separable
case for several seeds (members are the positive class), gives the same scores for the same inputs, and refuses
inputs that lack a declared signal with a :class:`ConfigError` that names it. :func:`target_signals`, which the
audit uses, computes exactly what the declared signals ask of the target.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from modelsec.attacks.membership import (
    MEMBERSHIP_ATTACKS,
    Augmentation,
    MembershipAttack,
    MembershipInputs,
    ReferenceSignals,
    Signal,
    Signals,
    target_signals,
)
from modelsec.attacks.membership.signals import cross_entropy
from modelsec.core.errors import ConfigError
from modelsec.core.seeding import generator
from modelsec.data.dataset import Dataset
from modelsec.models.base import Capability, Classifier
from modelsec.stats.metrics import auc

CLASSES = 4
CANDIDATES = 200  # the first records of the pool: half of them members of the target
POPULATION = 200  # records the target never saw (offline reference models train on them)
MODELS = 8


def attack_of(name: str) -> MembershipAttack:
    cls = MEMBERSHIP_ATTACKS.get(name)
    return cls(**cls.test_params)


def _logits(rng: np.random.Generator, labels: np.ndarray, hardness: np.ndarray, member: np.ndarray) -> np.ndarray:
    """Logits whose true-class margin is ``1 - hardness``, plus 4 where ``member`` (``(..., n)``), plus noise:
    a record's difficulty is shared by every model, training on it raises its margin far beyond the noise."""
    z = rng.normal(0.0, 1.0, (*member.shape, CLASSES))
    boost = 1.0 - hardness + 4.0 * member + rng.normal(0.0, 0.3, member.shape)
    y = np.broadcast_to(labels, member.shape)
    np.put_along_axis(z, y[..., None], np.take_along_axis(z, y[..., None], -1) + boost[..., None], -1)
    return z.astype(np.float32)


def synthetic_inputs(attack: MembershipAttack, seed: int) -> tuple[MembershipInputs, np.ndarray]:
    """The signals ``attack`` declares, on an easy case; returns them and which candidates are members."""
    rng = np.random.default_rng(seed)
    n = CANDIDATES + POPULATION
    labels = rng.integers(0, CLASSES, n)
    hardness = rng.normal(0.0, 1.0, n)
    member = np.zeros(n, dtype=bool)
    member[rng.permutation(CANDIDATES)[: CANDIDATES // 2]] = True
    logits = _logits(rng, labels, hardness, member)
    augmented = None
    augmentation = attack.augmentation()
    if augmentation is not None:  # a member keeps its label under every copy, a non-member under about half
        augmented = member[:, None] | (rng.random((n, augmentation.augmentations)) < 0.5)
        augmented[:, 0] = True
    target = Signals(logits, labels, cross_entropy(logits, labels), augmented)
    reference = None
    online = Signal.ONLINE_REFERENCE in attack.signals
    if attack.needs_reference:  # each record IN half of the models; offline: the candidates OUT of all of them
        inclusion = rng.random((MODELS, n)).argsort(0).argsort(0) < MODELS // 2
        if not online:
            inclusion[:, :CANDIDATES] = False
        reference = ReferenceSignals(_logits(rng, labels, hardness, inclusion), inclusion, labels)
    return MembershipInputs(target, reference, online=online), member[:CANDIDATES]


@pytest.mark.parametrize("name", MEMBERSHIP_ATTACKS.names())
def test_every_attack_scores_members_higher_with_fixed_shaped_reproducible_scores(name: str) -> None:
    attack = attack_of(name)
    for seed in (0, 1, 2):
        inputs, member = synthetic_inputs(attack, seed)
        scores = attack(inputs)
        assert scores.shape == (CANDIDATES + POPULATION,) and scores.dtype == np.float64
        candidates = scores[:CANDIDATES]
        assert np.isfinite(candidates).all()
        assert auc(candidates[member], candidates[~member]) > 0.9, (name, seed)
        assert np.array_equal(attack(inputs), scores, equal_nan=True)  # same inputs, same scores
        assert np.array_equal(attack_of(name)(inputs), scores, equal_nan=True)


@pytest.mark.parametrize("name", MEMBERSHIP_ATTACKS.names())
def test_every_attack_declares_consistent_signals(name: str) -> None:
    """What the class declares agrees with itself: the capability, the reference flags and the augmentation follow
    from ``signals``, and it reads something of the target."""
    attack = attack_of(name)
    signals = type(attack).signals
    assert signals & {Signal.TARGET_SCORES, Signal.AUGMENTED_LABELS}
    assert (attack.augmentation() is not None) == (Signal.AUGMENTED_LABELS in signals)
    assert attack.requires == (Capability.SCORES if Signal.TARGET_SCORES in signals else Capability.LABELS)
    assert attack.needs_reference == bool(signals & {Signal.REFERENCE, Signal.ONLINE_REFERENCE})
    assert attack.needs_online == (Signal.ONLINE_REFERENCE in signals)


@pytest.mark.parametrize("name", MEMBERSHIP_ATTACKS.names())
def test_every_attack_refuses_inputs_without_a_signal_it_declares(name: str) -> None:
    attack = attack_of(name)
    inputs, _ = synthetic_inputs(attack, 0)
    missing: list[tuple[MembershipInputs, str]] = []
    if Signal.AUGMENTED_LABELS in attack.signals:
        target = inputs.target
        missing.append(
            (dataclasses.replace(inputs, target=dataclasses.replace(target, augmented_correct=None)), "augmented")
        )
        assert target.augmented_correct is not None
        fewer = dataclasses.replace(target, augmented_correct=target.augmented_correct[:, :-1])
        missing.append((dataclasses.replace(inputs, target=fewer), "expected"))
    if attack.needs_reference:
        missing.append((MembershipInputs(inputs.target), "reference models"))
    if attack.needs_online:
        missing.append((dataclasses.replace(inputs, online=False), "online"))
    for incomplete, message in missing:
        with pytest.raises(ConfigError, match=message):
            attack(incomplete)
    if not missing:  # it needs only the target's scores, which every input has
        assert attack.signals == frozenset({Signal.TARGET_SCORES})


# -- what the audit computes for the chosen attacks -------------------------------------------------------------


class Threshold(nn.Module):
    """Two classes: class 1 where the first feature exceeds 0.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x[:, 0] - 0.5
        return torch.stack([torch.zeros_like(z), z], dim=1)


def records(n: int = 30) -> Dataset:
    x = torch.rand((n, 3), generator=generator(0)).numpy()
    return Dataset(name="r", x=x, y=(x[:, 0] > 0.5).astype(np.int64), num_classes=2, bounds=(0.0, 1.0))


@pytest.mark.parametrize("name", MEMBERSHIP_ATTACKS.names())
def test_target_signals_computes_what_each_attack_declares(name: str) -> None:
    attack = attack_of(name)
    data = records()
    clf = Classifier(Threshold(), input_shape=(3,), num_classes=2)
    signals = target_signals([attack], clf, data, generator=generator(0))
    assert signals.logits.shape == (len(data), 2) and np.array_equal(signals.labels, data.y)
    augmentation = attack.augmentation()
    if augmentation is None:
        assert signals.augmented_correct is None and clf.queries == len(data)
    else:  # its copies, asked once per record and copy (the first copy is the record itself)
        assert signals.augmented_correct is not None
        assert signals.augmented_correct.shape == (len(data), augmentation.augmentations)
        assert np.array_equal(signals.augmented_correct[:, 0], signals.predictions == data.y)
        assert clf.queries == len(data) * (1 + augmentation.augmentations)
    again = target_signals(
        [attack], Classifier(Threshold(), input_shape=(3,), num_classes=2), data, generator=generator(0)
    )
    assert np.array_equal(again.logits, signals.logits)
    if augmentation is not None:
        assert np.array_equal(again.augmented_correct, signals.augmented_correct)  # type: ignore[arg-type]


def test_attacks_that_need_different_augmentations_cannot_share_a_pool() -> None:
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Wider(MembershipAttack):
        name = "wider"
        signals = frozenset({Signal.AUGMENTED_LABELS})

        def augmentation(self) -> Augmentation:
            return Augmentation(augmentations=3)

        def score(self, inputs: MembershipInputs) -> np.ndarray:
            return np.zeros(len(inputs.target))

    clf = Classifier(Threshold(), input_shape=(3,), num_classes=2)
    same = target_signals([Wider(), Wider()], clf, records(), generator=generator(0))
    assert same.augmented_correct is not None and same.augmented_correct.shape[1] == 3
    with pytest.raises(ConfigError, match="different augmentations"):
        target_signals([Wider(), attack_of("label-only")], clf, records(), generator=generator(0))
