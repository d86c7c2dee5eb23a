"""Seeded episodes of a policy in a Gymnasium environment, clean or under an observation attack.

At each step the policy plays its deterministic action (:meth:`~modelsec.rl.policy.Policy.actions`: the argmax of
its logits, or its mean action clipped to the bounds) on the observation it sees; under attack that is the
attacker's ``s'`` (:meth:`~modelsec.rl.attacks.base.PolicyAttack.perturb`, verified to lie in the threat model),
while the environment keeps its true state and steps with the chosen action (the state-adversarial MDP of Zhang et
al. 2020). An :class:`Episode` records its seed, return, length, attacked steps, and the policy's queries (the
attacks' forward passes included) and, for a discrete policy under attack, the steps whose played action differs
from the one the clean observation gives (Huang et al.'s success count: an attacked step that leaves the action
unchanged does nothing this step). Episodes are seeded one by one (``env.reset(seed=...)``, the attack's
:meth:`~modelsec.rl.attacks.base.PolicyAttack.reset`), so each depends on its seed alone.

:func:`estimate_scale` measures the per-dimension standard deviation of the observations over clean episodes, the
unit of the threat model's eps (:mod:`modelsec.rl.threat`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from modelsec.core.errors import ConfigError, DataError
from modelsec.core.progress import NullProgress, Progress
from modelsec.rl.attacks.base import PolicyAttack
from modelsec.rl.environments import make_env
from modelsec.rl.policy import ActionSpec, Policy
from modelsec.rl.threat import ObservationThreat


@dataclass
class Episode:
    """One episode: its ``seed``, the sum of its rewards, its length, the steps the attack perturbed, the
    policy's queries during it (attack included), ``changed_actions`` (a discrete policy under attack: the steps
    whose action differs from the clean observation's; ``None`` for a clean episode or continuous actions), and,
    when recorded, its frames (RGB arrays, the first after ``reset``, then one after each recorded step; not
    compared by ``==``)."""

    seed: int
    total_reward: float
    steps: int
    attacked_steps: int
    queries: int
    changed_actions: int | None = None
    frames: list[np.ndarray] | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Every field but the frames (for results)."""
        return {
            "seed": self.seed,
            "total_reward": self.total_reward,
            "steps": self.steps,
            "attacked_steps": self.attacked_steps,
            "queries": self.queries,
            "changed_actions": self.changed_actions,
        }


def check_compatible(policy: Policy, env: Any, env_id: str) -> None:
    """A :class:`ConfigError` unless ``policy`` takes ``env``'s observations and plays its actions."""
    shape = tuple(env.observation_space.shape)
    if shape != tuple(policy.observation_shape):
        raise ConfigError(f"the policy takes observations of shape {policy.observation_shape}; {env_id} gives {shape}")
    try:
        spec = ActionSpec.from_space(env.action_space)
    except (ConfigError, AttributeError, TypeError):
        raise ConfigError(f"{env_id}'s action space {env.action_space} is neither Discrete nor a 1-D Box") from None
    if spec.kind != policy.action.kind or spec.dim != policy.action.dim:
        raise ConfigError(
            f"the policy plays {policy.action.kind} actions of size {policy.action.dim}; {env_id} takes "
            f"{spec.kind} actions of size {spec.dim}"
        )


def _check_attack(policy: Policy, attack: PolicyAttack | None, threat: ObservationThreat | None) -> None:
    if attack is None:
        return
    if threat is None:
        raise ConfigError(f"the {attack.name} attack needs a threat model")
    reason = attack.unsupported_reason(policy, threat)
    if reason is not None:
        raise ConfigError(f"{attack.name} attack: {reason}")


def _episode(
    policy: Policy,
    env: Any,
    seed: int,
    attack: PolicyAttack | None,
    threat: ObservationThreat | None,
    record_frames: bool,
    frame_every: int,
    max_steps: int | None,
) -> Episode:
    queries_before = policy.queries
    observation, _ = env.reset(seed=int(seed))
    env.action_space.seed(int(seed))
    if attack is not None:
        attack.reset(int(seed))
    frames: list[np.ndarray] | None = [np.asarray(env.render())] if record_frames else None
    total, steps, attacked = 0.0, 0, 0
    count_changes = attack is not None and policy.action.kind == "discrete"
    changed = 0
    while max_steps is None or steps < max_steps:
        obs = torch.as_tensor(np.asarray(observation, dtype=np.float32)).reshape(1, *policy.observation_shape)
        if not torch.isfinite(obs).all():
            raise DataError(f"the environment returned an observation with NaN or Inf at step {steps} (seed {seed})")
        clean_obs, hit = obs, False
        if attack is not None:
            assert threat is not None
            obs, hit = attack.perturb(policy, obs, threat)
            attacked += int(hit)
        action = policy.actions(obs)[0]
        if count_changes and hit:
            changed += int(_clean_action(policy, clean_obs) != int(action.item()))
        env_action = int(action.item()) if policy.action.kind == "discrete" else action.numpy().astype(np.float32)
        observation, reward, terminated, truncated, _ = env.step(env_action)
        total += float(reward)
        steps += 1
        if frames is not None and steps % frame_every == 0:
            frames.append(np.asarray(env.render()))
        if terminated or truncated:
            break
    queries = policy.queries - queries_before
    return Episode(int(seed), total, steps, attacked, queries, changed if count_changes else None, frames)


