"""The critic attack: steer the policy towards observations its own critic values least (after Zhang et al. 2020,
"Robust Deep Reinforcement Learning against Adversarial Perturbations on State Observations", whose critic attack
minimises a learned action-value function over the perturbed observation).

Threat model: the observation attacker of :mod:`modelsec.rl.attacks.base`, white-box, every step attacked, against
a policy trained with a critic (PPO, A2C: :attr:`~modelsec.rl.policy.Policy.has_critic`). Zhang et al. train a
separate robust-Sarsa critic ``Q(s, a)`` and pick ``s'`` minimising ``Q(s, pi(s'))``; this attack uses the
policy's own state-value estimate instead, needing no training: it minimises ``V(s')`` by projected gradient
descent, i.e. makes the agent see the state as worse than it is, so that it acts to escape a danger that does not
exist. It is only as strong as the critic is accurate off the clean states.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from modelsec.rl.attacks.base import POLICY_ATTACKS
from modelsec.rl.attacks.gradient import GradientPolicyAttack, projected_ascent
from modelsec.rl.policy import Policy, PolicyOutput
from modelsec.rl.threat import ObservationThreat


def negative_value(out: PolicyOutput) -> torch.Tensor:
    """``-V(s')``, the critic attack's objective (maximised)."""
    if out.value is None:
        raise ValueError("the critic attack needs a policy whose output has a value")
    return -out.value.reshape(-1)


@POLICY_ATTACKS.register("critic")
@dataclass(kw_only=True)
class CriticAttack(GradientPolicyAttack):
    """Minimise the policy's own value estimate ``V(s')`` by ``steps`` projected-gradient steps (policies with a
    critic only)."""

    name = "critic"
    needs = "critic"

    def _perturb(self, policy: Policy, obs: torch.Tensor, threat: ObservationThreat) -> tuple[torch.Tensor, bool]:
        start = self.start_for(obs, threat)
        adv = projected_ascent(
            policy, obs, threat, negative_value, steps=self.steps, step_size=self.step_for(threat), start=start
        )
        return adv, True
