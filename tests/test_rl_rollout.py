"""Environments, seeded episodes, the observation scale, and the bootstrap interval of a mean."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from modelsec.core.errors import ConfigError, DataError
from modelsec.core.progress import Advance, Progress
from modelsec.core.seeding import spawned_seeds
from modelsec.stats.bootstrap import mean_with_ci
from tests.rl_fixtures import cartpole_controller, linear_policy, pendulum_controller

# -- the bootstrap --------------------------------------------------------------------------------------------------


def test_bootstrap_of_constant_values_has_zero_width() -> None:
    for values in ([3.25] * 10, [0.1] * 7, [500.0]):
        mean, ci = mean_with_ci(values, seed=0)
        assert mean == ci.low == ci.high == values[0]
        assert ci.method == "bootstrap-percentile" and ci.level == 0.95


def test_bootstrap_of_two_values_is_exact() -> None:
    # resampled means of [0, 1] are 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4: the 95% interval is [0, 1]
    mean, ci = mean_with_ci([0.0, 1.0], seed=3)
    assert (mean, ci.low, ci.high) == (0.5, 0.0, 1.0)
    _, narrow = mean_with_ci([0.0, 1.0], seed=3, level=0.4)  # 30% and 70% quantiles: both 1/2
    assert narrow.low == narrow.high == 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bootstrap_matches_the_normal_interval_and_shrinks_as_one_over_root_n(seed: int) -> None:
    rng = np.random.default_rng(seed)
    widths = []
    for n in (400, 1600):
        x = rng.normal(10.0, 2.0, n)
        mean, ci = mean_with_ci(x, seed=seed)
        half = 1.959964 * x.std(ddof=1) / np.sqrt(n)  # the normal-theory half width
        assert ci.low < mean < ci.high
        assert ci.high - ci.low == pytest.approx(2 * half, rel=0.15)
        assert (ci.low + ci.high) / 2 == pytest.approx(mean, abs=0.2 * half)
        widths.append(ci.high - ci.low)
    assert widths[1] / widths[0] == pytest.approx(0.5, rel=0.2)


def test_bootstrap_is_seeded_and_refuses_bad_values() -> None:
    x = np.arange(20.0) ** 2
    assert mean_with_ci(x, seed=4) == mean_with_ci(x, seed=4)
    assert mean_with_ci(x, seed=4)[1] != mean_with_ci(x, seed=5)[1]
    for bad in ([], [1.0, float("nan")], [float("inf")]):
        with pytest.raises(DataError):
            mean_with_ci(bad, seed=0)
    with pytest.raises(DataError):
        mean_with_ci([1.0, 2.0], seed=0, level=1.0)


# -- environments ---------------------------------------------------------------------------------------------------


def test_episode_seeds_are_spawned_and_extend() -> None:
    from modelsec.rl.environments import episode_seeds

    assert episode_seeds(7, 5) == spawned_seeds(7, 5)
    assert episode_seeds(7, 8)[:5] == episode_seeds(7, 5)
    assert len(set(episode_seeds(7, 50))) == 50


def test_make_env_refuses_unknown_ids_and_non_box_observations() -> None:
    pytest.importorskip("gymnasium")
    from modelsec.rl.environments import make_env

    env = make_env("CartPole-v1")
    assert env.observation_space.shape == (4,)
    env.close()
    with pytest.raises(ConfigError, match="NoSuchEnv-v0"):
        make_env("NoSuchEnv-v0")
    with pytest.raises(ConfigError, match="Discrete observations"):
        make_env("FrozenLake-v1")


def test_make_env_without_gymnasium_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelsec.rl.environments import make_env

    monkeypatch.setitem(sys.modules, "gymnasium", None)
    with pytest.raises(ConfigError, match=r"pip install 'modelsec\[rl\]'"):
        make_env("CartPole-v1")


# -- episodes -------------------------------------------------------------------------------------------------------


class Recorder(Progress):
    def __init__(self) -> None:
        self.tasks: list[tuple[str, int]] = []
        self.advanced = 0

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Advance]:
        self.tasks.append((description, total))

        def advance(n: int) -> None:
            self.advanced += n

        yield advance


def manual_episode(policy: object, env_id: str, seed: int, max_steps: int) -> tuple[float, int, list[np.ndarray]]:
    """The slow reference: a plain Gymnasium loop with the policy's actions."""
    import gymnasium

    env = gymnasium.make(env_id)
    observation, _ = env.reset(seed=seed)
    total, steps, seen = 0.0, 0, []
    while steps < max_steps:
        seen.append(np.asarray(observation, dtype=np.float64))
        observation, reward, terminated, truncated, _ = env.step(policy.act(observation))  # type: ignore[attr-defined]
        total, steps = total + float(reward), steps + 1
        if terminated or truncated:
            break
    env.close()
    return total, steps, seen


