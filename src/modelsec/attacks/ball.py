"""The ball an attack moves in, and the one projected gradient-ascent (PGD) step.

Madry, Makelov, Schmidt, Tsipras & Vladu 2018 ("Towards Deep Learning Models Resistant to Adversarial Attacks"):
the allowed inputs around a clean input ``x0`` are the ``norm`` ball of radius ``eps`` intersected with the input
bounds, and projected gradient ascent moves an iterate ``x`` by

    x <- clip_bounds(Proj_ball(x0, eps)(x + alpha * d(grad)))

where ``d`` is the norm's steepest-ascent direction of unit norm (the gradient's sign for L-inf, the normalised
gradient for L2; :mod:`modelsec.attacks.norms`). Every gradient attack takes its steps here: FGSM, BIM and PGD
(:mod:`modelsec.attacks.evasion.gradient`: one step of ``eps`` from the clean input is FGSM), APGD's inner update
before its momentum (:mod:`modelsec.attacks.evasion.apgd`), and the inner maximisation of adversarial training
(PGD-AT, TRADES, FGSM-RS: :mod:`modelsec.defenses.adversarial_training`).

>>> import torch
>>> from modelsec.attacks.norms import NORMS
>>> ball = Ball(NORMS.get("linf"), eps=0.1, bounds=(0.0, 1.0))
>>> x0 = torch.tensor([[0.5, 0.95]])
>>> ball.ascent_step(x0, x0, torch.tensor([[2.0, 3.0]]), 0.25).tolist()  # +0.25 each: eps caps it, then the bound
[[0.6000000238418579, 1.0]]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from modelsec.attacks.norms import Norm, clip_to_bounds, per_sample


@dataclass(frozen=True)
class Ball:
    """The allowed perturbations of a batch: the ``norm`` ball of radius ``eps`` around each clean input, inside
    the input ``bounds``. Every method takes the clean inputs (``center``) and works per sample."""

    norm: Norm
    eps: float
    bounds: tuple[float, float]

    def project(self, center: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
        """The closest point of the ball around ``center`` to ``point``, clipped to the bounds (detached)."""
        return clip_to_bounds(self.norm.project(center, point, self.eps), self.bounds).detach()

    def random_start(
        self, center: torch.Tensor, generator: torch.Generator, radius: float | None = None
    ) -> torch.Tensor:
        """A uniformly random point of the ball of radius ``radius`` (default ``eps``) around ``center``, clipped
        to the bounds (drawn on the CPU from ``generator``, for reproducibility)."""
        radius = self.eps if radius is None else radius
        return clip_to_bounds(self.norm.random_start(center, radius, generator), self.bounds)

    def ascent_step(
        self, center: torch.Tensor, point: torch.Tensor, grad: torch.Tensor, step: float | torch.Tensor
    ) -> torch.Tensor:
        """The PGD step from ``point``: ``step`` (a number, or one per sample) times the steepest-ascent
        direction of ``grad``, projected onto the ball around ``center`` and clipped to the bounds (detached)."""
        direction = self.norm.ascent_direction(grad)
        scaled = per_sample(step, point) * direction if isinstance(step, torch.Tensor) else step * direction
        return self.project(center, point + scaled)
