"""The shared loop of the gradient attacks on policies: projected gradient ascent in the threat model's scaled
coordinates (Madry et al. 2018's PGD, FGSM being its one full step, Goodfellow et al. 2015), with an optional
per-observation early stop.

:func:`projected_ascent` maximises an objective of the policy's output over the ball around each observation;
:class:`GradientPolicyAttack` holds the settings every gradient attack shares (steps, step size, random start).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from modelsec.attacks.norms import per_sample
from modelsec.rl.attacks.base import PolicyAttack
from modelsec.rl.policy import Policy, PolicyOutput
from modelsec.rl.threat import ObservationThreat

Objective = Callable[[PolicyOutput], torch.Tensor]
"""The per-observation quantity an attack maximises, ``(B,)``, from the policy's output at the perturbed point."""
Stop = Callable[[PolicyOutput], torch.Tensor]
"""Per observation, whether the current iterate already achieves the attack's goal (``(B,)`` bool)."""


def projected_ascent(
    policy: Policy,
    clean: torch.Tensor,
    threat: ObservationThreat,
    objective: Objective,
    *,
    steps: int,
    step_size: float,
    start: torch.Tensor,
    stop: Stop | None = None,
) -> torch.Tensor:
    """Maximise ``objective`` over the threat model's ball around ``clean`` by ``steps`` projected steepest-ascent
    steps of ``step_size`` (in units of ``scale``) from ``start`` (a point of the ball).

    Returns the last iterate; with ``stop``, an observation whose iterate meets it (checked before each step,
    ``start`` included) keeps that iterate and is no longer moved. Each step queries the policy once per
    observation.
    """
    x = start.detach()
    done = torch.zeros(clean.shape[0], dtype=torch.bool)
    for _ in range(steps):
        x = x.detach().requires_grad_(True)
        out = policy.output(x)
        value = objective(out)
        if stop is not None:
            done = done | stop(out).detach().cpu()
            if bool(done.all()):
                break
        (grad,) = torch.autograd.grad(value.sum(), x)
        moved = threat.ascent_step(clean, x.detach(), grad, step_size)
        x = torch.where(per_sample(done.to(moved.device), moved), x.detach(), moved)
    return x.detach()


@dataclass(kw_only=True)
class GradientPolicyAttack(PolicyAttack):
    """Settings of a projected-gradient attack: ``steps`` ascent steps of ``step_size`` (in units of ``scale``;
    ``None``: ``2.5 * eps / steps``, Madry et al.'s choice, so that the iterates can cross the ball), from a
    uniformly random point of the ball when ``random_start``, else from the clean observation."""

    steps: int = 10
    step_size: float | None = None
    random_start: bool = False

    def __post_init__(self) -> None:
        self.check_positive("steps", integer=True)
        self.check_positive("step_size", optional=True)

    def step_for(self, threat: ObservationThreat) -> float:
        """The step size at ``threat``'s eps."""
        return self.step_size if self.step_size is not None else 2.5 * threat.eps / self.steps

    def start_for(self, clean: torch.Tensor, threat: ObservationThreat, *, random: bool | None = None) -> torch.Tensor:
        """The first iterate: a random point of the ball (``random``, default :attr:`random_start`) or ``clean``."""
        if self.random_start if random is None else random:
            return threat.random_point(clean, self.generator)
        return clean.clone()
