"""Input normalisation in front of a model that expects normalised inputs: ``(x - mean) / std`` per channel.

Many models are trained on normalised inputs (torchvision's ImageNet models on ``(x - mean) / std`` of ``[0, 1]``
pixels). The audit keeps the data, the bounds and every epsilon in raw input units (pixels in ``[0, 1]``) and puts the
normalisation inside the classifier, as the first, differentiable step of its preprocessing
(:func:`normalized`): attacks perturb raw inputs, clip them to the raw bounds, and ``eps = 8/255`` keeps meaning
8 grey levels. (Normalising the data instead would make ``eps`` a number of standard deviations, different per
channel, and the bounds wrong.)

``mean`` and ``std`` hold one value per channel (the input's first axis after the batch: colour channels of an image
``(C, H, W)``, features of a flat input ``(d,)``), or one value for all.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch

from modelsec.core.errors import ConfigError
from modelsec.models.base import Classifier


def check_normalization(mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
    """:class:`ConfigError` unless ``mean`` and ``std`` are both given (or both not), of the same length, finite,
    with every ``std > 0``."""
    if mean is None and std is None:
        return
    if mean is None or std is None:
        raise ConfigError(
            "--normalize-mean and --normalize-std go together: give both (one value per channel each, e.g. "
            "--normalize-mean 0.485,0.456,0.406 --normalize-std 0.229,0.224,0.225)"
        )
    if len(mean) != len(std) or not mean:
        raise ConfigError(
            f"--normalize-mean has {len(mean)} value(s) but --normalize-std has {len(std)}; give one of each per "
            "channel"
        )
    if not all(math.isfinite(m) for m in mean) or not all(math.isfinite(s) and s > 0 for s in std):
        raise ConfigError(
            f"--normalize-mean must be finite numbers and --normalize-std finite numbers > 0, got mean {list(mean)} "
            f"and std {list(std)}"
        )


class Normalization:
    """``x -> (x - mean) / std`` over the channel axis (axis 1 of a batch), then the classifier's own preprocessing
    when it has one (``then``; applied as before, with its straight-through gradient when it is not
    differentiable)."""

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        input_shape: tuple[int, ...],
        then: Callable[[torch.Tensor], torch.Tensor] | None = None,
        then_differentiable: bool = True,
    ) -> None:
        check_normalization(mean, std)
        channels = input_shape[0] if input_shape else 1
        if len(mean) not in (1, channels):
            raise ConfigError(
                f"--normalize-mean and --normalize-std have {len(mean)} values but the model's inputs "
                f"{tuple(input_shape)} have {channels} channels (the first axis); give one value per channel, or one "
                "for all"
            )
        view = (1, len(mean)) + (1,) * (len(input_shape) - 1)
        self.mean = torch.tensor(list(mean), dtype=torch.float32).reshape(view)
        self.std = torch.tensor(list(std), dtype=torch.float32).reshape(view)
        self.then = then
        self.then_differentiable = then_differentiable

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean.to(x.device)) / self.std.to(x.device)
        if self.then is None:
            return z
        zp = self.then(z)
        return zp if self.then_differentiable else z + (zp - z).detach()

    def __repr__(self) -> str:
        return f"Normalization(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"

    @property
    def uses_bpda(self) -> bool:
        """True when the preprocessing after the normalisation passes gradients straight through."""
        return self.then is not None and not self.then_differentiable


def normalized(classifier: Classifier, mean: Sequence[float], std: Sequence[float]) -> Classifier:
    """A copy of ``classifier`` (the same module, its own query count) that normalises its inputs first: data,
    bounds and attacks stay in raw input units. The classifier's own preprocessing runs after the normalisation,
    unchanged."""
    out = copy.copy(classifier)
    out.preprocess = Normalization(
        mean,
        std,
        classifier.input_shape,
        then=classifier.preprocess,
        then_differentiable=classifier.preprocess_differentiable,
    )
    out.preprocess_differentiable = True
    out.queries = 0
    return out
