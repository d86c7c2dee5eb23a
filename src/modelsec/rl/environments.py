"""Gymnasium environments by id, and the seeds of an audit's episodes.

Gymnasium (the maintained successor of OpenAI Gym) comes with the ``rl`` extra and is imported only here, inside the
functions, so that modelsec imports without it. Every episode is seeded on its own (``env.reset(seed=...)``), so one
episode's outcome depends on its seed alone, never on the episodes run before it in the same environment.
"""

from __future__ import annotations

from typing import Any

from modelsec.core.errors import ConfigError, printable
from modelsec.core.seeding import spawned_seeds

INSTALL_HINT = "pip install 'modelsec[rl]'"


def _gymnasium() -> Any:
    try:
        import gymnasium
    except ImportError:
        raise ConfigError(f"policy audits need Gymnasium, which is not installed: {INSTALL_HINT}") from None
    return gymnasium


def make_env(env_id: str, *, render: bool = False) -> Any:
    """The Gymnasium environment ``env_id`` (``gymnasium.make``, with its registered time limit); with ``render``
    its frames come from ``env.render()`` as RGB arrays (``render_mode="rgb_array"``).

    Raises :class:`~modelsec.core.errors.ConfigError` when Gymnasium is missing, the id is unknown (or its extra
    dependencies, MuJoCo or Box2D, are not installed), or the observations are not a ``Box`` (only real-valued
    observation vectors or arrays can be perturbed within an eps-ball).
    """
    gymnasium = _gymnasium()
    try:
        env = gymnasium.make(env_id, render_mode="rgb_array" if render else None)
    except (gymnasium.error.Error, ImportError) as e:  # ImportError: an id naming a module (``module:Env-v0``)
        raise ConfigError(
            f"cannot make the Gymnasium environment {printable(env_id)!r}: {printable(e)} "
            "(an id such as CartPole-v1, Acrobot-v1, MountainCar-v0 or Pendulum-v1; MuJoCo and Box2D environments "
            "need their own packages)"
        ) from None
    if not isinstance(env.observation_space, gymnasium.spaces.Box):
        kind = type(env.observation_space).__name__
        env.close()
        raise ConfigError(
            f"{printable(env_id)} has {kind} observations; policy audits perturb real-valued (Box) observations only"
        )
    return env


def episode_seeds(seed: int, episodes: int) -> list[int]:
    """The seeds of ``episodes`` episodes of a run with ``seed`` (independent, :func:`~modelsec.core.seeding.
    spawned_seeds`): the first ones do not depend on ``episodes``, so a longer run extends a shorter one."""
    if episodes < 0:
        raise ConfigError(f"the number of episodes must be >= 0, got {episodes}")
    return spawned_seeds(seed, episodes)
