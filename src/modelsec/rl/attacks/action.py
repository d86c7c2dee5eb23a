"""FGSM and PGD on a policy's action choice (Huang et al. 2017, "Adversarial Attacks on Neural Network Policies").

Threat model: the observation attacker of :mod:`modelsec.rl.attacks.base`, white-box (gradients through the
policy), every step attacked.

Discrete actions: Huang et al. push probability away from the action the policy would take: they maximise the
cross-entropy of the policy's logits at ``s'`` against the clean action ``a = argmax_a pi(a|s)``. FGSM takes one step
of size eps along the norm's steepest-ascent direction (the sign of the gradient for L-inf, the normalised gradient
for L2), in units of each dimension's ``scale``; PGD (Madry et al. 2018) takes ``steps`` projected steps. In RL the
damage comes from the action played, not from the confidence, so PGD stops, per observation, at the first iterate
whose argmax differs from ``a``: pushing further cannot make the action played any more wrong.

Continuous actions: ``pgd`` maximises the same objective as :mod:`~modelsec.rl.attacks.mad` (the KL divergence of
the action distribution from the clean one, or the squared deviation of a deterministic action), from a random
start (the objective's gradient vanishes at ``s``); ``fgsm`` is one such step of size eps. So ``pgd`` runs on both
CartPole-v1 and Pendulum-v1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from modelsec.rl.attacks.base import POLICY_ATTACKS, PolicyAttack
from modelsec.rl.attacks.gradient import GradientPolicyAttack, projected_ascent
from modelsec.rl.attacks.mad import action_deviation, deviation_attack
from modelsec.rl.policy import Policy, PolicyOutput
from modelsec.rl.threat import ObservationThreat


def action_flip_attack(
    policy: Policy,
    obs: torch.Tensor,
    threat: ObservationThreat,
    *,
    steps: int,
    step_size: float,
    start: torch.Tensor,
) -> torch.Tensor:
    """Huang et al.'s attack on a discrete policy: projected ascent of the cross-entropy against the clean argmax
    action, each observation stopped at its first iterate that changes the argmax."""
    with torch.no_grad():
        logits = policy.output(obs).logits
    assert logits is not None
    clean_action = logits.argmax(dim=1)

    def objective(out: PolicyOutput) -> torch.Tensor:
        assert out.logits is not None
        return F.cross_entropy(out.logits, clean_action.to(out.logits.device), reduction="none")

    def flipped(out: PolicyOutput) -> torch.Tensor:
        assert out.logits is not None
        return out.logits.argmax(dim=1) != clean_action.to(out.logits.device)

    return projected_ascent(policy, obs, threat, objective, steps=steps, step_size=step_size, start=start, stop=flipped)


def targeted_action_attack(
    policy: Policy,
    obs: torch.Tensor,
    threat: ObservationThreat,
    target: torch.Tensor,
    *,
    steps: int,
    step_size: float,
) -> torch.Tensor:
    """Make a discrete policy play ``target`` (``(B,)`` action indices): projected ascent, from the clean
    observation, of the logit margin ``z_target - max_{j != target} z_j`` (Carlini and Wagner 2017's margin,
    which keeps its gradient where the softmax saturates), each observation stopped at its first iterate whose
    argmax is the target (an observation already playing it is not moved). Deterministic; ``steps + 1`` queries per
    observation at most."""

    def margin(out: PolicyOutput) -> torch.Tensor:
        assert out.logits is not None
        wanted = target.to(out.logits.device)
        picked = out.logits.gather(1, wanted[:, None]).squeeze(1)
        others = out.logits.scatter(1, wanted[:, None], float("-inf")).amax(dim=1)
        return picked - others

    def reached(out: PolicyOutput) -> torch.Tensor:
        assert out.logits is not None
        return out.logits.argmax(dim=1) == target.to(out.logits.device)

    return projected_ascent(policy, obs, threat, margin, steps=steps, step_size=step_size, start=obs.clone(),
                            stop=reached)  # fmt: skip


@POLICY_ATTACKS.register("pgd")
@dataclass(kw_only=True)
class PGDAttack(GradientPolicyAttack):
    """PGD on the action (Huang et al. 2017 with Madry et al. 2018's iterations): discrete policies, the
    cross-entropy against the clean action, stopped at the first iterate that changes it (from a random start when
    ``random_start``); continuous policies, MAD's objective from a random start."""

    name = "pgd"
    needs = "gradients"
    random_start: bool = True

    def _perturb(self, policy: Policy, obs: torch.Tensor, threat: ObservationThreat) -> tuple[torch.Tensor, bool]:
        if policy.action.kind == "continuous":
            return deviation_attack(self, policy, obs, threat), True
        start = self.start_for(obs, threat)
        return action_flip_attack(
            policy, obs, threat, steps=self.steps, step_size=self.step_for(threat), start=start
        ), True


@POLICY_ATTACKS.register("fgsm")
@dataclass(kw_only=True)
class FGSMAttack(PolicyAttack):
    """FGSM on the action (Huang et al. 2017): one step of size eps from the clean observation along the
    steepest-ascent direction of the cross-entropy against the clean action (discrete); for continuous actions one
    step of size eps of MAD's objective from a random point of the ball. Has no settings."""

    name = "fgsm"
    needs = "gradients"

    def _perturb(self, policy: Policy, obs: torch.Tensor, threat: ObservationThreat) -> tuple[torch.Tensor, bool]:
        if policy.action.kind == "continuous":
            start = threat.random_point(obs, self.generator)
            objective = action_deviation(policy, obs)
            return projected_ascent(policy, obs, threat, objective, steps=1, step_size=threat.eps, start=start), True
        return action_flip_attack(policy, obs, threat, steps=1, step_size=threat.eps, start=obs.clone()), True
