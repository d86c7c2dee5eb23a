"""The shadow-model attack (Shokri et al. 2017) on synthetic reference signals, and the label-only augmentation attack
(Choquette-Choo et al. 2021) on tiny hand-checkable classifiers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from modelsec.attacks.membership import (
    MEMBERSHIP_ATTACKS,
    LabelOnly,
    MembershipInputs,
    ReferenceSignals,
    ShadowModel,
    Signals,
    augmentation_correct,
    with_augmentation,
)
from modelsec.attacks.membership.augmentation import translate, translation_offsets
from modelsec.attacks.membership.shadow import shadow_features
from modelsec.attacks.membership.signals import cross_entropy
from modelsec.core.errors import ConfigError, DataError
from modelsec.models.base import Capability, Classifier
from modelsec.stats.metrics import auc

pytestmark = pytest.mark.numerics  # rerun by `make test-numerics` under another CPU configuration

# -- shadow: a synthetic problem -------------------------------------------------------------------------------------

CLASSES = 3


def _logits(rng: np.random.Generator, labels: np.ndarray, hardness: np.ndarray, member: np.ndarray, delta: float):
    """Logits whose true-class margin is ``1 - hardness (+ delta for members)`` plus noise; ``member`` is
    ``(..., n)``."""
    z = rng.normal(0.0, 1.0, (*member.shape, CLASSES))
    boost = 1.0 - hardness + delta * member + rng.normal(0.0, 0.5, member.shape)
    y = np.broadcast_to(labels, member.shape)
    np.put_along_axis(z, y[..., None], np.take_along_axis(z, y[..., None], -1) + boost[..., None], -1)
    return z.astype(np.float32)


def synthetic(
    *, candidates: int = 600, population: int = 600, models: int = 8, delta: float = 3.0, online: bool, seed: int = 0
) -> tuple[MembershipInputs, np.ndarray]:
    """A pool of candidates (the first ``candidates`` records, half of them members of the target) and population
    records. Online: every record IN half of the reference models; offline: candidates OUT of all of them.
    Returns the inputs and the target's membership of the candidates."""
    rng = np.random.default_rng(seed)
    n = candidates + population
    labels = rng.integers(0, CLASSES, n)
    hardness = rng.normal(0.0, 1.5, n)
    ranks = rng.random((models, n)).argsort(0).argsort(0)
    inclusion = ranks < models // 2 if models > 1 else rng.random((1, n)) < 0.5
    if not online:
        inclusion[:, :candidates] = False
    target_member = np.zeros(n, dtype=bool)
    target_member[:candidates] = rng.random(candidates) < 0.5
    ref = ReferenceSignals(_logits(rng, labels, hardness, inclusion, delta), inclusion, labels)
    t_logits = _logits(rng, labels, hardness, target_member, delta)
    target = Signals(t_logits, labels, cross_entropy(t_logits, labels))
    return MembershipInputs(target, ref, online=online), target_member[:candidates]


def candidate_auc(scores: np.ndarray, member: np.ndarray) -> float:
    s = scores[: member.size]
    return auc(s[member], s[~member])


@pytest.mark.parametrize("online", [True, False])
@pytest.mark.parametrize(
    "params",
    [{}, {"per_class": True}, {"model": "gradient-boosting"}],
    ids=["logistic", "per-class", "gradient-boosting"],
)
def test_shadow_separates_members(online: bool, params: dict) -> None:
    inputs, member = synthetic(online=online)
    scores = ShadowModel(**params)(inputs)
    assert scores.dtype == np.float64 and scores.shape == (len(inputs.target),)
    # a global threshold on the loss is about the best a model-agnostic rule can do here (the membership boost is
    # on the true-class margin): the shadow attack must learn about as much
    loss_auc = candidate_auc(-inputs.target.loss, member)
    assert candidate_auc(scores, member) > max(0.75, loss_auc - 0.02)


@pytest.mark.parametrize("online", [True, False])
def test_shadow_without_signal_is_chance(online: bool) -> None:
    inputs, member = synthetic(online=online, delta=0.0, candidates=1200, seed=1)
    assert abs(candidate_auc(ShadowModel()(inputs), member) - 0.5) < 0.07


def test_shadow_single_offline_model() -> None:
    """One reference model: every record it could train on is IN it, so OUT examples come from the others."""
    inputs, member = synthetic(online=False, models=1)
    assert candidate_auc(ShadowModel()(inputs), member) > 0.75


def test_shadow_deterministic_with_seed() -> None:
    inputs, _ = synthetic(online=True)
    for params in ({"seed": 3}, {"seed": 3, "model": "gradient-boosting", "max_examples": 2000}):
        assert np.array_equal(ShadowModel(**params)(inputs), ShadowModel(**params)(inputs))


