"""Losses that gradient attacks ascend.

- ``ce``: cross-entropy of the true class (Goodfellow et al. 2015; Madry et al. 2018).
- ``margin``: the logit margin ``max_{j != y} z_j - z_y`` (Carlini & Wagner 2017). It does not saturate when the
  softmax does, so it still gives useful gradients on distilled or over-confident models.
"""

from __future__ import annotations

import torch
from torch.nn import functional

LOSSES = ("ce", "margin")


def attack_loss(logits: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-sample loss to maximise, shape ``(n,)``."""
    if kind == "ce":
        return functional.cross_entropy(logits, y, reduction="none")
    if kind == "margin":
        true = logits.gather(1, y[:, None]).squeeze(1)
        other = logits.masked_fill(functional.one_hot(y, logits.shape[1]).bool(), float("-inf"))
        return other.amax(dim=1) - true
    raise ValueError(f"unknown loss {kind!r}")
