"""Attacks on a policy's observations, all through one contract that verifies each perturbation
(:class:`~modelsec.rl.attacks.base.PolicyAttack`), registered in :data:`POLICY_ATTACKS`:

- ``random``: uniform noise of the same ball, the baseline (:mod:`~modelsec.rl.attacks.random_noise`);
- ``fgsm`` / ``pgd``: push probability away from the clean action (Huang et al. 2017), or for continuous actions
  maximise the action's deviation (:mod:`~modelsec.rl.attacks.action`);
- ``mad``: maximal action difference (Zhang et al. 2020, :mod:`~modelsec.rl.attacks.mad`);
- ``critic``: minimise the policy's own value estimate (:mod:`~modelsec.rl.attacks.critic`);
- ``timed``: the strategically-timed attack under a budget of steps (Lin et al. 2017,
  :mod:`~modelsec.rl.attacks.timed`);
- ``learned``: a PPO-trained optimal adversary (Zhang et al. 2021, :mod:`~modelsec.rl.attacks.learned`).
"""

from modelsec.rl.attacks import action, critic, learned, mad, random_noise, timed
from modelsec.rl.attacks.base import POLICY_ATTACKS, AttackContractError, PolicyAttack

__all__ = [
    "POLICY_ATTACKS",
    "AttackContractError",
    "PolicyAttack",
    "action",
    "critic",
    "learned",
    "mad",
    "random_noise",
    "timed",
]
