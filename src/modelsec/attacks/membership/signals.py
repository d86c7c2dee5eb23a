"""Per-record signals that membership attacks score, computed once per record set, in float64 log space.

A model's output on a record reveals its logits ``z``; membership scores are functions of them and of the true
label ``y``. They are evaluated from the logits in float64 so that a saturated model (a softmax of exactly 1.0 in
float32, a loss of exactly 0) still gives every record a distinct score: ties would hide exactly the confident
records a membership attacker looks for. The functions below accept logits with any leading shape
(``(..., n, classes)``, e.g. one row per reference model) and labels broadcast over them.

Threat model: black-box with scores (logits or probabilities, which give the same log-probabilities up to a
constant per record); the label-only signals (:attr:`Signals.augmented_correct`) need only predicted labels.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import torch

from modelsec.data.dataset import Dataset
from modelsec.models.base import Capability, Classifier
from modelsec.stats.numerics import stable_cross_entropy


def logsumexp(a: np.ndarray, axis: int, keepdims: bool = False) -> np.ndarray:
    """``scipy.special.logsumexp``, imported when first used (SciPy takes a second to import)."""
    from scipy.special import logsumexp as scipy_logsumexp

    return np.asarray(scipy_logsumexp(a, axis=axis, keepdims=keepdims))


def _other_margin(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``s = logsumexp_{j != y}(z_j - z_y)`` in float64: the loss is ``softplus(s)``, the scaled logit ``-s``."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.broadcast_to(np.asarray(labels, dtype=np.int64), z.shape[:-1])
    zy = np.take_along_axis(z, y[..., None], axis=-1)
    diff = z - zy
    np.put_along_axis(diff, y[..., None], -np.inf, axis=-1)
    return np.asarray(logsumexp(diff, axis=-1))


def _softplus(s: np.ndarray) -> np.ndarray:
    """``log(1 + e^s)`` without overflow, accurate for very negative ``s``."""
    return np.where(s > 0, s + np.log1p(np.exp(-np.abs(s))), np.log1p(np.exp(np.minimum(s, 0.0))))


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-record cross-entropy ``-log p_y`` (float64, distinct for saturated models).

    >>> cross_entropy(np.array([[60.0, 0.0], [70.0, 0.0]]), np.array([0, 0])).tolist()
    [8.75651076269652e-27, 3.975449735908647e-31]
    """
    return _softplus(_other_margin(logits, labels))


