"""Hand-built policies and a toy environment for the policy tests: their behaviour, and the optimal observation
attack against them, are known in closed form (no training)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from modelsec.rl.policy import ActionSpec, Policy, PolicyOutput


class LinearLogits(nn.Module):
    """A linear discrete policy: ``logits = s @ W.T + b``; with a value head ``V(s) = v.s`` when ``v`` is given."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor | None = None, v: torch.Tensor | None = None) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone().to(torch.float32))
        self.b = nn.Parameter(torch.zeros(w.shape[0]) if b is None else b.clone().to(torch.float32))
        self.v = None if v is None else nn.Parameter(v.clone().to(torch.float32))

    def forward(self, obs: torch.Tensor) -> PolicyOutput:
        flat = obs.flatten(1)
        value = None if self.v is None else flat @ self.v
        return PolicyOutput(logits=flat @ self.w.T + self.b, value=value)


class LinearGaussian(nn.Module):
    """A linear continuous policy: ``mean = s @ W.T`` (and a state-independent ``log_std`` when given)."""

    def __init__(self, w: torch.Tensor, log_std: torch.Tensor | None = None) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone().to(torch.float32))
        self.log_std = None if log_std is None else nn.Parameter(log_std.clone().to(torch.float32))

    def forward(self, obs: torch.Tensor) -> PolicyOutput:
        mean = obs.flatten(1) @ self.w.T
        log_std = None if self.log_std is None else self.log_std.expand_as(mean)
        return PolicyOutput(mean=mean, log_std=log_std)


def linear_policy(w: torch.Tensor, *, critic: torch.Tensor | None = None) -> Policy:
    """A discrete linear policy over observations of ``w.shape[1]`` dimensions."""
    return Policy(LinearLogits(w, v=critic), (w.shape[1],), ActionSpec("discrete", n=w.shape[0]), critic is not None)


def cartpole_controller(gain: float = 10.0, *, critic: bool = False) -> Policy:
    """CartPole-v1's classic linear controller as a policy: push right (action 1) iff ``theta + 0.5 theta_dot > 0``
    (it balances the pole for the whole episode); with ``critic``, a value head ``V = -theta_dot`` (not a real
    critic: a differentiable one, for the critic attack's mechanics)."""
    w = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, gain, 0.5 * gain]])
    v = torch.tensor([0.0, 0.0, 0.0, -1.0]) if critic else None
    return linear_policy(w, critic=v)


def pendulum_controller(*, stochastic: bool = False) -> Policy:
    """A linear Pendulum-v1 policy (torque ``-2 sin(theta) - 0.5 theta_dot``; it damps, it does not swing up)."""
    w = torch.tensor([[0.0, -2.0, -0.5]])
    log_std = torch.tensor([-0.5]) if stochastic else None
    return Policy(LinearGaussian(w, log_std), (3,), ActionSpec("continuous", low=(-2.0,), high=(2.0,)))


# The toy environment: fixed observations, reward 1 when the action is the clean policy's action.
TOY_ID = "modelsec-test/Toy-v0"
TOY_W = torch.tensor([[0.0, 0.0, 0.0], [1.0, -2.0, 0.5]])  # logits (0, w.s): action 1 iff w.s > 0
TOY_OBS = np.array(
    [
        [0.30, 0.10, 0.20],
        [-0.20, 0.05, 0.40],
        [0.05, -0.10, -0.30],
        [1.00, 0.20, 0.10],
        [-0.50, -0.40, 0.60],
        [0.10, 0.30, -0.20],
        [0.02, 0.00, 0.05],
        [-1.20, 0.10, 0.30],
        [0.40, -0.30, -0.10],
        [0.00, -0.05, 0.20],
        [0.60, 0.50, -0.40],
        [-0.10, -0.20, 0.10],
    ],
    dtype=np.float32,
)


def toy_margins() -> np.ndarray:
    """``logit_1 - logit_0`` of the toy policy at each toy observation."""
    return TOY_OBS.astype(np.float64) @ (TOY_W[1] - TOY_W[0]).double().numpy()


def register_toy() -> str:
    """Register the toy environment with Gymnasium (once) and return its id: observations ``TOY_OBS`` in order;
    reward 1 when the action is the toy policy's clean action, 0 otherwise; the episode ends after the last one."""
    import gymnasium
    from gymnasium import spaces

    if TOY_ID in gymnasium.registry:
        return TOY_ID

    class _Toy(gymnasium.Env[np.ndarray, int]):
        metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 - Gymnasium's own attribute

        def __init__(self, render_mode: str | None = None) -> None:
            self.observation_space = spaces.Box(-10.0, 10.0, shape=(3,), dtype=np.float32)
            self.action_space = spaces.Discrete(2)
            self.t = 0
            self.targets = (toy_margins() > 0).astype(int)

        def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
            super().reset(seed=seed)
            self.t = 0
            return TOY_OBS[0].copy(), {}

        def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
            reward = float(int(action) == self.targets[self.t])
            self.t += 1
            done = self.t >= len(TOY_OBS)
            return TOY_OBS[min(self.t, len(TOY_OBS) - 1)].copy(), reward, done, False, {}

    gymnasium.register(id=TOY_ID, entry_point=_Toy)
    return TOY_ID
