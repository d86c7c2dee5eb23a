"""The built-in policy networks: modules whose ``forward(obs)`` returns a :class:`~modelsec.rl.policy.PolicyOutput`.

:class:`ActorCriticMLP` is the actor-critic network of PPO and A2C (Schulman et al. 2017; Mnih et al. 2016): an
actor MLP and a separate critic MLP over the flattened observation, an action head (the logits of a categorical
distribution, or the mean of a diagonal Gaussian with a state-independent ``log_std``) and a value head. Its
parameter names are those of Stable-Baselines3's default ``MlpPolicy`` (``mlp_extractor.policy_net``,
``mlp_extractor.value_net``, ``action_net``, ``value_net``, ``log_std``), so the weights of an SB3 PPO or A2C
policy load into it as they are.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn

from modelsec.core.errors import ConfigError
from modelsec.core.seeding import seeded
from modelsec.rl.policy import ActionSpec, Policy, PolicyOutput

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}


def mlp(sizes: list[int], activation: str) -> nn.Sequential:
    """Linear layers of ``sizes`` (in, hidden..., out) each followed by ``activation`` (SB3's layout: the indices
    of the linear layers are 0, 2, 4, ...)."""
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), ACTIVATIONS[activation]()]
    return nn.Sequential(*layers)


class _Extractor(nn.Module):
    def __init__(self, inputs: int, hidden: list[int], activation: str) -> None:
        super().__init__()
        self.policy_net = mlp([inputs, *hidden], activation)
        self.value_net = mlp([inputs, *hidden], activation)


class ActorCriticMLP(nn.Module):
    """PPO's and A2C's actor-critic MLP (SB3's default ``MlpPolicy`` layout: 2 hidden layers of 64, tanh).

    Args:
        observation_dim: the flattened observation's size.
        action: the action space (categorical logits, or a diagonal Gaussian's mean and ``log_std``).
        hidden: the hidden layers' sizes, of the actor and of the critic alike.
        activation: ``tanh`` or ``relu``.
        log_std_init: the initial ``log_std`` of a Gaussian policy.
    """

    def __init__(
        self,
        observation_dim: int,
        action: ActionSpec,
        hidden: tuple[int, ...] = (64, 64),
        activation: str = "tanh",
        log_std_init: float = 0.0,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {activation!r}; known: {', '.join(ACTIVATIONS)}")
        self.action = action
        self.config = {
            "arch": "actor-critic-mlp",
            "observation_dim": observation_dim,
            "hidden": list(hidden),
            "activation": activation,
        }
        self.mlp_extractor = _Extractor(observation_dim, list(hidden), activation)
        self.action_net = nn.Linear(hidden[-1], action.dim)
        self.value_net = nn.Linear(hidden[-1], 1)
        if action.kind == "continuous":
            self.log_std = nn.Parameter(torch.full((action.dim,), float(log_std_init)))

    def forward(self, obs: torch.Tensor) -> PolicyOutput:
        flat = obs.flatten(1)
        head = self.action_net(self.mlp_extractor.policy_net(flat))
        value = self.value_net(self.mlp_extractor.value_net(flat)).squeeze(1)
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
    dim = 1
    for size in observation_shape:
        dim *= size
    with seeded(seed):
        module = ActorCriticMLP(dim, action, hidden, activation)
    return Policy(module, tuple(observation_shape), action, has_critic=True, card=dict(card or {}))
