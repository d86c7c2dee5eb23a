"""The strategically-timed attack (Lin et al. 2017, "Tactics of Adversarial Attack on Deep Reinforcement Learning
Agents"): attack only the steps where the policy cares most about its choice, under a budget of attacked steps.

Threat model: the observation attacker of :mod:`modelsec.rl.attacks.base` who wants to stay inconspicuous (or has a
limited number of perturbations): it perturbs at most a fraction ``budget`` of the steps. Lin et al. measure how
much a policy prefers one action with ``c(s) = max_a pi(a|s) - min_a pi(a|s)`` (``pi`` the softmax of the policy's
logits; for a Q-learning policy, of its Q-values) and attack, with an inner attack, only where ``c(s)`` reaches a
threshold ``beta``: at the other steps a changed action costs little. In Atari they reach a reward reduction close
to attacking every step while attacking about a quarter of the steps.

Here the budget is a hard cap at every prefix of the episode: at step ``t`` (1-based) the attack fires only if,
counting this step, at most ``budget * t`` steps have been attacked, so a run never exceeds the budget at any
point (and the first attack comes at step ``ceil(1 / budget)``). ``threshold`` is ``beta``; by default (``None``)
it adapts to the episode: a step qualifies when its ``c(s)`` is at least the ``1 - budget`` quantile of the
preferences seen so far in this episode (this step included), i.e. when it is among the episode's top ``budget``
fraction of decisive moments, which needs no clean rollouts beforehand. A fixed ``threshold`` (e.g. a quantile of
``c(s)`` over clean rollouts) follows Lin et al. exactly. Discrete actions only (``c(s)`` is a property of a
categorical distribution).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from modelsec.core.errors import ConfigError
from modelsec.core.seeding import derived_seed
from modelsec.rl.attacks.base import POLICY_ATTACKS, PolicyAttack
from modelsec.rl.policy import Policy
from modelsec.rl.threat import ObservationThreat


def action_preference(policy: Policy, obs: torch.Tensor) -> torch.Tensor:
    """Lin et al.'s ``c(s) = max_a pi(a|s) - min_a pi(a|s)`` for each observation (``pi`` = softmax of the
    logits), in ``[0, 1)``; one query per observation."""
    with torch.no_grad():
        logits = policy.output(obs).logits
    if logits is None:
        raise ConfigError("the action preference c(s) needs a discrete policy (logits)")
    probs = torch.softmax(logits.to(torch.float64), dim=1)
    return (probs.amax(dim=1) - probs.amin(dim=1)).to(torch.float32)


@POLICY_ATTACKS.register("timed")
@dataclass(kw_only=True)
class TimedAttack(PolicyAttack):
    """Strategically-timed attack (Lin et al. 2017): the ``inner`` attack (a name, built with its defaults, or an
    attack) at the steps whose preference ``c(s)`` reaches ``threshold`` (``None``: the episode's running ``1 -
    budget`` quantile), never more than ``budget`` of the steps so far."""

    name = "timed"
    needs = "gradients"
    action_kinds = frozenset({"discrete"})

    inner: PolicyAttack | str = "pgd"
    threshold: float | None = None
    budget: float = 0.25

    _inner: PolicyAttack = field(init=False, repr=False, compare=False)
    _preferences: list[float] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.budget <= 1.0:
            raise self.invalid(f"budget must lie in (0, 1], got {self.budget}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise self.invalid(f"threshold (a difference of probabilities) must lie in [0, 1], got {self.threshold}")
        inner = POLICY_ATTACKS.get(self.inner)() if isinstance(self.inner, str) else self.inner
        if isinstance(inner, TimedAttack):
            raise self.invalid("the inner attack cannot itself be timed")
        self._inner = inner

    @property
    def inner_attack(self) -> PolicyAttack:
        """The attack run at the chosen steps."""
        return self._inner

    def unsupported_reason(self, policy: Policy, threat: ObservationThreat) -> str | None:
        return super().unsupported_reason(policy, threat) or self._inner.unsupported_reason(policy, threat)

    def _reset(self, seed: int) -> None:
        self._inner.reset(derived_seed(seed, "timed-inner"))
        self._preferences = []

    def _perturb(self, policy: Policy, obs: torch.Tensor, threat: ObservationThreat) -> tuple[torch.Tensor, bool]:
        if obs.shape[0] != 1:
            raise ConfigError(f"the timed attack perturbs one observation per step, got a batch of {obs.shape[0]}")
        preference = float(action_preference(policy, obs)[0])
        self._preferences.append(preference)
        step = self.steps_seen + 1  # this step, 1-based
        within_budget = self.attacked_steps + 1 <= self.budget * step + 1e-9
        if not within_budget:
            return obs, False
        if self.threshold is not None:
            threshold = self.threshold
        else:
            threshold = float(np.quantile(np.asarray(self._preferences), 1.0 - self.budget))
        if preference < threshold:
            return obs, False
        adv, _ = self._inner.perturb(policy, obs, threat)
        return adv, True
