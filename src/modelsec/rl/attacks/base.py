"""The policy-attack contract: a final :meth:`PolicyAttack.perturb` that no subclass can weaken.

Threat model (the state-adversarial MDP of Zhang et al. 2020, "Robust Deep Reinforcement Learning against
Adversarial Perturbations on State Observations"): at each step an attacker between the environment and the agent
replaces the observation ``s`` the policy sees with an ``s'`` inside an :class:`~modelsec.rl.threat.ObservationThreat`
(an eps-ball in units of each dimension's standard deviation, inside the observation space's bounds); the
environment's true state is untouched and steps with the action the policy chose from ``s'``.

After Foolbox 3's ``Attack.__call__``: subclasses implement only :meth:`PolicyAttack._perturb` (the algorithm); the
base class refuses a policy or threat model the attack cannot handle (:meth:`PolicyAttack.unsupported_reason`),
checks the observations, and VERIFIES every returned observation (inside the ball and the bounds, finite, the same
shape; unchanged when the step is reported as not attacked), raising :class:`AttackContractError` otherwise. An
attack is stateful within an episode (its generator, a timed attack's count of attacked steps):
:meth:`PolicyAttack.reset` starts an episode with its seed.

Every attack is registered in :data:`POLICY_ATTACKS` under its name and built from keyword settings with
defaults, e.g. ``POLICY_ATTACKS.get("pgd")(steps=20)``. Queries are counted by the policy itself
(:attr:`~modelsec.rl.policy.Policy.queries`): an attack's forward passes count as the policy's queries.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, final

import torch

from modelsec.core.errors import ConfigError, DataError
from modelsec.core.registry import Registry
from modelsec.core.seeding import derived_generator
from modelsec.rl.policy import Policy
from modelsec.rl.threat import ObservationThreat

ATTACK_NEEDS = ("none", "gradients", "critic")
"""What an attack needs of a policy: nothing but its actions, gradients through it, or its own critic."""


class AttackContractError(RuntimeError):
    """A policy attack returned an observation outside its threat model (a bug in the attack, not a user error)."""


@dataclass(kw_only=True)
class PolicyAttack(abc.ABC):
    """Base of every policy attack. Subclasses are keyword-only dataclasses of hyper-parameters (validated in
    ``__post_init__``) that implement :meth:`_perturb`, and set the class attributes:

    - ``name``: the registered name;
    - ``needs``: ``"none"`` (actions only), ``"gradients"`` or ``"critic"`` (the policy's own value head);
    - ``action_kinds``: the action spaces it attacks (``"discrete"``, ``"continuous"``).
    """

    name: ClassVar[str]
    needs: ClassVar[str] = "gradients"
    action_kinds: ClassVar[frozenset[str]] = frozenset({"discrete", "continuous"})
    supported_norms: ClassVar[tuple[str, ...]] = ("linf", "l2")

    # per-episode state, set by reset()
    _generator: torch.Generator | None = field(default=None, init=False, repr=False, compare=False)
    steps_seen: int = field(default=0, init=False, repr=False, compare=False)
    """Steps of the current episode seen by :meth:`perturb`."""
    attacked_steps: int = field(default=0, init=False, repr=False, compare=False)
    """Steps of the current episode that :meth:`perturb` attacked."""

    def params(self) -> dict[str, Any]:
        """The hyper-parameters, as given (for reports and configs)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.init:
                value = getattr(self, f.name)
                out[f.name] = {"attack": value.name, **value.params()} if isinstance(value, PolicyAttack) else value
        return out

    def unsupported_reason(self, policy: Policy, threat: ObservationThreat) -> str | None:
        """Why this attack cannot run on ``policy`` within ``threat`` (``None``: it can); the one place that
        decides: :meth:`perturb` refuses with it and an audit's plan skips the attack with it."""
        if threat.norm not in self.supported_norms:
            return f"does not support the {threat.norm} norm"
        if policy.action.kind not in self.action_kinds:
            return (
                f"attacks {' or '.join(sorted(self.action_kinds))} actions only; the policy's are {policy.action.kind}"
            )
        if self.needs == "critic" and not policy.has_critic:
            return "needs the policy's own value estimate (a critic); this policy has none"
        return None

    # -- validation of the hyper-parameters, for the subclasses' ``__post_init__`` ---------------------------------

    def invalid(self, message: str) -> ConfigError:
        """A :class:`ConfigError` about this attack's hyper-parameters (prefixed with its name)."""
        return ConfigError(f"{self.name}: {message}")

    def check_positive(self, *fields: str, optional: bool = False, integer: bool = False) -> None:
        """Each hyper-parameter of ``fields`` must be a finite number > 0 (an integer with ``integer``; or
        ``None`` with ``optional``)."""
        for f in fields:
            value = getattr(self, f)
            if optional and value is None:
                continue
            if integer and (not isinstance(value, int) or isinstance(value, bool)):
                raise self.invalid(f"{f} must be an integer, got {value!r}")
            if not isinstance(value, int | float) or not value > 0 or math.isinf(value):
                raise self.invalid(f"{f} must be a finite number > 0, got {value!r}")

    # -- the episode ---------------------------------------------------------------------------------------------

    def reset(self, seed: int) -> None:
        """Start an episode: a fresh generator (from ``seed`` and the attack's name) and per-episode state."""
        self._generator = derived_generator(seed, "policy-attack", self.name)
        self.steps_seen = 0
        self.attacked_steps = 0
        self._reset(seed)

    def _reset(self, seed: int) -> None:  # noqa: B027 - a hook, empty by default
        """Reset a subclass's own per-episode state (called by :meth:`reset`)."""

    @property
    def generator(self) -> torch.Generator:
        """This episode's generator (every random draw of the attack comes from it)."""
        if self._generator is None:
            raise RuntimeError(f"{self.name}: call reset(seed) at the start of each episode before perturb()")
        return self._generator

    @abc.abstractmethod
    def _perturb(self, policy: Policy, obs: torch.Tensor, threat: ObservationThreat) -> tuple[torch.Tensor, bool]:
        """The algorithm: the observations the policy should see instead of ``obs`` (float32, ``(B, *shape)``,
        inside the threat model: project with :meth:`~modelsec.rl.threat.ObservationThreat.project`), and whether
        this step was attacked (``False``: ``obs`` returned unchanged)."""

    @final
    def perturb(self, policy: Policy, obs: torch.Tensor, threat: ObservationThreat) -> tuple[torch.Tensor, bool]:
        """Perturb the observations ``obs`` (``(1, *policy.observation_shape)`` at a step of an episode; attacks
        other than ``timed`` take any batch, e.g. one of adversarial training) within ``threat``. Returns the
        perturbed observations (float32, detached, verified to lie in the threat model) and whether this step was
        attacked. :meth:`reset` must have started the episode.

        An observation outside the threat model's bounds (some environments emit them) is returned unchanged; the
        others of its batch are attacked.
        """
        if self._generator is None:
            raise RuntimeError(f"{self.name}: call reset(seed) at the start of each episode before perturb()")
        reason = self.unsupported_reason(policy, threat)
        if reason is not None:
            raise ConfigError(f"{self.name} attack: {reason}")
        if obs.ndim != len(policy.observation_shape) + 1 or tuple(obs.shape[1:]) != policy.observation_shape:
            raise DataError(
                f"observations of shape {tuple(obs.shape)} for a policy of observation shape "
                f"{policy.observation_shape} (expected a batch: (B, *shape))"
            )
        if obs[0].numel() != len(threat.scale):
            raise ConfigError(
                f"the threat model has {len(threat.scale)} dimensions; the observations have {obs[0].numel()}"
            )
        clean = obs.detach().to(torch.float32)
        if not torch.isfinite(clean).all():
            raise DataError("observations contain NaN or Inf")
        low = torch.tensor(threat.low, dtype=clean.dtype).view(1, *clean.shape[1:])
        high = torch.tensor(threat.high, dtype=clean.dtype).view(1, *clean.shape[1:])
        in_bounds = ((clean >= low) & (clean <= high)).flatten(1).all(dim=1)
        if not bool(in_bounds.any()):
            self.steps_seen += 1
            return clean.clone(), False
        subset = clean if bool(in_bounds.all()) else clean[in_bounds]
        perturbed, attacked = self._perturb(policy, subset.clone(), threat)
        perturbed = perturbed.detach()
        self._verify(subset, perturbed, bool(attacked), threat)
        if subset is not clean:
            merged = clean.clone()
            merged[in_bounds] = perturbed
            perturbed = merged
        self.steps_seen += 1
        self.attacked_steps += int(bool(attacked))
        return perturbed, bool(attacked)

    def _verify(self, clean: torch.Tensor, perturbed: torch.Tensor, attacked: bool, threat: ObservationThreat) -> None:
        # Invariants of the contract: a failure here is a bug in the attack, not a user error.
        if perturbed.shape != clean.shape or perturbed.dtype != torch.float32:
            raise AttackContractError(
                f"{self.name} returned observations of shape {tuple(perturbed.shape)} ({perturbed.dtype}) for "
                f"{tuple(clean.shape)} (float32)"
            )
        inside = threat.contains(clean, perturbed)
        if not bool(inside.all()):
            distance = float(threat.distance(clean, perturbed).max())
            raise AttackContractError(
                f"{self.name} returned an observation outside the threat model ({threat.norm} eps={threat.eps:g}: "
                f"distance {distance:g} in units of scale, the bounds, finite values)"
            )
        if not attacked and not torch.equal(perturbed, clean):
            raise AttackContractError(f"{self.name} changed an observation at a step it reported as not attacked")


POLICY_ATTACKS: Registry[type[PolicyAttack]] = Registry("policy attack")
"""Every policy attack by name: ``random``, ``fgsm``, ``pgd``, ``mad``, ``critic``, ``timed`` (and ``learned``)."""
