"""The label-only membership signal: the target's labels on label-preserving transformations of each record
(Choquette-Choo, Tramer, Carlini & Papernot 2021, "Label-Only Membership Inference Attacks"), which
:class:`~modelsec.attacks.membership.label_only.LabelOnly` scores.

Threat model: black-box with labels only (decision-based; :attr:`Capability.LABELS`): only predicted labels are
read. :func:`augmentation_correct` says for each record and each of ``a`` queries (the record itself first) whether
the target still returns the true label.

Transformations:

- **images** (per-record shape ``(C, H, W)``): translations by up to ``max_shift`` pixels in each direction, the
  vacated pixels set to the lower input bound. The ``(2 * max_shift + 1) ** 2`` shifts come in a fixed order, the
  smallest first (no shift, then the four one-pixel shifts: the paper's ``d = 1`` set, then the diagonals, ...);
  a model that answers deterministically learns nothing from a repeated shift, so columns beyond them take a random
  shift plus Gaussian noise of ``noise_std``.
- **other inputs**: Gaussian noise of standard deviation ``noise_std`` times the width of the input bounds, the
  result clipped to the bounds (the paper's noise augmentation for tabular data).

Filling the signal costs ``a - 1`` extra queries per record (the first column is the un-augmented record);
:class:`Augmentation` (an attack's declared parameters) and :func:`with_augmentation` store it in
:attr:`Signals.augmented_correct`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from modelsec.attacks.membership.signals import Signals
from modelsec.core.errors import ConfigError, DataError
from modelsec.models.base import Classifier


def translation_offsets(max_shift: int) -> list[tuple[int, int]]:
    """Every ``(dy, dx)`` with ``|dy|, |dx| <= max_shift``, ordered by ``|dy| + |dx|``, then ``dy``, then ``dx``.

    >>> translation_offsets(1)
    [(0, 0), (-1, 0), (0, -1), (0, 1), (1, 0), (-1, -1), (-1, 1), (1, -1), (1, 1)]
    """
    r = range(-max_shift, max_shift + 1)
    return sorted(((dy, dx) for dy in r for dx in r), key=lambda o: (abs(o[0]) + abs(o[1]), o[0], o[1]))


def translate(x: torch.Tensor, dy: int, dx: int, fill: float) -> torch.Tensor:
    """Images ``(n, C, H, W)`` moved ``dy`` pixels down and ``dx`` right (a new tensor): ``out[..., i, j] =
    x[..., i - dy, j - dx]`` where that pixel exists, ``fill`` elsewhere.

    >>> translate(torch.arange(4.0).reshape(1, 1, 2, 2), 0, 1, fill=-1.0).tolist()
    [[[[-1.0, 0.0], [-1.0, 2.0]]]]
    """
    h, w = x.shape[-2:]
    out = torch.full_like(x, fill)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        ..., max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


def _noisy(x: torch.Tensor, std: float, bounds: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    if std == 0:
        return x
    low, high = bounds
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return (x + noise * (std * (high - low))).clamp(low, high)


def _check(augmentations: int, max_shift: int, noise_std: float) -> None:
    if augmentations < 1:
        raise ConfigError(f"label-only: augmentations must be >= 1 (the first is the record), got {augmentations}")
    if max_shift < 0:
        raise ConfigError(f"label-only: max_shift must be >= 0, got {max_shift}")
    if not (np.isfinite(noise_std) and noise_std >= 0):
        raise ConfigError(f"label-only: noise_std must be a finite number >= 0, got {noise_std}")


def augmentation_correct(
    classifier: Classifier,
    x: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray,
    *,
    augmentations: int = 10,
    generator: torch.Generator,
    max_shift: int = 1,
    noise_std: float = 0.05,
) -> np.ndarray:
    """``(n, augmentations)`` bool: whether ``classifier.predict`` returns the true label ``y`` on each
    transformation of each record (column 0: the record itself). Uses predicted labels only; ``x`` is not modified.
    Images ``(n, C, H, W)`` are translated, other inputs get Gaussian noise (see the module docstring); random
    choices come from ``generator`` (on the CPU)."""
    _check(augmentations, max_shift, noise_std)
    xt = torch.as_tensor(x, dtype=torch.float32).cpu()
    yt = torch.as_tensor(y, dtype=torch.int64).cpu()
    if yt.shape != (xt.shape[0],):
        raise DataError(f"label-only: {tuple(yt.shape)} labels for {xt.shape[0]} inputs")
    n = xt.shape[0]
    low = classifier.bounds[0]
    correct = np.zeros((n, augmentations), dtype=bool)
    image = xt.ndim == 4
    offsets = translation_offsets(max_shift) if image else [(0, 0)]
    for col in range(augmentations):
        if col == 0:
            xa = xt
        elif image and col < len(offsets):
            dy, dx = offsets[col]
            xa = translate(xt, dy, dx, fill=low)
        elif image:  # every shift is taken: a random one per record, plus noise
            pick = torch.randint(len(offsets), (n,), generator=generator)
            xa = torch.empty_like(xt)
            for o in pick.unique().tolist():
                rows = pick == o
                dy, dx = offsets[o]
                xa[rows] = translate(xt[rows], dy, dx, fill=low)
            xa = _noisy(xa, noise_std, classifier.bounds, generator)
        else:
            xa = _noisy(xt, noise_std, classifier.bounds, generator)
        correct[:, col] = (classifier.predict(xa) == yt).numpy()
    return correct


def with_augmentation(
    signals: Signals,
    classifier: Classifier,
    x: torch.Tensor | np.ndarray,
    *,
    augmentations: int = 10,
    generator: torch.Generator,
    max_shift: int = 1,
    noise_std: float = 0.05,
) -> Signals:
    """``signals`` with :attr:`Signals.augmented_correct` filled from the records ``x`` (the inputs ``signals``
    describe, in the same order; the true labels are ``signals.labels``)."""
    if len(x) != len(signals):
        raise DataError(f"label-only: {len(x)} inputs for signals on {len(signals)} records")
    correct = augmentation_correct(
        classifier,
        x,
        signals.labels,
        augmentations=augmentations,
        generator=generator,
        max_shift=max_shift,
        noise_std=noise_std,
    )
    return dataclasses.replace(signals, augmented_correct=correct)


@dataclass(frozen=True)
class Augmentation:
    """The augmented queries of the label-only signal: ``augmentations`` per record (the record itself included),
    image shifts of up to ``max_shift`` pixels, noise of ``noise_std`` times the width of the bounds (see the module
    docstring). Validated at construction."""

    augmentations: int = 10
    max_shift: int = 1
    noise_std: float = 0.05

    def __post_init__(self) -> None:
        _check(self.augmentations, self.max_shift, self.noise_std)

    def apply(
        self, signals: Signals, classifier: Classifier, x: torch.Tensor | np.ndarray, *, generator: torch.Generator
    ) -> Signals:
        """``signals`` with :attr:`Signals.augmented_correct` filled by these queries of ``classifier`` on the
        records ``x`` (:func:`with_augmentation`)."""
        return with_augmentation(
            signals,
            classifier,
            x,
            augmentations=self.augmentations,
            generator=generator,
            max_shift=self.max_shift,
            noise_std=self.noise_std,
        )