def _clean_action(policy: Policy, obs: torch.Tensor) -> int:
    """The discrete action the clean observation gives; the evaluator's look, not the attacker's: not counted as a
    query."""
    queries = policy.queries
    try:
        return int(policy.actions(obs)[0].item())
    finally:
        policy.queries = queries


def run_episode(
    policy: Policy,
    env_id: str,
    seed: int,
    *,
    attack: PolicyAttack | None = None,
    threat: ObservationThreat | None = None,
    record_frames: bool = False,
    frame_every: int = 1,
    max_steps: int | None = None,
) -> Episode:
    """One episode of ``policy`` in ``env_id`` seeded with ``seed``, clean or under ``attack`` within ``threat``.

    Args:
        record_frames: keep the environment's RGB frames (``env.render()``), after ``reset`` and after every
            ``frame_every``-th step (for the report's animation; a CartPole frame is 0.7 MB).
        max_steps: stop after this many steps (``None``: at the environment's own time limit or termination).
    """
    if frame_every < 1:
        raise ConfigError(f"frame_every must be >= 1, got {frame_every}")
    _check_attack(policy, attack, threat)
    env = make_env(env_id, render=record_frames)
    try:
        check_compatible(policy, env, env_id)
        return _episode(policy, env, seed, attack, threat, record_frames, frame_every, max_steps)
    finally:
        env.close()


def run_episodes(
    policy: Policy,
    env_id: str,
    seeds: Sequence[int],
    *,
    attack: PolicyAttack | None = None,
    threat: ObservationThreat | None = None,
    progress: Progress | None = None,
    max_steps: int | None = None,
) -> list[Episode]:
    """One episode per seed (see :func:`run_episode`; one environment, reset with each seed), in order."""
    progress = progress or NullProgress()
    _check_attack(policy, attack, threat)
    env = make_env(env_id)
    label = "clean" if attack is None else f"{attack.name}" + (f" eps={threat.eps:g}" if threat is not None else "")
    try:
        check_compatible(policy, env, env_id)
        episodes = []
        with progress.task(f"{env_id} {label}", total=len(seeds)) as advance:
            for seed in seeds:
                episodes.append(_episode(policy, env, seed, attack, threat, False, 1, max_steps))
                advance(1)
        return episodes
    finally:
        env.close()


def estimate_scale(policy: Policy, env_id: str, seeds: Sequence[int], *, max_steps: int | None = None) -> np.ndarray:
    """The per-dimension standard deviation (population, ``ddof=0``) of the observations ``policy`` sees in clean
    episodes seeded with ``seeds`` (each episode's observations before each action), flattened: the unit of the
    threat model's eps. A dimension constant in those episodes gets 0 (it is then never perturbed)."""
    if len(seeds) == 0:
        raise ConfigError("estimating the observations' scale needs at least one episode")
    env = make_env(env_id)
    observations: list[np.ndarray] = []
    try:
        check_compatible(policy, env, env_id)
        for seed in seeds:
            observation, _ = env.reset(seed=int(seed))
            steps = 0
            while max_steps is None or steps < max_steps:
                observations.append(np.asarray(observation, dtype=np.float64).reshape(-1))
                obs = torch.as_tensor(np.asarray(observation, dtype=np.float32)).reshape(1, *policy.observation_shape)
                action = policy.actions(obs)[0]
                env_action = int(action.item()) if policy.action.kind == "discrete" else action.numpy()
                observation, _, terminated, truncated, _ = env.step(env_action)
                steps += 1
                if terminated or truncated:
                    break
    finally:
        env.close()
    stacked = np.stack(observations)
    if not np.isfinite(stacked).all():
        raise DataError(f"{env_id} returned observations with NaN or Inf")
    return stacked.std(axis=0)
