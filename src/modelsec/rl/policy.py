"""The one policy interface every policy attack, rollout and policy defense uses: :class:`Policy`.

A policy maps a batch of observations to what it would do (:class:`PolicyOutput`): for a discrete action space
the action preferences (logits of its action distribution; for a Q-learning policy such as DQN its Q-values, whose
argmax it plays and whose softmax serves as its preference, as in Huang et al. 2017), for a continuous one the
mean action (the deterministic action it plays, in the action space's units) and the log standard deviation of its
Gaussian when it is stochastic; and, where it has a critic, its own value estimate ``V(s)`` (the critic attack of
Zhang et al. 2020 minimises it). Everything is differentiable with respect to the observations, so white-box
attacks take gradients through it; a policy counts its queries (observations it was asked about), as a
:class:`~modelsec.models.base.Classifier` does.

:class:`TorchPolicy` wraps a torch module whose ``forward(obs)`` returns a :class:`PolicyOutput`; the built-in
architectures (:mod:`modelsec.rl.architectures`) and the Stable-Baselines3 reader (:mod:`modelsec.rl.sb3`) build
such modules, so that every source of policies gives the same interface.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from modelsec.core.errors import ConfigError

ActionKind = Literal["discrete", "continuous"]


@dataclass(frozen=True)
class ActionSpec:
    """A policy's action space: ``discrete`` with ``n`` actions, or ``continuous`` with one value per dimension
    between ``low`` and ``high`` (a Gymnasium ``Box``; actions outside are clipped by the environment)."""

    kind: ActionKind
    n: int = 0
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.kind == "discrete" and self.n < 2:
            raise ConfigError(f"a discrete action space needs at least 2 actions, got {self.n}")
        if self.kind == "continuous" and (not self.low or len(self.low) != len(self.high)):
            raise ConfigError("a continuous action space needs low and high bounds of one length")

    @property
    def dim(self) -> int:
        """Actions (discrete) or action dimensions (continuous)."""
        return self.n if self.kind == "discrete" else len(self.low)

    @classmethod
    def from_space(cls, space: Any) -> ActionSpec:
        """From a Gymnasium action space (``Discrete`` or a one-dimensional ``Box``)."""
        if hasattr(space, "n") and not hasattr(space, "low"):
            return cls("discrete", n=int(space.n))
        low, high = np.asarray(space.low, dtype=np.float64), np.asarray(space.high, dtype=np.float64)
        if low.ndim != 1:
            raise ConfigError(f"only one-dimensional Box action spaces are supported, got shape {low.shape}")
        return cls("continuous", low=tuple(low.tolist()), high=tuple(high.tolist()))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "n": self.n, "low": list(self.low), "high": list(self.high)}


@dataclass
class PolicyOutput:
    """What a policy would do for a batch of observations (every tensor's first axis is the batch).

    - ``logits`` (discrete): ``(B, n)`` action preferences; the policy plays their argmax when deterministic.
    - ``mean`` (continuous): ``(B, d)`` the action it plays when deterministic, in the action space's units.
    - ``log_std`` (continuous, stochastic policies): ``(B, d)`` or ``(d,)``.
    - ``value``: ``(B,)`` its own value estimate of the observation, when it has a critic.
    """

    logits: torch.Tensor | None = None
    mean: torch.Tensor | None = None
    log_std: torch.Tensor | None = None
    value: torch.Tensor | None = None


@dataclass
class Policy:
    """A policy: ``module(obs) -> PolicyOutput`` for observations of ``observation_shape`` and actions ``action``.

    Args:
        module: a torch module returning a :class:`PolicyOutput` (float32 observations, batch first).
        observation_shape: the shape of one observation.
        action: the action space.
        has_critic: whether :attr:`PolicyOutput.value` is set (a critic the policy was trained with).
        card: where the policy came from and how it was trained (format, algorithm, architecture, environment id,
            training settings): recorded in results as given.
    """

    module: nn.Module
    observation_shape: tuple[int, ...]
    action: ActionSpec
    has_critic: bool = False
    card: dict[str, Any] = field(default_factory=dict)
    queries: int = 0

    def __post_init__(self) -> None:
        self.module.eval()

    def output(self, obs: torch.Tensor) -> PolicyOutput:
        """The policy's output for a batch of observations (differentiable with respect to ``obs``)."""
        if obs.shape[1:] != self.observation_shape:
            raise ConfigError(
                f"observations of shape {tuple(obs.shape[1:])} for a policy of observation shape "
                f"{self.observation_shape}"
            )
        self.queries += obs.shape[0]
        out: PolicyOutput = self.module(obs.to(torch.float32))
        return out

    def actions(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic actions for a batch of observations: the argmax of the logits ``(B,)`` (int64), or
        the mean clipped to the action bounds ``(B, d)``."""
        with torch.no_grad():
            out = self.output(obs)
        if self.action.kind == "discrete":
            assert out.logits is not None
            return out.logits.argmax(dim=1)
        assert out.mean is not None
        low = torch.tensor(self.action.low, dtype=out.mean.dtype)
        high = torch.tensor(self.action.high, dtype=out.mean.dtype)
        return torch.maximum(torch.minimum(out.mean, high), low)

    def act(self, observation: np.ndarray) -> Any:
        """The deterministic action for one observation, as the environment takes it (an int, or a float array)."""
        action = self.actions(torch.as_tensor(np.asarray(observation, dtype=np.float32))[None])[0]
        return int(action.item()) if self.action.kind == "discrete" else action.numpy().astype(np.float32)
