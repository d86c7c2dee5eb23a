"""Losses that gradient attacks ascend.

- ``ce``: cross-entropy of the true class (Goodfellow et al. 2015; Madry et al. 2018).
- ``margin``: the logit margin ``max_{j != y} z_j - z_y`` (Carlini & Wagner 2017). It does not saturate when the
  softmax does, so it still gives useful gradients on distilled or over-confident models.
- ``dlr``: the difference of logits ratio (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with
  an ensemble of diverse parameter-free attacks"), ``-(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3)`` where ``pi``
  sorts the logits in decreasing order. The margin divided by a spread of the logits: invariant to shifting and
  rescaling the logits, so it neither saturates nor rewards a model that merely scales its outputs up. It is
  positive exactly where the sample is misclassified. Needs at least 3 classes.

:func:`targeted_dlr_loss` is the targeted version of the same paper, for attacks that aim at one chosen class.
"""

from __future__ import annotations

import torch
from torch.nn import functional

from modelsec.core.errors import ConfigError

LOSSES = ("ce", "margin", "dlr")

# Keeps the DLR denominators away from zero when the top logits tie (the paper's constant).
_DLR_EPS = 1e-12


def _true_logit(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, y[:, None]).squeeze(1)


def _best_other_logit(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    other = logits.masked_fill(functional.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return other.amax(dim=1)


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Untargeted DLR, shape ``(n,)``: ``-(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12)``.

    >>> round(float(dlr_loss(torch.tensor([[3.0, 1.0, 0.0]]), torch.tensor([0]))), 4)  # -(3 - 1) / (3 - 0)
    -0.6667
    """
    if logits.shape[1] < 3:
        raise ConfigError(
            f"the DLR loss needs at least 3 classes, the model has {logits.shape[1]}; use loss='ce' or 'margin'"
        )
    top = logits.topk(3, dim=1).values
    return -(_true_logit(logits, y) - _best_other_logit(logits, y)) / (top[:, 0] - top[:, 2] + _DLR_EPS)


def targeted_dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR, shape ``(n,)``: ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)`` for target
    classes ``target`` (Croce & Hein 2020). Positive once the target logit exceeds the true one. Needs at
    least 4 classes.

    >>> z = torch.tensor([[4.0, 2.0, 1.0, 0.0]])
    >>> round(float(targeted_dlr_loss(z, torch.tensor([0]), torch.tensor([1]))), 4)  # -(4 - 2) / (4 - 0.5)
    -0.5714
    """
    if logits.shape[1] < 4:
        raise ConfigError(f"the targeted DLR loss needs at least 4 classes, the model has {logits.shape[1]}")
    top = logits.topk(4, dim=1).values
    spread = top[:, 0] - (top[:, 2] + top[:, 3]) / 2 + _DLR_EPS
    return -(_true_logit(logits, y) - _true_logit(logits, target)) / spread


def unsupported_loss_reason(kind: str, num_classes: int) -> str | None:
    """Why the loss ``kind`` cannot attack a model with ``num_classes`` classes (``None``: it can).

    >>> unsupported_loss_reason("dlr", 2), unsupported_loss_reason("margin", 2)
    ('the DLR loss needs at least 3 classes', None)
    """
    if kind == "dlr" and num_classes < 3:
        return "the DLR loss needs at least 3 classes"
    return None


def logit_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``max_{j != y} z_j - z_y``, shape ``(n,)``: positive exactly where the sample is misclassified (ties aside).

    >>> logit_margin(torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]]), torch.tensor([0, 0])).tolist()
    [-2.0, 2.0]
    """
    return _best_other_logit(logits, y) - _true_logit(logits, y)


def attack_loss(logits: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-sample loss to maximise, shape ``(n,)``."""
    if kind == "ce":
        return functional.cross_entropy(logits, y, reduction="none")
    if kind == "margin":
        return logit_margin(logits, y)
    if kind == "dlr":
        return dlr_loss(logits, y)
    raise ValueError(f"unknown loss {kind!r}")
