"""Perturbation norms: projection onto the epsilon-ball, random starts, steepest-ascent directions, distances.

Each norm supplies the small override points that iterative attacks need (after Foolbox 3's design), so FGSM,
BIM and PGD differ only in defaults. Bounds clipping is separate (:func:`clip_to_bounds`).
"""

from __future__ import annotations

import abc

import torch

from modelsec.core.registry import Registry

NORMS: Registry[Norm] = Registry("norm")


def _flat_norm(t: torch.Tensor, p: float) -> torch.Tensor:
    return t.flatten(1).norm(p=p, dim=1)


def per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """One value per sample, shape ``(n,)``, viewed so that it broadcasts over a batch shaped like ``like``
    (``(n, 1, ..., 1)``): per-sample step sizes, factors and flags for ``torch.where``.

    >>> per_sample(torch.tensor([1.0, 2.0]), torch.ones(2, 3, 4)).shape
    torch.Size([2, 1, 1])
    """
    return v.view(-1, *([1] * (like.ndim - 1)))


class Norm(abc.ABC):
    name: str

    @abc.abstractmethod
    def distance(self, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        """Per-sample distance ``||x_adv - x||``."""

    @abc.abstractmethod
    def project(self, x: torch.Tensor, x_adv: torch.Tensor, eps: float) -> torch.Tensor:
        """The closest point to ``x_adv`` inside the eps-ball around ``x``."""

    @abc.abstractmethod
    def random_start(self, x: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
        """A uniformly random point of the eps-ball around ``x`` (drawn on the CPU for reproducibility)."""

    @abc.abstractmethod
    def ascent_direction(self, grad: torch.Tensor) -> torch.Tensor:
        """The steepest-ascent direction of unit norm for gradient ``grad``."""


class LinfNorm(Norm):
    name = "linf"

    def distance(self, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        return (x_adv - x).flatten(1).abs().amax(dim=1)

    def project(self, x: torch.Tensor, x_adv: torch.Tensor, eps: float) -> torch.Tensor:
        return x + (x_adv - x).clamp(-eps, eps)

    def random_start(self, x: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype) * 2 - 1
        return x + eps * noise.to(x.device)

    def ascent_direction(self, grad: torch.Tensor) -> torch.Tensor:
        return grad.sign()


class L2Norm(Norm):
    name = "l2"

    def distance(self, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        return _flat_norm(x_adv - x, 2)

    def project(self, x: torch.Tensor, x_adv: torch.Tensor, eps: float) -> torch.Tensor:
        delta = x_adv - x
        norms = _flat_norm(delta, 2).clamp_min(1e-12)
        factor = (eps / norms).clamp(max=1.0)
        return x + delta * per_sample(factor, delta)

    def random_start(self, x: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
        # uniform in the ball: Gaussian direction, radius eps * U^(1/d)
        n, d = x.shape[0], x[0].numel()
        direction = torch.randn((n, d), generator=generator, dtype=x.dtype)
        direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
        radius = eps * torch.rand((n, 1), generator=generator, dtype=x.dtype) ** (1.0 / d)
        return x + (direction * radius).view_as(x).to(x.device)

    def ascent_direction(self, grad: torch.Tensor) -> torch.Tensor:
        return grad / per_sample(_flat_norm(grad, 2).clamp_min(1e-12), grad)


NORMS.register("linf")(LinfNorm())
NORMS.register("l2")(L2Norm())


def clip_to_bounds(x: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    return x.clamp(bounds[0], bounds[1])