def test_shadow_saturated_logits_stay_distinct() -> None:
    inputs, _ = synthetic(online=True, candidates=200, population=200, models=4)
    sat = np.zeros((3, CLASSES), dtype=np.float32)
    sat[:, 0] = [60.0, 70.0, 80.0]
    labels = np.zeros(3, dtype=np.int64)
    assert np.array_equal(np.asarray(sat, np.float64).max(1), [60.0, 70.0, 80.0])  # float32 softmax would be 1.0
    target = Signals(sat, labels, cross_entropy(sat, labels))
    ref = inputs.reference
    assert ref is not None
    ref3 = ReferenceSignals(ref.logits[:, :3], ref.inclusion[:, :3], labels)
    # train on the full synthetic pool, score the saturated records: put them at the end of the pool
    pool_target = Signals(
        np.concatenate([inputs.target.logits, sat]),
        np.concatenate([inputs.target.labels, labels]),
        np.concatenate([inputs.target.loss, target.loss]),
    )
    pool_ref = ReferenceSignals(
        np.concatenate([ref.logits, ref3.logits], axis=1),
        np.concatenate([ref.inclusion, ref3.inclusion], axis=1),
        np.concatenate([ref.labels, labels]),
    )
    for params in ({}, {"per_class": True, "min_class_examples": 10}):
        scores = ShadowModel(**params)(MembershipInputs(pool_target, pool_ref, online=True))[-3:]
        assert np.isfinite(scores).all() and np.unique(scores).size == 3


def test_shadow_features_log_space() -> None:
    z = np.array([[[60.0, 0.0, 0.0], [1.0, 2.0, 0.0]]])  # (models=1, n=2, classes)
    f = shadow_features(z, np.array([0, 1]), top_k=5)
    assert f.shape == (1, 2, 2 + CLASSES)  # top_k capped by the classes
    p = np.exp(z[0, 1]) / np.exp(z[0, 1]).sum()
    np.testing.assert_allclose(f[0, 1], [np.log(p[1] / (1 - p[1])), -(p * np.log(p)).sum(), *np.sort(np.log(p))[::-1]])
    assert f[0, 0, 0] == pytest.approx(60.0 - np.log(2.0)) and f[0, 0, 1] > 0.0


def test_shadow_per_class_falls_back_to_global() -> None:
    inputs, _ = synthetic(online=True)
    base = ShadowModel()(inputs)
    assert np.array_equal(ShadowModel(per_class=True, min_class_examples=10**9)(inputs), base)
    per = ShadowModel(per_class=True)(inputs)
    labels = inputs.target.labels
    assert all(not np.allclose(per[labels == c], base[labels == c]) for c in range(CLASSES))
    # a rare class (too few examples) keeps the global model's scores; the others get their own
    ref = inputs.reference
    assert ref is not None
    rare_labels = labels.copy()
    rare_labels[rare_labels == 2] = 0
    rare_labels[:3] = 2
    rare = MembershipInputs(
        Signals(inputs.target.logits, rare_labels, inputs.target.loss),
        ReferenceSignals(ref.logits, ref.inclusion, rare_labels),
        online=True,
    )
    base, per = ShadowModel()(rare), ShadowModel(per_class=True)(rare)
    assert np.array_equal(per[rare_labels == 2], base[rare_labels == 2])
    assert not np.allclose(per[rare_labels == 0], base[rare_labels == 0])


def test_shadow_errors() -> None:
    inputs, _ = synthetic(online=True, candidates=50, population=50, models=2)
    with pytest.raises(ConfigError, match="reference"):
        ShadowModel()(MembershipInputs(inputs.target))
    ref = inputs.reference
    assert ref is not None
    none_in = ReferenceSignals(ref.logits, np.zeros_like(ref.inclusion), ref.labels)
    with pytest.raises(ConfigError, match="IN and"):
        ShadowModel()(MembershipInputs(inputs.target, none_in))
    for bad in ({"model": "svm"}, {"top_k": 0}, {"min_class_examples": 0}, {"max_examples": 1}):
        with pytest.raises(ConfigError):
            ShadowModel(**bad)


def test_registered() -> None:
    assert MEMBERSHIP_ATTACKS.get("shadow") is ShadowModel and MEMBERSHIP_ATTACKS.get("label-only") is LabelOnly
    assert ShadowModel.needs_reference and not ShadowModel.needs_online and ShadowModel.requires is Capability.SCORES
    assert LabelOnly.requires is Capability.LABELS and not LabelOnly.needs_reference
    assert ShadowModel(per_class=True).label == "shadow (per-class)"


# -- label-only ------------------------------------------------------------------------------------------------------


