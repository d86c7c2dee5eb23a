"""Per-record signals that membership attacks score: logits and the loss, computed once per record set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from modelsec.data.dataset import Dataset
from modelsec.models.base import Classifier
from modelsec.numerics import stable_cross_entropy


@dataclass(frozen=True)
class Signals:
    """What the target model reveals about each record. ``loss`` is float64 cross-entropy that stays distinct
    (not exactly 0) for saturated models (:func:`~modelsec.numerics.stable_cross_entropy`); ``labels`` are the
    true labels."""

    logits: np.ndarray  # (n, classes) float32
    labels: np.ndarray  # (n,) int64
    loss: np.ndarray  # (n,) float64

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def compute_signals(classifier: Classifier, data: Dataset) -> Signals:
    """Query the classifier once per record of ``data``."""
    logits = classifier.predict_logits(data.x)
    y = torch.from_numpy(np.asarray(data.y, dtype=np.int64))
    loss = stable_cross_entropy(logits, y)
    return Signals(logits=logits.numpy(), labels=y.numpy(), loss=loss.numpy())
