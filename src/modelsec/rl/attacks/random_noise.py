"""The random-noise baseline: each observation replaced by a uniformly random point of the same ball.

Not an attack so much as the yardstick every attack is read against (Huang et al. 2017 and Zhang et al. 2020 report
it beside theirs): a policy that loses its return to random noise of some eps is fragile, not attacked; the gap
between the noise and an attack at one eps is what the attack's knowledge buys. Threat model: the observation
attacker of :mod:`modelsec.rl.attacks.base` with no knowledge of the policy (needs nothing, queries nothing). The
draws come from the episode's generator (:meth:`~modelsec.rl.attacks.base.PolicyAttack.reset`): the same seed gives
the same noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from modelsec.rl.attacks.base import POLICY_ATTACKS, PolicyAttack
from modelsec.rl.policy import Policy
from modelsec.rl.threat import ObservationThreat


@POLICY_ATTACKS.register("random")
@dataclass(kw_only=True)
class RandomNoise(PolicyAttack):
    """A uniformly random point of the threat model's ball (L-inf: uniform in the box; L2: uniform in the
    ball), clipped to the observation bounds, at every step."""

    name = "random"
    needs = "none"

    def _perturb(self, policy: Policy, obs: torch.Tensor, threat: ObservationThreat) -> tuple[torch.Tensor, bool]:
        return threat.random_point(obs, self.generator), True
