"""The observation threat model of a policy audit: what an attacker may do to the observations a policy sees.

An attacker who sits between the environment and the agent (a tampered sensor, a compromised feed) replaces each
observation ``s`` with an ``s'`` close to it (the state-adversarial MDP of Zhang et al. 2020): the environment's
true state is untouched, only what the policy sees. Observation dimensions have unrelated units (a cart's position
in metres, a pole's angular velocity in radians per second), so ``eps`` is in units of each dimension's standard
deviation ``scale`` (estimated from clean rollouts and recorded): the allowed ``s'`` are those with
``||(s' - s) / scale|| <= eps`` in the L-inf or L2 norm, inside the observation space's bounds ``[low, high]``
(infinite where the space is unbounded). A dimension of zero ``scale`` (constant in clean rollouts) is not
perturbed.

Attacks work in the scaled coordinates ``z = s / scale`` (:meth:`ObservationThreat.project`,
:meth:`ObservationThreat.ascent_step`), where the ball is the usual one of :mod:`modelsec.attacks.norms`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from modelsec.attacks.norms import NORMS, Norm
from modelsec.core.errors import ConfigError

CONTAINMENT_TOLERANCE = 1e-5
"""Relative slack (of eps) allowed when checking that a perturbation lies inside the threat model (float32
rounding of the scaled coordinates)."""


@functools.lru_cache(maxsize=64)
def _as_tensor(
    values: tuple[float, ...], dtype: torch.dtype, device: torch.device, shape: tuple[int, ...]
) -> torch.Tensor:
    """``values`` as a ``(1, *shape)`` tensor, built once per threat model, dtype and device (an attack asks for
    them at every step of every episode)."""
    return torch.tensor(values, dtype=dtype, device=device).view(1, *shape)


@dataclass(frozen=True)
class ObservationThreat:
    """Perturbations of observations: ``norm`` (``linf`` or ``l2``) ball of radius ``eps`` in units of ``scale``
    (one value per flattened observation dimension), inside ``[low, high]`` (one value per dimension, infinite
    where unbounded)."""

    norm: str
    eps: float
    scale: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]

    def __post_init__(self) -> None:
        NORMS.get(self.norm)
        if not np.isfinite(self.eps) or self.eps < 0:
            raise ConfigError(f"eps must be a finite number >= 0, got {self.eps}")
        if not len(self.scale) == len(self.low) == len(self.high):
            raise ConfigError("scale, low and high need one value per observation dimension")
        if any(not np.isfinite(s) or s < 0 for s in self.scale):
            raise ConfigError("every scale (a standard deviation) must be finite and >= 0")

    @classmethod
    def for_space(cls, space: Any, scale: np.ndarray, *, norm: str, eps: float) -> ObservationThreat:
        """The threat model for a Gymnasium ``Box`` observation space and per-dimension ``scale``."""
        low = np.broadcast_to(np.asarray(space.low, dtype=np.float64), space.shape).reshape(-1)
        high = np.broadcast_to(np.asarray(space.high, dtype=np.float64), space.shape).reshape(-1)
        scale = np.asarray(scale, dtype=np.float64).reshape(-1)
        return cls(norm, float(eps), tuple(scale.tolist()), tuple(low.tolist()), tuple(high.tolist()))

    def with_eps(self, eps: float) -> ObservationThreat:
        return ObservationThreat(self.norm, float(eps), self.scale, self.low, self.high)

    @property
    def norm_impl(self) -> Norm:
        return NORMS.get(self.norm)

    def _scale(self, like: torch.Tensor) -> torch.Tensor:
        return _as_tensor(self.scale, like.dtype, like.device, tuple(like.shape[1:]))

    def _bounds(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = tuple(like.shape[1:])
        return _as_tensor(self.low, like.dtype, like.device, shape), _as_tensor(
            self.high, like.dtype, like.device, shape
        )

    def distance(self, clean: torch.Tensor, perturbed: torch.Tensor) -> torch.Tensor:
        """Per-observation distance in units of ``scale`` (a change in a zero-scale dimension is infinite)."""
        scale = self._scale(clean)
        delta = perturbed - clean
        unit = torch.where(scale > 0, delta / scale.clamp_min(1e-30), torch.where(delta == 0, 0.0, torch.inf))
        return self.norm_impl.distance(torch.zeros_like(unit), unit)

    def contains(self, clean: torch.Tensor, perturbed: torch.Tensor) -> torch.Tensor:
        """Per observation: inside the ball (with :data:`CONTAINMENT_TOLERANCE`) and the bounds, and finite."""
        low, high = self._bounds(clean)
        inside_bounds = ((perturbed >= low) & (perturbed <= high)).flatten(1).all(dim=1)
        finite = torch.isfinite(perturbed).flatten(1).all(dim=1)
        near = self.distance(clean, perturbed) <= self.eps * (1 + CONTAINMENT_TOLERANCE) + 1e-12
        return inside_bounds & finite & near

    def project(self, clean: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
        """The closest point of the ball around ``clean`` to ``point`` (in scaled coordinates), clipped to the
        bounds (detached)."""
        scale = self._scale(clean)
        unit_delta = (point - clean) / scale.clamp_min(1e-30)
        unit_delta = self.norm_impl.project(torch.zeros_like(unit_delta), unit_delta, self.eps)
        perturbed = clean + torch.where(scale > 0, unit_delta * scale, 0.0)
        low, high = self._bounds(clean)
        return torch.maximum(torch.minimum(perturbed, high), low).detach()

    def random_point(self, clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A uniformly random point of the ball around ``clean`` (drawn on the CPU from ``generator``)."""
        zeros = torch.zeros_like(clean)
        unit = self.norm_impl.random_start(zeros, self.eps, generator)
        return self.project(clean, clean + unit * self._scale(clean))

    def ascent_step(self, clean: torch.Tensor, point: torch.Tensor, grad: torch.Tensor, step: float) -> torch.Tensor:
        """One projected gradient-ascent step of ``step`` (in units of ``scale``) from ``point``: the norm's
        steepest-ascent direction of the gradient with respect to the scaled coordinates (``grad * scale``)."""
        scale = self._scale(clean)
        direction = self.norm_impl.ascent_direction(grad * scale)
        return self.project(clean, point + step * direction * scale)

    def to_dict(self) -> dict[str, Any]:
        return {
            "norm": self.norm,
            "eps": self.eps,
            "scale": list(self.scale),
            "low": list(self.low),
            "high": list(self.high),
        }
