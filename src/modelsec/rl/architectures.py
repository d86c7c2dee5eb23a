"""The built-in policy networks: modules whose ``forward(obs)`` returns a :class:`~modelsec.rl.policy.PolicyOutput`.

Each has the parameter names of the matching Stable-Baselines3 policy, so the weights of an SB3 file load into it as
they are (:mod:`modelsec.rl.sb3`), and a ``config`` (JSON) from which :func:`build_policy_module` rebuilds it (the
policy files of :mod:`modelsec.rl.files` record it):

- :class:`ActorCriticMLP` (``actor-critic-mlp``): PPO's and A2C's network (Schulman et al. 2017, "Proximal Policy
  Optimization Algorithms"; Mnih et al. 2016, "Asynchronous Methods for Deep RL"): an actor MLP and a critic MLP
  over the flattened observation (after optional shared layers, as SB3 before 1.8 wrote them), an action head (the
  logits of a categorical distribution, or the mean of a diagonal Gaussian with a state-independent ``log_std``)
  and a value head (SB3's ``MlpPolicy``: ``mlp_extractor.policy_net``, ``mlp_extractor.value_net``, ``action_net``,
  ``value_net``, ``log_std``).
- :class:`QNetworkMLP` (``q-mlp``): DQN's Q-network (Mnih et al. 2015, "Human-level control through deep RL"): the
  Q-values of the actions serve as the logits (the policy plays their argmax), their maximum as the value
  ``V(s) = max_a Q(s, a)`` (SB3's ``DQNPolicy.q_net``: ``q_net.q_net``).
- :class:`SquashedGaussianActorCritic` (``sac-mlp``): SAC's actor and twin critics (Haarnoja et al. 2018, "Soft
  Actor-Critic"): the actor's Gaussian ``N(mu(s), exp(log_std(s)))`` squashed by ``tanh`` into ``[-1, 1]`` and
  rescaled to the action bounds, so the deterministic action is ``low + (tanh(mu) + 1) / 2 * (high - low)``; the
  critics ``Q_i(s, a)`` take the (squashed, ``[-1, 1]``) action, and the value is ``V(s) ~ min_i Q_i(s, a*(s))`` at
  the deterministic action ``a*(s)`` (the soft value without its entropy term; SB3's ``SACPolicy``: ``actor.latent_pi``,
  ``actor.mu``, ``actor.log_std``, ``critic.qf0``, ``critic.qf1``, ...).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import nn

from modelsec.core.errors import ConfigError
from modelsec.core.seeding import seeded
from modelsec.rl.policy import ActionSpec, Policy, PolicyOutput

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
}
"""The activations of the built-in networks, by name, each with its default settings (as SB3 builds
``activation_fn()``)."""

SAC_LOG_STD_BOUNDS = (-20.0, 2.0)
"""SAC's actor clamps its ``log_std`` to this range (SB3's ``LOG_STD_MIN``, ``LOG_STD_MAX``)."""


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {activation!r}; known: {', '.join(ACTIVATIONS)}")


def _flat_dim(observation_shape: tuple[int, ...]) -> int:
    dim = 1
    for size in observation_shape:
        dim *= size
    return dim


def mlp(sizes: list[int], activation: str) -> nn.Sequential:
    """Linear layers of ``sizes`` (in, hidden..., out) each followed by ``activation`` (SB3's layout: the indices
    of the linear layers are 0, 2, 4, ...)."""
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), ACTIVATIONS[activation]()]
    return nn.Sequential(*layers)


class _Extractor(nn.Module):
    def __init__(self, inputs: int, shared: list[int], hidden: list[int], critic: list[int], activation: str) -> None:
        super().__init__()
        self.shared_net = mlp([inputs, *shared], activation)  # no parameters (and no state) when ``shared`` is empty
        width = shared[-1] if shared else inputs
        self.policy_net = mlp([width, *hidden], activation)
        self.value_net = mlp([width, *critic], activation)


class ActorCriticMLP(nn.Module):
    """PPO's and A2C's actor-critic MLP (SB3's default ``MlpPolicy`` layout: 2 hidden layers of 64, tanh).

    Args:
        observation_dim: the flattened observation's size.
        action: the action space (categorical logits, or a diagonal Gaussian's mean and ``log_std``).
        hidden: the actor's hidden layers' sizes (and the critic's, unless ``critic_hidden`` is given).
        activation: a name of :data:`ACTIVATIONS` (``tanh``, ``relu``, ...).
        log_std_init: the initial ``log_std`` of a Gaussian policy.
        critic_hidden: the critic's hidden layers' sizes (``None``: those of ``hidden``).
        shared: hidden layers shared by actor and critic before their own (``mlp_extractor.shared_net``, as SB3
            before version 1.8 built them; empty by default).
    """

    def __init__(
        self,
        observation_dim: int,
        action: ActionSpec,
        hidden: tuple[int, ...] = (64, 64),
        activation: str = "tanh",
        log_std_init: float = 0.0,
        *,
        critic_hidden: tuple[int, ...] | None = None,
        shared: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        _check_activation(activation)
        critic = tuple(hidden) if critic_hidden is None else tuple(critic_hidden)
        self.action = action
        self.config: dict[str, Any] = {
            "arch": "actor-critic-mlp",
            "observation_dim": observation_dim,
            "hidden": list(hidden),
            "critic_hidden": list(critic),
            "shared": list(shared),
            "activation": activation,
        }
        self.mlp_extractor = _Extractor(observation_dim, list(shared), list(hidden), list(critic), activation)
        width = shared[-1] if shared else observation_dim
        self.action_net = nn.Linear(hidden[-1] if hidden else width, action.dim)
        self.value_net = nn.Linear(critic[-1] if critic else width, 1)
        if action.kind == "continuous":
            self.log_std = nn.Parameter(torch.full((action.dim,), float(log_std_init)))

    def forward(self, obs: torch.Tensor) -> PolicyOutput:
        features = self.mlp_extractor.shared_net(obs.flatten(1))
        head = self.action_net(self.mlp_extractor.policy_net(features))
        value = self.value_net(self.mlp_extractor.value_net(features)).squeeze(1)
        if self.action.kind == "discrete":
            return PolicyOutput(logits=head, value=value)
        return PolicyOutput(mean=head, log_std=self.log_std.expand_as(head), value=value)


def actor_critic_policy(
    observation_shape: tuple[int, ...],
    action: ActionSpec,
    *,
    hidden: tuple[int, ...] = (64, 64),
    activation: str = "tanh",
    seed: int,
    card: dict[str, Any] | None = None,
) -> Policy:
    """A freshly initialised :class:`ActorCriticMLP` policy (seeded; SB3-style orthogonal initialisation is the
    trainer's business, see :mod:`modelsec.rl.ppo`)."""
    with seeded(seed):
        module = ActorCriticMLP(_flat_dim(tuple(observation_shape)), action, hidden, activation)
    return Policy(module, tuple(observation_shape), action, has_critic=True, card=dict(card or {}))


class _QNet(nn.Module):
    def __init__(self, inputs: int, hidden: list[int], outputs: int, activation: str) -> None:
        super().__init__()
        self.q_net = mlp([inputs, *hidden], activation)
        self.q_net.append(nn.Linear(hidden[-1] if hidden else inputs, outputs))


class QNetworkMLP(nn.Module):
    """DQN's Q-network over the flattened observation (SB3's ``DQNPolicy.q_net``: 2 hidden layers of 64, relu):
    the Q-values are the logits, ``max_a Q(s, a)`` the value.

    Args:
        observation_dim: the flattened observation's size.
        action: a discrete action space.
        hidden: the hidden layers' sizes.
        activation: a name of :data:`ACTIVATIONS`.
    """

    def __init__(
        self, observation_dim: int, action: ActionSpec, hidden: tuple[int, ...] = (64, 64), activation: str = "relu"
    ) -> None:
        super().__init__()
        _check_activation(activation)
        if action.kind != "discrete":
            raise ConfigError("a Q-network (DQN) needs a discrete action space")
        self.action = action
        self.config: dict[str, Any] = {
            "arch": "q-mlp",
            "observation_dim": observation_dim,
            "hidden": list(hidden),
            "activation": activation,
        }
        self.q_net = _QNet(observation_dim, list(hidden), action.n, activation)

    def forward(self, obs: torch.Tensor) -> PolicyOutput:
        q = self.q_net.q_net(obs.flatten(1))
        return PolicyOutput(logits=q, value=q.max(dim=1).values)


class _SquashedActor(nn.Module):
    def __init__(self, inputs: int, hidden: list[int], outputs: int, activation: str) -> None:
        super().__init__()
        self.latent_pi = mlp([inputs, *hidden], activation)
        width = hidden[-1] if hidden else inputs
        self.mu = nn.Linear(width, outputs)
        self.log_std = nn.Linear(width, outputs)


class _TwinCritic(nn.Module):
    def __init__(self, inputs: int, hidden: list[int], critics: int, activation: str) -> None:
        super().__init__()
        self.critics = critics
        for i in range(critics):
            net = mlp([inputs, *hidden], activation)
            net.append(nn.Linear(hidden[-1] if hidden else inputs, 1))
            self.add_module(f"qf{i}", net)

    def q_values(self, obs: torch.Tensor, action: torch.Tensor) -> list[torch.Tensor]:
        both = torch.cat([obs, action], dim=1)
        return [getattr(self, f"qf{i}")(both).squeeze(1) for i in range(self.critics)]


class SquashedGaussianActorCritic(nn.Module):
    """SAC's actor (a ``tanh``-squashed Gaussian) and its ``critics`` Q-networks (SB3's ``SACPolicy``: 2 hidden
    layers of 256, relu, 2 critics).

    Outputs: ``mean`` the deterministic action ``low + (tanh(mu) + 1) / 2 * (high - low)``; ``log_std`` the
    Gaussian's (clamped to :data:`SAC_LOG_STD_BOUNDS`) carried through the squashing to first order (plus
    ``log(d action / d mu) = log((1 - tanh(mu)^2) (high - low) / 2)``), so that it is in the action's units as
    for a PPO policy; ``value`` ``min_i Q_i(s, tanh(mu))``, the critics' value of the deterministic action (they
    take actions scaled to ``[-1, 1]``, as SAC trains them).

    Args:
        observation_dim: the flattened observation's size.
        action: a continuous action space (its bounds must be finite).
        hidden: the actor's hidden layers' sizes.
        activation: a name of :data:`ACTIVATIONS`.
        critic_hidden: the critics' hidden layers' sizes (``None``: those of ``hidden``).
        critics: how many Q-networks.
    """

    low: torch.Tensor
    high: torch.Tensor

    def __init__(
        self,
        observation_dim: int,
        action: ActionSpec,
        hidden: tuple[int, ...] = (256, 256),
        activation: str = "relu",
        *,
        critic_hidden: tuple[int, ...] | None = None,
        critics: int = 2,
    ) -> None:
        super().__init__()
        _check_activation(activation)
        if action.kind != "continuous":
            raise ConfigError("SAC's squashed Gaussian actor needs a continuous action space")
        if not all(map(math.isfinite, (*action.low, *action.high))):
            raise ConfigError("SAC's squashed Gaussian actor needs finite action bounds")
        if critics < 1:
            raise ConfigError(f"SAC needs at least one critic, got {critics}")
        critic = tuple(hidden) if critic_hidden is None else tuple(critic_hidden)
        self.action = action
        self.config: dict[str, Any] = {
            "arch": "sac-mlp",
            "observation_dim": observation_dim,
            "hidden": list(hidden),
            "critic_hidden": list(critic),
            "critics": critics,
            "activation": activation,
        }
        self.actor = _SquashedActor(observation_dim, list(hidden), action.dim, activation)
        self.critic = _TwinCritic(observation_dim + action.dim, list(critic), critics, activation)
        self.register_buffer("low", torch.tensor(action.low, dtype=torch.float32), persistent=False)
        self.register_buffer("high", torch.tensor(action.high, dtype=torch.float32), persistent=False)

    def forward(self, obs: torch.Tensor) -> PolicyOutput:
        flat = obs.flatten(1)
        latent = self.actor.latent_pi(flat)
        squashed = torch.tanh(self.actor.mu(latent))
        log_std = self.actor.log_std(latent).clamp(*SAC_LOG_STD_BOUNDS)
        low, high = self.low, self.high
        mean = low + 0.5 * (squashed + 1.0) * (high - low)
        slope = (1.0 - squashed.pow(2)).clamp_min(1e-6) * 0.5 * (high - low)
        value = torch.stack(self.critic.q_values(flat, squashed)).min(dim=0).values
        return PolicyOutput(mean=mean, log_std=log_std + slope.log(), value=value)


def _sizes(config: dict[str, Any], key: str, default: list[int] | None = None) -> tuple[int, ...]:
    value = config.get(key, default)
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        raise ConfigError(f"the policy architecture's {key!r} must be a list of positive integers, got {value!r}")
    return tuple(value)


def build_policy_module(config: dict[str, Any], action: ActionSpec) -> nn.Module:
    """The built-in network a ``config`` (a module's ``config`` attribute, as policy files record it) describes,
    freshly initialised (seeded with 0: its weights are about to be replaced); :class:`ConfigError` for an unknown
    architecture or a malformed config."""
    if not isinstance(config, dict):
        raise ConfigError(f"a policy architecture must be a JSON object, got {type(config).__name__}")
    arch, dim, activation = config.get("arch"), config.get("observation_dim"), config.get("activation")
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise ConfigError(f"the policy architecture's observation_dim must be a positive integer, got {dim!r}")
    if not isinstance(activation, str):
        raise ConfigError(f"the policy architecture's activation must be a name, got {activation!r}")
    with seeded(0):
        if arch == "actor-critic-mlp":
            return ActorCriticMLP(
                dim,
                action,
                _sizes(config, "hidden"),
                activation,
                critic_hidden=_sizes(config, "critic_hidden", config.get("hidden")),
                shared=_sizes(config, "shared", []),
            )
        if arch == "q-mlp":
            return QNetworkMLP(dim, action, _sizes(config, "hidden"), activation)
        if arch == "sac-mlp":
            critics = config.get("critics")
            if not isinstance(critics, int) or isinstance(critics, bool):
                raise ConfigError(f"the policy architecture's critics must be an integer, got {critics!r}")
            return SquashedGaussianActorCritic(
                dim,
                action,
                _sizes(config, "hidden"),
                activation,
                critic_hidden=_sizes(config, "critic_hidden"),
                critics=critics,
            )
    raise ConfigError(f"unknown policy architecture {arch!r}; known: {', '.join(POLICY_ARCHITECTURES)}")


POLICY_ARCHITECTURES = ("actor-critic-mlp", "q-mlp", "sac-mlp")
"""The names of the built-in policy networks (their ``config["arch"]``)."""