class PixelRule(nn.Module):
    """Class 1 where ``sign * (x[c, i, j] - threshold) > 0``: a linear model that reads one pixel."""

    def __init__(self, pixel: tuple[int, ...], threshold: float, sign: float = 1.0) -> None:
        super().__init__()
        self.pixel, self.threshold, self.sign = pixel, threshold, sign

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.sign * (x[(slice(None), *self.pixel)] - self.threshold)
        return torch.stack([torch.zeros_like(z), z], dim=1)


class LabelsOnly(Classifier):
    """A classifier whose scores are off limits: only ``predict`` answers."""

    def predict_logits(self, x, batch_size=None):  # type: ignore[no-untyped-def]
        raise AssertionError("a label-only attack asked for scores")

    def predict(self, x, batch_size=None):  # type: ignore[no-untyped-def]
        return super().predict_logits(x, batch_size).argmax(dim=1)


def image_classifier(rule: PixelRule, bounds=(0.0, 1.0), cls: type[Classifier] = Classifier) -> Classifier:
    return cls(rule, input_shape=(2, 4, 4), num_classes=2, bounds=bounds, capability=Capability.LABELS)


def images(*bright: list[tuple[int, int, int]], value: float = 1.0) -> torch.Tensor:
    x = torch.zeros(len(bright), 2, 4, 4)
    for r, pixels in enumerate(bright):
        for p in pixels:
            x[(r, *p)] = value
    return x


T, F = True, False


def test_translation_order_and_translate() -> None:
    assert translation_offsets(0) == [(0, 0)]
    assert len(translation_offsets(2)) == 25 and translation_offsets(2)[:5] == translation_offsets(1)[:5]
    x = torch.arange(32.0).reshape(1, 2, 4, 4)
    out = translate(x, 1, -1, fill=-5.0)
    assert torch.equal(out[0, :, 1:, :3], x[0, :, :3, 1:])
    assert (out[0, :, 0, :] == -5).all() and (out[0, :, :, 3] == -5).all()
    assert (translate(x, 4, 0, fill=0.0) == 0).all()


def test_augmentation_correct_images_hand_computed() -> None:
    """Class 1 iff pixel (0, 1, 1) > 0.5; a shift (dy, dx) puts the old pixel (1 - dy, 1 - dx) there. Columns:
    (0,0) (-1,0) (0,-1) (0,1) (1,0) (-1,-1) (-1,1) (1,-1) (1,1)."""
    clf = image_classifier(PixelRule((0, 1, 1), 0.5))
    x = images([(0, 1, 1)], [(0, 1, 1), (0, 1, 2)], [(0, 0, 1)], [(1, 1, 1)], [(0, 2, 2)])
    y = torch.tensor([1, 1, 0, 0, 0])
    x_before = x.clone()
    got = augmentation_correct(clf, x, y, augmentations=9, generator=torch.Generator().manual_seed(0))
    expected = np.array(
        [
            [T, F, F, F, F, F, F, F, F],  # only the unshifted image keeps the bright pixel at (1, 1)
            [T, F, T, F, F, F, F, F, F],  # (0, -1) brings (1, 2) there
            [T, T, T, T, F, T, T, T, T],  # (1, 0) brings (0, 1) there: predicted 1, wrong
            [T] * 9,  # channel 1 is never read
            [T, T, T, T, T, F, T, T, T],  # (-1, -1) brings (2, 2) there
        ]
    )
    assert got.dtype == bool and np.array_equal(got, expected)
    assert torch.equal(x, x_before) and clf.queries == 5 * 9
    assert np.array_equal(
        augmentation_correct(clf, x, y, augmentations=3, generator=torch.Generator()), expected[:, :3]
    )


def test_augmentation_pads_with_lower_bound() -> None:
    """Bounds (-1, 1); class 1 iff pixel (0, 0, 0) < -0.5: a zero image is class 0 until a shift down or right
    fills that pixel with the lower bound."""
    clf = image_classifier(PixelRule((0, 0, 0), -0.5, sign=-1.0), bounds=(-1.0, 1.0))
    got = augmentation_correct(
        clf, torch.zeros(1, 2, 4, 4), torch.tensor([0]), augmentations=9, generator=torch.Generator()
    )
    assert got.tolist() == [[T, T, T, F, F, T, F, F, F]]


