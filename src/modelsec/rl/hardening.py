"""Hardened PPO: train a policy that keeps its return when an attacker perturbs its observations.

The threat is the state-adversarial MDP of Zhang et al. 2020 ("Robust Deep Reinforcement Learning against
Adversarial Perturbations on State Observations"): the attacker replaces each observation ``s`` with an ``s'`` in
the ball ``B(s)`` of :class:`~modelsec.rl.threat.ObservationThreat` (``eps`` in units of each dimension's standard
deviation, inside the observation space's bounds). Two defenses, both PPO (:func:`~modelsec.rl.ppo.train_ppo`)
with a hook:

- ``sa-ppo`` (SA-PPO, Zhang et al. 2020): PPO's loss plus ``kappa`` times the state-adversarial smoothness
  regulariser ``mean_s max_{s' in B(s)} KL(pi(.|s) || pi(.|s'))`` over each minibatch's observations, the inner max
  found by PGD from a random point of the ball (the paper's SGLD/PGD variant; its convex-relaxation bound is not
  implemented). The clean distribution ``pi(.|s)`` is the target (no gradient flows through it): the term pulls
  the perturbed distribution towards it. Bounding the KL over the ball bounds how much an attacker can change
  what the policy does, and so its loss of return (the paper's Theorem 5).
- ``pgd-ppo``: PPO whose rollouts see PGD-perturbed observations on a fraction ``attack_fraction`` of the steps
  (the attack maximises the same KL, i.e. it pushes the action distribution away from the clean one, as the MAD
  attack does): the policy learns to act well on what the attacker shows it (adversarial training; the critic sees
  what the actor saw).

``eps`` and ``kappa`` are 0 during a ``warmup`` fraction of the updates, then ramp up linearly from 0 over a
``ramp`` fraction (the paper's schedule: a policy first learns the task, then robustness). The per-dimension
``scale`` is given (best: the audit's, see :class:`PolicyHardening`), or estimated from the clean observations of
the rollouts of the policy being trained (an exponential moving average over rollouts,
:attr:`~modelsec.rl.ppo.TrainingContext.scale`). Training starts from scratch, or fine-tunes a given actor-critic
policy; the policy card records how it was hardened.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from modelsec.attacks.norms import NORMS
from modelsec.core.errors import ConfigError
from modelsec.core.progress import Progress
from modelsec.rl.policy import Policy, PolicyOutput
from modelsec.rl.ppo import EnvSource, PPOConfig, PPOResult, TrainingContext, new_env, train_ppo
from modelsec.rl.threat import ObservationThreat

METHODS = ("sa-ppo", "pgd-ppo")


@dataclass(frozen=True)
class PolicyHardening:
    """How to harden a policy.

    Args:
        method: ``sa-ppo`` (the smoothness regulariser) or ``pgd-ppo`` (rollouts on PGD-perturbed observations).
        eps: the threat's radius in units of each observation dimension's standard deviation (the largest, reached
            after the ramp).
        norm: ``linf`` or ``l2``.
        kappa: the weight of SA-PPO's regulariser (the largest, reached after the ramp).
        warmup: the fraction of the updates trained without the threat (plain PPO: the policy learns the task).
        ramp: the fraction of the updates, after the warm-up, over which ``eps`` and ``kappa`` grow linearly from 0
            (0: at once).
        attack_steps: PGD steps of the inner maximisation (both methods).
        attack_step_size: PGD's step in units of the scale, as a fraction of the current eps.
        attack_fraction: ``pgd-ppo``: the fraction of rollout steps whose observations are attacked.
        scale: the per-dimension standard deviation defining the threat's units; ``None``: estimated from the
            rollouts' clean observations. Pass the audit's scale (the standard deviation over clean deterministic
            episodes of the baseline policy) to harden against the threat the audit measures: on CartPole-v1 the
            stochastic training rollouts spread differently (the cart's position less, the pole's angle more), and
            SA-PPO with the audit's scale kept far more return under attack (``benchmarks/rl_train.py``).
        ppo: PPO's settings.
    """

    method: str = "sa-ppo"
    eps: float = 1.0
    norm: str = "linf"
    kappa: float = 1.0
    warmup: float = 0.0
    ramp: float = 0.5
    attack_steps: int = 5
    attack_step_size: float = 0.5
    attack_fraction: float = 0.5
    scale: tuple[float, ...] | None = None
    ppo: PPOConfig = field(default_factory=PPOConfig)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown hardening method {self.method!r}; known: {', '.join(METHODS)}")
        NORMS.get(self.norm)
        if not np.isfinite(self.eps) or self.eps < 0:
            raise ConfigError(f"eps must be a finite number >= 0, got {self.eps}")
        if not np.isfinite(self.kappa) or self.kappa < 0:
            raise ConfigError(f"kappa must be a finite number >= 0, got {self.kappa}")
        if not 0 <= self.ramp <= 1 or not 0 <= self.warmup <= 1 or self.warmup + self.ramp > 1:
            raise ConfigError(f"warmup and ramp must be in [0, 1] with a sum <= 1, got {self.warmup}, {self.ramp}")
        if self.attack_steps < 1:
            raise ConfigError(f"attack_steps must be >= 1, got {self.attack_steps}")
        if not self.attack_step_size > 0:
            raise ConfigError(f"attack_step_size must be > 0, got {self.attack_step_size}")
        if not 0 <= self.attack_fraction <= 1:
            raise ConfigError(f"attack_fraction must be in [0, 1], got {self.attack_fraction}")
        if self.scale is not None and any(not np.isfinite(s) or s < 0 for s in self.scale):
            raise ConfigError("every scale (a standard deviation) must be finite and >= 0")

    def schedule(self, progress: float) -> float:
        """The ramp's factor (0 to 1) at ``progress`` (the fraction of updates done): 0 during the warm-up, then
        growing linearly over ``ramp``."""
        if progress < self.warmup:
            return 0.0
        return 1.0 if self.ramp == 0 else min(1.0, (progress - self.warmup) / self.ramp)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "ppo"}
        out["scale"] = None if self.scale is None else list(self.scale)
        out["ppo"] = self.ppo.to_dict()
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PolicyHardening:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown hardening settings: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        kwargs = dict(values)
        if isinstance(kwargs.get("ppo"), dict):
            kwargs["ppo"] = PPOConfig.from_dict(kwargs["ppo"])
        if kwargs.get("scale") is not None:
            kwargs["scale"] = tuple(float(s) for s in kwargs["scale"])
        return cls(**kwargs)


# --- the divergence and its maximisation over the ball --------------------------------------------------------------


def action_kl(p: PolicyOutput, q: PolicyOutput) -> torch.Tensor:
    """Per-observation ``KL(p || q)`` ``(B,)`` of two outputs of one policy: categorical over the logits, or
    diagonal Gaussians (the squared distance of the means over 2 when the policy has no ``log_std``)."""
    if p.logits is not None and q.logits is not None:
        logp, logq = torch.log_softmax(p.logits, dim=1), torch.log_softmax(q.logits, dim=1)
        return (logp.exp() * (logp - logq)).sum(dim=1)
    assert p.mean is not None and q.mean is not None
    if p.log_std is None or q.log_std is None:
        return 0.5 * (p.mean - q.mean).pow(2).sum(dim=1)
    ls_p, ls_q = p.log_std.expand_as(p.mean), q.log_std.expand_as(q.mean)
    var_p, var_q = (2 * ls_p).exp(), (2 * ls_q).exp()
    return (ls_q - ls_p + (var_p + (p.mean - q.mean).pow(2)) / (2 * var_q) - 0.5).sum(dim=1)


def _detached(out: PolicyOutput) -> PolicyOutput:
    def d(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.detach()

    return PolicyOutput(logits=d(out.logits), mean=d(out.mean), log_std=d(out.log_std), value=d(out.value))


def max_kl_observations(
    module: nn.Module,
    obs: torch.Tensor,
    threat: ObservationThreat,
    *,
    steps: int,
    step_size: float,
    generator: torch.Generator,
    clean: PolicyOutput | None = None,
) -> torch.Tensor:
    """Observations of the ball around ``obs`` that (approximately) maximise ``KL(pi(.|obs) || pi(.|obs'))``:
    PGD from a uniformly random point of the ball (the KL's gradient vanishes at ``obs`` itself), ``steps`` ascent
    steps of ``step_size`` (in units of the scale); returns the best point seen per observation (detached).
    Gradients are taken with respect to the observations only: no parameter gradient accumulates."""
    if clean is None:
        with torch.no_grad():
            clean = module(obs)
    target = _detached(clean)
    point = threat.random_point(obs, generator)
    best = point
    with torch.no_grad():
        best_kl = action_kl(target, module(point))
    for _ in range(steps):
        point = point.detach().requires_grad_(True)
        kl = action_kl(target, module(point))
        (grad,) = torch.autograd.grad(kl.sum(), point)
        point = threat.ascent_step(obs, point.detach(), grad, step_size)
        with torch.no_grad():
            kl = action_kl(target, module(point))
            better = kl > best_kl
            best = torch.where(better.view(-1, *([1] * (obs.ndim - 1))), point, best)
            best_kl = torch.where(better, kl, best_kl)
    return best.detach()


# --- the hooks --------------------------------------------------------------------------------------------------------


@dataclass
class _Threats:
    config: PolicyHardening
    space: Any

    def at(self, context: TrainingContext) -> ObservationThreat | None:
        """The threat at this point of the training (``None`` while eps is 0 or no scale is known yet)."""
        eps = self.config.eps * self.config.schedule(context.progress)
        scale = np.asarray(self.config.scale) if self.config.scale is not None else context.scale
        if eps <= 0 or scale is None:
            return None
        return ObservationThreat.for_space(self.space, scale, norm=self.config.norm, eps=eps)


@dataclass
class SmoothnessRegulariser:
    """SA-PPO's regulariser: ``kappa * mean_s max_{s' in B(s)} KL(pi(.|s) || pi(.|s'))`` (a
    :class:`~modelsec.rl.ppo.Regulariser`)."""

    threats: _Threats

    def __call__(self, module: nn.Module, obs: torch.Tensor, context: TrainingContext) -> torch.Tensor:
        config = self.threats.config
        threat = self.threats.at(context)
        kappa = config.kappa * config.schedule(context.progress)
        if threat is None or kappa == 0:
            return torch.zeros(())
        return kappa * smoothness(
            module,
            obs,
            threat,
            steps=config.attack_steps,
            step_size=config.attack_step_size * threat.eps,
            generator=context.generator,
        )


def smoothness(
    module: nn.Module,
    obs: torch.Tensor,
    threat: ObservationThreat,
    *,
    steps: int,
    step_size: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """The smoothness term ``mean_s max_{s' in B(s)} KL(pi(.|s) || pi(.|s'))`` (max by PGD), differentiable with
    respect to the parameters through ``pi(.|s')``; 0 at eps 0."""
    with torch.no_grad():
        clean = module(obs)
    worst = max_kl_observations(module, obs, threat, steps=steps, step_size=step_size, generator=generator, clean=clean)
    return action_kl(clean, module(worst)).mean()


@dataclass
class PGDObservations:
    """PGD-PPO's rollout hook (a :class:`~modelsec.rl.ppo.ObservationHook`): each environment's observation is
    attacked with probability ``attack_fraction`` (drawn from the training's generator) by PGD maximising the KL of
    the action distributions."""

    threats: _Threats

    def __call__(self, module: nn.Module, obs: torch.Tensor, context: TrainingContext) -> torch.Tensor:
        config = self.threats.config
        threat = self.threats.at(context)
        if threat is None or config.attack_fraction == 0:
            return obs
        chosen = torch.rand(obs.shape[0], generator=context.generator) < config.attack_fraction
        if not bool(chosen.any()):
            return obs
        attacked = max_kl_observations(
            module,
            obs[chosen],
            threat,
            steps=config.attack_steps,
            step_size=config.attack_step_size * threat.eps,
            generator=context.generator,
        )
        out = obs.clone()
        out[chosen] = attacked
        return out


def harden_policy(
    env_id: EnvSource,
    config: PolicyHardening | None = None,
    *,
    seed: int,
    policy: Policy | None = None,
    progress: Progress | None = None,
    checkpoint_dir: Path | str | None = None,
) -> PPOResult:
    """Train (``policy=None``) or fine-tune ``policy`` with the hardened PPO of ``config`` (see the module's
    docstring); resumable from ``checkpoint_dir`` as :func:`~modelsec.rl.ppo.train_ppo` is. The policy's card
    records the method and its settings under ``hardening``."""
    config = config or PolicyHardening()
    probe = new_env(env_id)
    try:
        space = probe.observation_space
        if not hasattr(space, "low") or space.shape is None:
            raise ConfigError("hardening needs a Box observation space")
        dim = int(np.prod(space.shape))
    finally:
        probe.close()
    if config.scale is not None and len(config.scale) != dim:
        raise ConfigError(f"scale has {len(config.scale)} values for observations of {dim} dimensions")
    threats = _Threats(config, space)
    regulariser = SmoothnessRegulariser(threats) if config.method == "sa-ppo" else None
    observe = PGDObservations(threats) if config.method == "pgd-ppo" else None
    settings = config.to_dict()
    settings.pop("ppo")
    result = train_ppo(
        env_id,
        config.ppo,
        seed=seed,
        policy=policy,
        progress=progress,
        checkpoint_dir=checkpoint_dir,
        regulariser=regulariser,
        observe=observe,
        run_info={"hardening": settings},
    )
    result.policy.card = {
        **result.policy.card,
        "algorithm": config.method,
        "hardening": {**settings, "fine_tuned": policy is not None},
    }
    return result


__all__ = [
    "METHODS",
    "PGDObservations",
    "PolicyHardening",
    "SmoothnessRegulariser",
    "action_kl",
    "harden_policy",
    "max_kl_observations",
    "smoothness",
]