def true_class_log_prob(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``log p_y`` (float64): the log-probability of the true label."""
    return -cross_entropy(logits, labels)


def scaled_logit(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """LiRA's statistic ``log(p_y / (1 - p_y)) = z_y - logsumexp_{j != y} z_j`` (Carlini et al. 2022), exact in
    float64 where ``p_y`` itself rounds to 1.

    >>> scaled_logit(np.array([[2.0, 0.0], [60.0, 0.0]]), np.array([0, 0])).tolist()
    [2.0, 60.0]
    """
    return -_other_margin(logits, labels)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    return np.asarray(z - logsumexp(z, axis=-1, keepdims=True))


def max_log_prob(logits: np.ndarray) -> np.ndarray:
    """``log max_j p_j``: the confidence of the prediction, label-agnostic (float64, distinct when saturated)."""
    z = np.asarray(logits, dtype=np.float64)
    return true_class_log_prob(z, z.argmax(axis=-1))


def entropy(logits: np.ndarray) -> np.ndarray:
    """Shannon entropy of the predicted distribution (nats). The top class's ``-log p`` term comes from the
    stable cross-entropy, so a saturated prediction keeps a small, distinct entropy rather than 0."""
    lp = log_softmax(logits)
    top = lp.argmax(axis=-1)
    terms = -np.exp(lp) * lp
    top_term = np.exp(-cross_entropy(logits, top)) * cross_entropy(logits, top)
    np.put_along_axis(terms, top[..., None], top_term[..., None], axis=-1)
    return np.asarray(terms.sum(axis=-1))


def modified_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Song & Mittal's modified entropy (2021, "Systematic Evaluation of Privacy Risks of Machine Learning
    Models"): ``-(1 - p_y) log p_y - sum_{j != y} p_j log(1 - p_j)``; low for confident correct predictions,
    high for confident wrong ones (which plain entropy confuses). Every term is taken in log space:
    ``1 - p_j = sum_{i != j} p_i``.

    >>> z = np.array([[3.0, 0.0, -1.0]]); p = np.exp(z) / np.exp(z).sum()
    >>> direct = -(1 - p[0, 0]) * np.log(p[0, 0]) - sum(p[0, j] * np.log(1 - p[0, j]) for j in (1, 2))
    >>> bool(np.isclose(modified_entropy(z, np.array([0]))[0], direct))
    True
    """
    lp = log_softmax(logits)
    k = lp.shape[-1]
    y = np.broadcast_to(np.asarray(labels, dtype=np.int64), lp.shape[:-1])
    # log(1 - p_j) = logsumexp_{i != j} log p_i, for every j (a k x k mask; k is the number of classes)
    masked = np.where(np.eye(k, dtype=bool), -np.inf, lp[..., None, :])
    log_rest = np.asarray(logsumexp(masked, axis=-1))
    ce = cross_entropy(logits, y)
    log_rest_y = np.take_along_axis(log_rest, y[..., None], axis=-1)[..., 0]
    own = np.exp(log_rest_y) * ce  # (1 - p_y) * (-log p_y)
    others = -np.exp(lp) * log_rest
    np.put_along_axis(others, y[..., None], 0.0, axis=-1)
    return np.asarray(own + others.sum(axis=-1))


class Signal(enum.Enum):
    """A kind of per-record signal a membership attack scores. Each attack declares the ones it needs
    (:attr:`~modelsec.attacks.membership.base.MembershipAttack.signals`), and an audit computes exactly those."""

    TARGET_SCORES = "target-scores"
    """The target's logits on every record (:attr:`Signals.logits`, :attr:`Signals.loss`)."""
    AUGMENTED_LABELS = "augmented-labels"
    """The target's labels on augmented copies of every record (:attr:`Signals.augmented_correct`); the attack
    says which copies (``augmentation()``: :class:`~modelsec.attacks.membership.augmentation.Augmentation`)."""
    REFERENCE = "reference"
    """Reference models' logits on the same records (:class:`ReferenceSignals`), trained online or offline."""
    ONLINE_REFERENCE = "online-reference"
    """Reference signals from models trained on the candidate records too, each on half of them (online)."""

    @property
    def capability(self) -> Capability:
        """The least access to the target this signal takes."""
        return Capability.SCORES if self is Signal.TARGET_SCORES else Capability.LABELS


@dataclass(frozen=True)
class Signals:
    """What the target model reveals about each record of a record set.

    ``logits`` (float32 as the model gave them) and the true ``labels``; ``loss`` is the float64 cross-entropy
    that stays distinct for saturated models. ``augmented_correct`` (optional, ``(n, a)`` bool) says for each of
    ``a`` label-preserving transformations of the record whether the model still predicts the true label: the
    label-only attack's signal (Choquette-Choo et al. 2021).
    """

    logits: np.ndarray  # (n, classes) float32
    labels: np.ndarray  # (n,) int64
    loss: np.ndarray  # (n,) float64
    augmented_correct: np.ndarray | None = None  # (n, a) bool

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def predictions(self) -> np.ndarray:
        return np.asarray(self.logits).argmax(axis=1)

    def subset(self, indices: np.ndarray) -> Signals:
        idx = np.asarray(indices, dtype=np.int64)
        aug = None if self.augmented_correct is None else self.augmented_correct[idx]
        return Signals(self.logits[idx], self.labels[idx], self.loss[idx], aug)


@dataclass(frozen=True)
class ReferenceSignals:
    """Reference (shadow) models' logits on the same records as a :class:`Signals`, and who trained on what.

    ``inclusion[k, i]`` is True when reference model ``k`` was trained on record ``i``: the membership matrix.
    Online attacks compare a record's signal under the models that trained on it (IN) with those that did not
    (OUT); offline attacks use only the OUT models.
    """

    logits: np.ndarray  # (models, n, classes) float32
    inclusion: np.ndarray  # (models, n) bool
    labels: np.ndarray  # (n,) int64

    def __post_init__(self) -> None:
        k, n = self.inclusion.shape
        if self.logits.shape[:2] != (k, n) or self.labels.shape != (n,):
            raise ValueError(
                f"reference logits {self.logits.shape}, inclusion {self.inclusion.shape} and labels "
                f"{self.labels.shape} do not describe the same models and records"
            )

    @property
    def num_models(self) -> int:
        return int(self.inclusion.shape[0])

    def __len__(self) -> int:
        return int(self.inclusion.shape[1])

    def subset(self, indices: np.ndarray) -> ReferenceSignals:
        """The same models on the records at ``indices``."""
        idx = np.asarray(indices, dtype=np.int64)
        return ReferenceSignals(self.logits[:, idx], self.inclusion[:, idx], self.labels[idx])

    def first_models(self, count: int) -> ReferenceSignals:
        """The first ``count`` models (balanced for an even count: see ``membership_matrix``)."""
        if not 1 <= count <= self.num_models:
            raise ValueError(f"count must lie in [1, {self.num_models}], got {count}")
        return ReferenceSignals(self.logits[:count], self.inclusion[:count], self.labels)


def compute_signals(classifier: Classifier, data: Dataset) -> Signals:
    """Query the classifier once per record of ``data``."""
    logits = classifier.predict_logits(data.x)
    y = torch.from_numpy(np.asarray(data.y, dtype=np.int64))
    loss = stable_cross_entropy(logits, y)
    return Signals(logits=logits.numpy(), labels=y.numpy(), loss=loss.numpy())