def test_augmentation_extra_columns_random_and_seeded() -> None:
    clf = image_classifier(PixelRule((0, 1, 1), 0.5))
    x = images([(0, 1, 1)], [(1, 1, 1)], [(0, 1, 1), (0, 0, 1), (0, 1, 0), (0, 1, 2), (0, 2, 1)])
    y = torch.tensor([1, 0, 1])
    runs = [
        augmentation_correct(clf, x, y, augmentations=40, noise_std=0.0, generator=torch.Generator().manual_seed(s))
        for s in (7, 7, 8)
    ]
    assert runs[0].shape == (3, 40) and np.array_equal(runs[0], runs[1]) and not np.array_equal(runs[0], runs[2])
    extra = runs[0][:, 9:]
    assert extra[1].all()  # never read channel: always correct
    assert 0 < extra[0].sum() < 31 and extra[2].sum() > extra[0].sum()  # random shifts: (0, 0) only vs the cross
    noisy = augmentation_correct(clf, x, y, augmentations=40, noise_std=0.3, generator=torch.Generator().manual_seed(7))
    assert np.array_equal(noisy[:, :9], runs[0][:, :9])  # the distinct shifts take no noise


def test_augmentation_tabular_noise_clipped_to_bounds() -> None:
    """1-D inputs in [0, 1], class 1 iff x > 0.5: far from the threshold, small noise changes nothing; noise that
    would cross the bounds is clipped (class 1 iff x > 1 never fires, class 1 iff x < 0 neither)."""
    threshold = Classifier(PixelRule((0,), 0.5), input_shape=(1,), num_classes=2, capability=Capability.LABELS)
    x = torch.tensor([[0.1], [0.9], [0.9], [0.45]])
    y = torch.tensor([0, 1, 0, 0])
    got = augmentation_correct(threshold, x, y, augmentations=6, noise_std=0.01, generator=torch.Generator())
    assert got[:3].tolist() == [[T] * 6, [T] * 6, [F] * 6] and got[3, 0]
    flat = augmentation_correct(threshold, x, y, augmentations=4, noise_std=0.0, generator=torch.Generator())
    assert np.array_equal(flat, np.repeat(flat[:, :1], 4, axis=1))
    for rule, edge in ((PixelRule((0,), 1.0), 1.0), (PixelRule((0,), 0.0, sign=-1.0), 0.0)):
        clf = Classifier(rule, input_shape=(1,), num_classes=2)
        got = augmentation_correct(
            clf, torch.full((50, 1), edge), torch.zeros(50), noise_std=0.5, generator=torch.Generator().manual_seed(1)
        )
        assert got.all()


def test_label_only_uses_labels_only_and_scores_counts() -> None:
    clf = image_classifier(PixelRule((0, 1, 1), 0.5), cls=LabelsOnly)
    x = images([(0, 1, 1)], [(0, 1, 1), (0, 1, 2)], [(1, 1, 1)])
    labels = np.array([1, 1, 0])
    signals = Signals(np.zeros((3, 2), np.float32), labels, np.zeros(3))
    attack = LabelOnly(augmentations=5)
    filled = attack.augment(signals, clf, x, generator=torch.Generator().manual_seed(0))
    assert filled.augmented_correct is not None and signals.augmented_correct is None
    assert filled.augmented_correct.tolist() == [[T, F, F, F, F], [T, F, T, F, F], [T] * 5]
    scores = attack(MembershipInputs(filled))
    assert scores.dtype == np.float64 and scores.tolist() == [1.0, 2.0, 5.0]
    direct = with_augmentation(signals, clf, x, augmentations=5, generator=torch.Generator())
    assert np.array_equal(direct.augmented_correct, filled.augmented_correct)  # type: ignore[arg-type]


def test_label_only_scores_are_counts_with_ties() -> None:
    rng = np.random.default_rng(0)
    correct = rng.random((200, 10)) < 0.6
    signals = Signals(np.zeros((200, 2), np.float32), np.zeros(200, np.int64), np.zeros(200), correct)
    scores = LabelOnly()(MembershipInputs(signals))
    assert np.array_equal(scores, correct.sum(1).astype(np.float64))
    assert np.unique(scores).size < 11  # ties stay ties


def test_label_only_errors() -> None:
    signals = Signals(np.zeros((2, 2), np.float32), np.zeros(2, np.int64), np.zeros(2))
    with pytest.raises(ConfigError, match="augmented_correct"):
        LabelOnly()(MembershipInputs(signals))
    wrong = Signals(signals.logits, signals.labels, signals.loss, np.ones((2, 3), dtype=bool))
    with pytest.raises(ConfigError, match="expected"):
        LabelOnly()(MembershipInputs(wrong))
    for bad in ({"augmentations": 0}, {"max_shift": -1}, {"noise_std": -0.1}, {"noise_std": float("nan")}):
        with pytest.raises(ConfigError):
            LabelOnly(**bad)
    clf = image_classifier(PixelRule((0, 1, 1), 0.5))
    with pytest.raises(DataError):
        augmentation_correct(clf, torch.zeros(2, 2, 4, 4), torch.zeros(3), generator=torch.Generator())
    with pytest.raises(DataError):
        with_augmentation(signals, clf, torch.zeros(3, 2, 4, 4), generator=torch.Generator())