def test_clean_episodes_match_a_plain_gymnasium_loop() -> None:
    pytest.importorskip("gymnasium")
    from modelsec.rl.rollout import estimate_scale, run_episode, run_episodes

    weak = linear_policy(torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]))  # pushes with the cart's speed
    seeds = [11, 12, 13]
    progress = Recorder()
    episodes = run_episodes(weak, "CartPole-v1", seeds, progress=progress, max_steps=300)
    observations = []
    for seed, episode in zip(seeds, episodes, strict=True):
        total, steps, seen = manual_episode(weak, "CartPole-v1", seed, 300)
        observations += seen
        assert (episode.seed, episode.total_reward, episode.steps) == (seed, total, steps)
        assert episode.attacked_steps == 0 and episode.frames is None
        assert episode.queries == episode.steps  # one query per action
        assert run_episode(weak, "CartPole-v1", seed, max_steps=300) == episode
    assert progress.tasks == [("CartPole-v1 clean", 3)] and progress.advanced == 3
    assert [e.seed for e in run_episodes(weak, "CartPole-v1", seeds[::-1], max_steps=300)] == seeds[::-1]
    assert run_episodes(weak, "CartPole-v1", seeds[::-1], max_steps=300)[::-1] == episodes  # order-free
    scale = estimate_scale(weak, "CartPole-v1", seeds, max_steps=300)
    np.testing.assert_allclose(scale, np.stack(observations).std(axis=0), rtol=1e-12)


def test_the_controller_balances_cartpole_and_max_steps_cuts_episodes() -> None:
    pytest.importorskip("gymnasium")
    from modelsec.rl.rollout import run_episode

    episode = run_episode(cartpole_controller(), "CartPole-v1", 0, max_steps=120)
    assert (episode.total_reward, episode.steps) == (120.0, 120)


def test_frames_are_recorded_each_step() -> None:
    pytest.importorskip("pygame")
    from modelsec.rl.rollout import run_episode

    episode = run_episode(cartpole_controller(), "CartPole-v1", 0, record_frames=True, max_steps=4)
    assert episode.frames is not None and len(episode.frames) == 5
    assert episode.frames[0].ndim == 3 and episode.frames[0].shape[2] == 3 and episode.frames[0].dtype == np.uint8
    assert not np.array_equal(episode.frames[0], episode.frames[-1])
    sparse = run_episode(cartpole_controller(), "CartPole-v1", 0, record_frames=True, frame_every=2, max_steps=4)
    assert sparse.frames is not None and len(sparse.frames) == 3


def test_continuous_policies_play_pendulum() -> None:
    pytest.importorskip("gymnasium")
    from modelsec.rl.rollout import run_episode

    policy = pendulum_controller()
    episode = run_episode(policy, "Pendulum-v1", 2, max_steps=30)
    total, steps, _ = manual_episode(policy, "Pendulum-v1", 2, 30)
    assert (episode.total_reward, episode.steps) == (pytest.approx(total, rel=1e-12), steps)
    assert episode.total_reward < 0  # Pendulum's rewards are costs


def test_mismatched_policies_and_missing_threats_are_refused() -> None:
    pytest.importorskip("gymnasium")
    from modelsec.rl.attacks import POLICY_ATTACKS
    from modelsec.rl.rollout import run_episode, run_episodes

    with pytest.raises(ConfigError, match="shape"):
        run_episode(pendulum_controller(), "CartPole-v1", 0)
    with pytest.raises(ConfigError, match="discrete"):
        run_episode(linear_policy(torch.ones(2, 3)), "Pendulum-v1", 0)
    with pytest.raises(ConfigError, match="threat"):
        run_episodes(cartpole_controller(), "CartPole-v1", [0], attack=POLICY_ATTACKS.get("random")())


def test_module_style_ids_are_refused_cleanly() -> None:
    pytest.importorskip("gymnasium")
    from modelsec.rl.environments import make_env

    with pytest.raises(ConfigError, match="cannot make"):
        make_env("no_such_module_xyz:Thing-v0")
