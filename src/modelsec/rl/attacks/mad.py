"""The maximal action difference (MAD) attack on continuous-action policies (Zhang et al. 2020, "Robust Deep
Reinforcement Learning against Adversarial Perturbations on State Observations", section on attacks).

Threat model: the observation attacker of :mod:`modelsec.rl.attacks.base`, white-box (gradients through the
policy). MAD pushes the policy's action distribution at ``s'`` as far as it can from the one at ``s``: it maximises
``KL(pi(.|s) || pi(.|s'))`` by projected gradient ascent. For a diagonal Gaussian policy
(:attr:`~modelsec.rl.policy.PolicyOutput.log_std` set) that is
``sum_i log(sigma'_i / sigma_i) + (sigma_i^2 + (mu_i - mu'_i)^2) / (2 sigma'_i^2) - 1/2``; with a state-independent
``log_std`` (PPO's and SB3's default) it is ``||(mu' - mu) / sigma||^2 / 2``, the action deviation weighted by the
policy's own noise. A deterministic policy (no ``log_std``) gets the squared deviation of its action
``||mu(s') - mu(s)||_2^2``.

The objective and its gradient vanish at ``s' = s``, so the ascent always starts from a uniformly random point of
the ball (as Zhang et al.'s implementation does); it returns the last iterate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from modelsec.rl.attacks.base import POLICY_ATTACKS
from modelsec.rl.attacks.gradient import GradientPolicyAttack, Objective, projected_ascent
from modelsec.rl.policy import Policy, PolicyOutput
from modelsec.rl.threat import ObservationThreat


def action_deviation(policy: Policy, clean: torch.Tensor) -> Objective:
    """MAD's objective at the clean observations ``clean``: the KL divergence from the clean action distribution
    (Gaussian policies), or the squared deviation of the mean action (deterministic ones), per observation."""
    with torch.no_grad():
        out = policy.output(clean)
    if out.mean is None:
        raise ValueError("action_deviation needs a continuous policy (an output with a mean)")
    mean0 = out.mean.detach()
    log_std0 = None if out.log_std is None else out.log_std.detach()

    def objective(adv: PolicyOutput) -> torch.Tensor:
        assert adv.mean is not None
        if log_std0 is None or adv.log_std is None:
            return (adv.mean - mean0).pow(2).flatten(1).sum(dim=1)
        var0, var1 = torch.exp(2 * log_std0), torch.exp(2 * adv.log_std)
        kl = adv.log_std - log_std0 + (var0 + (mean0 - adv.mean).pow(2)) / (2 * var1) - 0.5
        return kl.expand_as(adv.mean).flatten(1).sum(dim=1)

    return objective


def deviation_attack(
    attack: GradientPolicyAttack, policy: Policy, obs: torch.Tensor, threat: ObservationThreat
) -> torch.Tensor:
    """MAD with ``attack``'s steps and step size (always from a random start)."""
    return projected_ascent(
        policy,
        obs,
        threat,
        action_deviation(policy, obs),
        steps=attack.steps,
        step_size=attack.step_for(threat),
        start=attack.start_for(obs, threat, random=True),
    )


@POLICY_ATTACKS.register("mad")
@dataclass(kw_only=True)
class MADAttack(GradientPolicyAttack):
    """Maximal action difference (Zhang et al. 2020): ``steps`` projected-gradient steps maximising the KL
    divergence of the action distribution at ``s'`` from the one at ``s`` (continuous actions), from a random
    start."""

    name = "mad"
    needs = "gradients"
    action_kinds = frozenset({"continuous"})
    random_start: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.random_start:
            raise self.invalid("MAD starts from a random point (its objective's gradient vanishes at s)")

    def _perturb(self, policy: Policy, obs: torch.Tensor, threat: ObservationThreat) -> tuple[torch.Tensor, bool]:
        return deviation_attack(self, policy, obs, threat), True
