"""PPO (modelsec.rl.ppo), hardened PPO (modelsec.rl.hardening) and the learned adversary (modelsec.rl.attacks.learned):
the pure parts against slow references and hand-computed values, and tiny training runs on toy environments
written here (no Gymnasium needed) for learning, determinism and resumption."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from modelsec.core.errors import ConfigError
from modelsec.core.progress import Advance, Progress
from modelsec.core.seeding import generator
from modelsec.rl.architectures import actor_critic_policy
from modelsec.rl.hardening import (
    PolicyHardening,
    action_kl,
    harden_policy,
    max_kl_observations,
    smoothness,
)
from modelsec.rl.policy import ActionSpec, PolicyOutput
from modelsec.rl.ppo import PPOConfig, clipped_surrogate_loss, gae, train_ppo
from modelsec.rl.threat import ObservationThreat


def _box(dim: int, bound: float = 10.0) -> SimpleNamespace:
    return SimpleNamespace(low=np.full(dim, -bound), high=np.full(dim, bound), shape=(dim,))


class Bandit:
    """A one-step environment: the observation is a random context ``x`` in [-1, 1]^2; action 1 pays 1 where
    ``x[0] > 0`` and 0 elsewhere, action 0 the opposite (the optimal policy reads the sign of ``x[0]``)."""

    observation_space = _box(2, 1.0)
    action_space = SimpleNamespace(n=2)

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)
        self.x = np.zeros(2, dtype=np.float32)

    def _draw(self) -> np.ndarray:
        self.x = self.rng.uniform(-1, 1, 2).astype(np.float32)
        return self.x

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        return self._draw(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        reward = float((action == 1) == (self.x[0] > 0))
        return self._draw(), reward, True, False, {}

    def close(self) -> None:
        pass


class Target:
    """A one-step continuous environment: reward ``-(a - 0.5)^2`` for a one-dimensional action in [-1, 1]."""

    observation_space = _box(1)
    action_space = SimpleNamespace(low=np.array([-1.0]), high=np.array([1.0]))

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        return np.zeros(1, dtype=np.float32), -float((action[0] - 0.5) ** 2), True, False, {}

    def close(self) -> None:
        pass


class Walk:
    """A random walk of up to 7 steps (a time limit, i.e. truncation) that terminates when it leaves [-3, 3]:
    exercises multi-step episodes, both kinds of episode end, and reseeding."""

    observation_space = _box(2)
    action_space = SimpleNamespace(n=2)

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)
        self.pos, self.t = 0.0, 0

    def _obs(self) -> np.ndarray:
        return np.array([self.pos, self.rng.normal()], dtype=np.float32)

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.pos, self.t = float(self.rng.normal()), 0
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.pos += (1.0 if action == 1 else -1.0) * 0.5 + float(self.rng.normal())
        self.t += 1
        terminated = abs(self.pos) > 3
        return self._obs(), 1.0, terminated, self.t >= 7 and not terminated, {}

    def close(self) -> None:
        pass


TINY = PPOConfig(
    total_steps=4 * 16 * 6, n_envs=4, n_steps=16, epochs=2, minibatch_size=32, hidden=(8,), segment_updates=2
)


def _parameters(policy: Any) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in policy.module.state_dict().items()}


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- the pure parts ---------------------------------------------------------------------------------------------------


def _slow_gae(rewards: np.ndarray, values: np.ndarray, dones: np.ndarray, last: np.ndarray, gamma: float, lam: float):
    """The definition: A_t = sum_l (gamma lam)^l delta_{t+l}, the sum stopping after the step that ends the episode."""
    steps, envs = rewards.shape
    adv = np.zeros_like(rewards)
    for n in range(envs):
        v_next = [values[t + 1, n] if t + 1 < steps else last[n] for t in range(steps)]
        delta = [rewards[t, n] + gamma * v_next[t] * (1 - dones[t, n]) - values[t, n] for t in range(steps)]
        for t in range(steps):
            total, weight = 0.0, 1.0
            for k in range(t, steps):
                total += weight * delta[k]
                if dones[k, n]:
                    break
                weight *= gamma * lam
            adv[t, n] = total
    return adv, adv + values


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gae_matches_the_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rewards, values = rng.normal(size=(9, 3)), rng.normal(size=(9, 3))
    dones, last = rng.random((9, 3)) < 0.3, rng.normal(size=3)
    adv, ret = gae(
        torch.tensor(rewards), torch.tensor(values), torch.tensor(dones), torch.tensor(last), gamma=0.9, lam=0.7
    )
    ref_adv, ref_ret = _slow_gae(rewards, values, dones.astype(float), last, 0.9, 0.7)
    np.testing.assert_allclose(adv.numpy(), ref_adv, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ret.numpy(), ref_ret, rtol=1e-12, atol=1e-12)


def test_gae_with_lambda_one_and_no_ends_is_the_discounted_return_minus_the_value() -> None:
    rewards = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)
    values = torch.tensor([[0.5], [0.25], [0.0]], dtype=torch.float64)
    adv, ret = gae(
        rewards,
        values,
        torch.zeros(3, 1, dtype=torch.bool),
        torch.tensor([4.0], dtype=torch.float64),
        gamma=0.5,
        lam=1.0,
    )
    # return at t=0: 1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 4 = 3.25
    assert ret[:, 0].tolist() == [3.25, 4.5, 5.0]
    assert adv[:, 0].tolist() == [2.75, 4.25, 5.0]


def test_clipped_surrogate_by_hand() -> None:
    # ratios 1.5, 0.5, 1.1, 0.7 with advantages +1, +1, -2, -1 and clip 0.2:
    # min(1.5, 1.2) = 1.2; min(0.5, 0.8) = 0.5; min(-2.2, -2.2) = -2.2; min(-0.7, -0.8) = -0.8  -> mean -0.325
    ratios = torch.tensor([1.5, 0.5, 1.1, 0.7], dtype=torch.float64)
    old = torch.tensor([-0.3, -1.0, -2.0, -0.1], dtype=torch.float64)
    loss = clipped_surrogate_loss(
        old + ratios.log(), old, torch.tensor([1.0, 1.0, -2.0, -1.0], dtype=torch.float64), 0.2
    )
    assert loss.item() == pytest.approx(0.325, abs=1e-12)


def test_action_kl_matches_torch_distributions() -> None:
    g = generator(0)
    p, q = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    ours = action_kl(PolicyOutput(logits=p), PolicyOutput(logits=q))
    ref = torch.distributions.kl_divergence(
        torch.distributions.Categorical(logits=p), torch.distributions.Categorical(logits=q)
    )
    torch.testing.assert_close(ours, ref)
    m1, m2, s1, s2 = (torch.randn(5, 2, generator=g) for _ in range(4))
    ours = action_kl(PolicyOutput(mean=m1, log_std=s1), PolicyOutput(mean=m2, log_std=s2))
    normal = torch.distributions.Normal
    ref = torch.distributions.kl_divergence(normal(m1, s1.exp()), normal(m2, s2.exp())).sum(dim=1)
    torch.testing.assert_close(ours, ref)


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="gamma"):
        PPOConfig(gamma=1.5)
    with pytest.raises(ConfigError, match="less than one rollout"):
        PPOConfig(total_steps=10)
    with pytest.raises(ConfigError, match="unknown hardening method"):
        PolicyHardening(method="magic")
    with pytest.raises(ConfigError, match="unknown PPO settings"):
        PPOConfig.from_dict({"learning_rat": 1e-3})
    assert PolicyHardening.from_dict(PolicyHardening(scale=(1.0, 2.0)).to_dict()) == PolicyHardening(scale=(1.0, 2.0))
    schedule = PolicyHardening(warmup=0.2, ramp=0.4).schedule
    assert [schedule(p) for p in (0.0, 0.1, 0.4, 0.6, 0.9)] == pytest.approx([0, 0, 0.5, 1, 1])
    with pytest.raises(ConfigError, match="sum <= 1"):
        PolicyHardening(warmup=0.7, ramp=0.5)


# --- the SA regulariser -------------------------------------------------------------------------------------------


def _threat(eps: float, dim: int = 4) -> ObservationThreat:
    return ObservationThreat.for_space(_box(dim), np.linspace(0.5, 2.0, dim), norm="linf", eps=eps)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_smoothness_is_zero_at_eps_zero_and_its_pgd_max_beats_random_points(seed: int) -> None:
    policy = actor_critic_policy((4,), ActionSpec("discrete", n=3), hidden=(16,), seed=seed)
    obs = torch.randn(32, 4, generator=generator(seed))
    module = policy.module
    zero = smoothness(module, obs, _threat(0.0), steps=3, step_size=0.0, generator=generator(1))
    assert zero.item() == 0.0
    threat = _threat(0.5)
    value = smoothness(module, obs, threat, steps=5, step_size=0.25, generator=generator(1))
    assert value.item() > 0
    worst = max_kl_observations(module, obs, threat, steps=5, step_size=0.25, generator=generator(1))
    assert bool(threat.contains(obs, worst).all())
    with torch.no_grad():
        clean = module(obs)
        best_kl = action_kl(clean, module(worst))
        # never below its own random start (the same generator's first draw), for every observation
        start_kl = action_kl(clean, module(threat.random_point(obs, generator(1))))
        assert bool((best_kl >= start_kl).all())
        # and far above other random points of the ball on average (PGD is local: not for each observation)
        for draw in range(5):
            random_kl = action_kl(clean, module(threat.random_point(obs, generator(100 + draw))))
            assert best_kl.mean() > 2 * random_kl.mean()
    # the term trains the parameters: its gradient is non-zero
    value.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_smoothness_of_a_gaussian_policy_is_positive() -> None:
    policy = actor_critic_policy((4,), ActionSpec("continuous", low=(-1.0,), high=(1.0,)), hidden=(16,), seed=0)
    obs = torch.randn(8, 4, generator=generator(0))
    assert smoothness(policy.module, obs, _threat(0.3), steps=3, step_size=0.15, generator=generator(0)).item() > 0


# --- training ---------------------------------------------------------------------------------------------------


BANDIT = PPOConfig(
    total_steps=8 * 4 * 12, n_envs=8, n_steps=4, epochs=4, minibatch_size=16, learning_rate=3e-3, hidden=(16,)
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ppo_learns_a_contextual_bandit(seed: int) -> None:
    policy = train_ppo(Bandit, BANDIT, seed=seed).policy
    x = torch.tensor([[0.5, 0.0], [0.2, -0.7], [-0.5, 0.3], [-0.3, 0.9]])
    assert policy.actions(x).tolist() == [1, 1, 0, 0]
    assert policy.card["algorithm"] == "ppo"


@pytest.mark.parametrize("seed", [0, 1])
def test_ppo_learns_a_continuous_target(seed: int) -> None:
    config = PPOConfig(
        total_steps=8 * 4 * 15,
        n_envs=8,
        n_steps=4,
        epochs=4,
        minibatch_size=16,
        learning_rate=1e-2,
        hidden=(8,),
        log_std_init=-0.5,
    )
    policy = train_ppo(Target, config, seed=seed).policy
    assert abs(float(policy.actions(torch.zeros(1, 1))[0, 0]) - 0.5) < 0.15


def test_same_seed_same_policy_other_seed_another() -> None:
    a = _parameters(train_ppo(Walk, TINY, seed=3).policy)
    b = _parameters(train_ppo(Walk, TINY, seed=3).policy)
    c = _parameters(train_ppo(Walk, TINY, seed=4).policy)
    assert _equal(a, b)
    assert not _equal(a, c)


class _Interrupt(Progress):
    """Raises KeyboardInterrupt once ``after`` updates are done (a Ctrl-C in the middle of training)."""

    def __init__(self, after: int) -> None:
        self.after, self.done = after, 0

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Advance]:
        def advance(n: int) -> None:
            self.done += n
            if self.done >= self.after:
                raise KeyboardInterrupt

        yield advance


@pytest.mark.parametrize("method", [None, "sa-ppo", "pgd-ppo"])
def test_a_resumed_run_ends_with_the_uninterrupted_policy(method: str | None, tmp_path: Path) -> None:
    def run(**kwargs: Any) -> Any:
        if method is None:
            return train_ppo(Walk, TINY, seed=5, **kwargs)
        config = PolicyHardening(method=method, eps=0.3, ramp=0.3, attack_steps=2, ppo=TINY)
        return harden_policy(Walk, config, seed=5, **kwargs)

    whole = run()
    with pytest.raises(KeyboardInterrupt):
        run(checkpoint_dir=tmp_path, progress=_Interrupt(after=4))  # a checkpoint after update 2, not 4
    resumed = run(checkpoint_dir=tmp_path)
    assert resumed.resumed_from == 2
    assert _equal(_parameters(whole.policy), _parameters(resumed.policy))
    assert [h.to_dict() | {"seconds": 0} for h in whole.history] == [
        h.to_dict() | {"seconds": 0} for h in resumed.history
    ]
    if method is not None:
        assert resumed.policy.card["hardening"]["method"] == method
        assert resumed.history[-1].regulariser > 0 if method == "sa-ppo" else True


def test_a_checkpoint_of_other_settings_is_refused(tmp_path: Path) -> None:
    train_ppo(Walk, TINY, seed=5, checkpoint_dir=tmp_path)
    with pytest.raises(ConfigError, match="different run"):
        train_ppo(Walk, TINY, seed=6, checkpoint_dir=tmp_path)


def test_fine_tuning_checks_the_policy_fits_the_environment() -> None:
    policy = actor_critic_policy((3,), ActionSpec("discrete", n=2), seed=0)
    with pytest.raises(ConfigError, match="does not fit"):
        train_ppo(Walk, TINY, seed=0, policy=policy)


def test_pgd_ppo_attacks_the_requested_fraction_of_observations_inside_the_ball() -> None:
    from modelsec.rl.hardening import PGDObservations, _Threats
    from modelsec.rl.ppo import TrainingContext

    config = PolicyHardening(method="pgd-ppo", eps=0.4, ramp=0.5, attack_steps=2, attack_fraction=0.25)
    hook = PGDObservations(_Threats(config, _box(4)))
    module = actor_critic_policy((4,), ActionSpec("discrete", n=2), hidden=(8,), seed=0).module
    obs = torch.randn(400, 4, generator=generator(0))
    scale = np.linspace(0.5, 2.0, 4)
    # halfway through the ramp: eps 0.2
    seen = hook(module, obs, TrainingContext(progress=0.25, update=3, scale=scale, generator=generator(1)))
    changed = (seen != obs).any(dim=1).float().mean().item()
    assert 0.18 < changed < 0.32
    threat = ObservationThreat.for_space(_box(4), scale, norm="linf", eps=0.2)
    assert bool(threat.contains(obs, seen).all()) and not bool(threat.with_eps(0.15).contains(obs, seen).all())
    # nothing before a scale is known, nor at the start of the ramp
    for context in (TrainingContext(0.25, 3, None, generator(1)), TrainingContext(0.0, 0, scale, generator(1))):
        assert torch.equal(hook(module, obs, context), obs)


def test_fine_tuning_records_the_hardening_in_the_card() -> None:
    policy = actor_critic_policy((2,), ActionSpec("discrete", n=2), hidden=(8,), seed=0)
    before = _parameters(policy)
    config = PolicyHardening(method="sa-ppo", eps=0.1, attack_steps=1, ppo=TINY)
    result = harden_policy(Walk, config, seed=0, policy=policy)
    assert result.policy is policy and not _equal(before, _parameters(policy))
    card = policy.card
    assert card["algorithm"] == "sa-ppo" and card["hardening"]["fine_tuned"] is True
    assert card["hardening"]["eps"] == 0.1 and card["ppo"]["total_steps"] == TINY.total_steps


# --- the learned adversary --------------------------------------------------------------------------------------


class _Sign(torch.nn.Module):
    """A fixed victim for the bandit: logits ``[0, 10 x[0]]`` (action 1 where ``x[0] > 0``: always right)."""

    def forward(self, obs: torch.Tensor) -> PolicyOutput:
        z = 10 * obs[:, 0]
        return PolicyOutput(logits=torch.stack([torch.zeros_like(z), z], dim=1))


def _victim() -> Any:
    from modelsec.rl.policy import Policy

    return Policy(_Sign(), (2,), ActionSpec("discrete", n=2))


def test_adversary_actions_map_into_the_ball() -> None:
    from modelsec.rl.attacks.learned import perturbation

    obs = torch.tensor([[0.0, 9.9], [1.0, -1.0]])
    scale = np.array([0.5, 2.0])
    linf = ObservationThreat.for_space(_box(2), scale, norm="linf", eps=0.2)
    out = perturbation(obs, torch.tensor([[1.0, -1.0], [3.0, 0.5]]), linf)
    # eps * scale * a, the action clipped to [-1, 1], the result clipped to the bounds (10)
    torch.testing.assert_close(out, torch.tensor([[0.1, 9.5], [1.1, -0.8]]))
    l2 = ObservationThreat.for_space(_box(2), scale, norm="l2", eps=0.2)
    out = perturbation(obs, torch.tensor([[1.0, 1.0], [0.6, 0.0]]), l2)
    # (1, 1) has length sqrt(2) > 1: projected to length eps in scaled units; (0.6, 0) is inside
    # (scaled by 0.5 and 2, the second clipped to the bound 10)
    s = 0.2 / float(np.sqrt(2))
    torch.testing.assert_close(out, torch.tensor([[0.5 * s, 10.0], [1.0 + 0.5 * 0.2 * 0.6, -1.0]]))
    assert bool(l2.contains(obs, out).all()) and bool(
        linf.contains(obs, perturbation(obs, torch.ones(2, 2), linf)).all()
    )


def test_the_adversary_env_shows_the_victim_the_perturbed_observation_and_negates_its_reward() -> None:
    from modelsec.rl.attacks.learned import AdversaryEnv

    threat = ObservationThreat.for_space(_box(2, 1.0), np.array([1.0, 1.0]), norm="linf", eps=0.5)
    env = AdversaryEnv(_victim(), Bandit, threat)
    obs, _ = env.reset(seed=0)
    push = -np.sign(obs[0]) * np.ones(2, dtype=np.float32)  # push x[0] by 0.5 towards the other sign
    _, reward, terminated, _, info = env.step(push)
    fooled = abs(obs[0]) < 0.5
    assert terminated and reward == -info["victim_reward"] and info["victim_reward"] == (0.0 if fooled else 1.0)


class _SignWithCritic(_Sign):
    """The same victim with a critic: ``V(s) = 2 + x[1]``."""

    def forward(self, obs: torch.Tensor) -> PolicyOutput:
        out = super().forward(obs)
        out.value = 2 + obs[:, 1]
        return out


def test_the_adversary_reward_is_shaped_by_the_victims_critic() -> None:
    from modelsec.rl.attacks.learned import AdversaryEnv
    from modelsec.rl.policy import Policy

    victim = Policy(_SignWithCritic(), (2,), ActionSpec("discrete", n=2), has_critic=True)
    threat = ObservationThreat.for_space(_box(2, 1.0), np.array([1.0, 1.0]), norm="linf", eps=0.0)
    walk = ObservationThreat.for_space(_box(2), np.array([1.0, 1.0]), norm="linf", eps=0.0)
    # a terminal step: Phi(after) = 0, so the reward is -r - Phi(s) = -r + V(s)
    env = AdversaryEnv(victim, Bandit, threat, shaping=0.9)
    obs, _ = env.reset(seed=0)
    _, reward, terminated, _, info = env.step(np.zeros(2, dtype=np.float32))
    assert terminated and reward == pytest.approx(-info["victim_reward"] + 2 + obs[1], abs=1e-6)
    # a non-terminal step: -r + 0.9 * (-V(s')) + V(s)
    env = AdversaryEnv(victim, Walk, walk, shaping=0.9)
    obs, _ = env.reset(seed=1)
    after, reward, terminated, _, info = env.step(np.zeros(2, dtype=np.float32))
    assert not terminated
    assert reward == pytest.approx(-1 - 0.9 * (2 + after[1]) + 2 + obs[1], abs=1e-5)
    # a victim without a critic: no shaping
    assert AdversaryEnv(_victim(), Bandit, threat, shaping=0.9).shaping is None


@pytest.mark.parametrize("director", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_the_learned_adversary_halves_a_victims_reward(seed: int, director: bool) -> None:
    """x[0] is uniform in [-1, 1] (std 1/sqrt(3)); at eps 1 the optimal adversary flips the victim wherever
    |x[0]| < 0.577: the victim's reward falls from 1 to 0.42. The perturbation adversary learns to push x[0]
    across 0; the director learns to aim for the wrong action (its actor's PGD then flips what it can)."""
    from modelsec.rl.attacks.learned import LearnedAttack

    victim = _victim()
    threat = ObservationThreat.for_space(_box(2, 1.0), np.full(2, 1 / np.sqrt(3)), norm="linf", eps=1.0)
    config = PPOConfig(n_envs=8, n_steps=4, epochs=4, minibatch_size=16, learning_rate=1e-2, hidden=(16,))
    attack = LearnedAttack(steps=1536, seed=seed, ppo=config, director=director)
    adversary = attack.prepare(victim, Bandit, threat)
    assert adversary.action.kind == ("discrete" if director else "continuous")
    env = Bandit()
    rewards, attacked_steps = [], 0
    for episode in range(200):
        obs, _ = env.reset(seed=1000 + episode)
        attack.reset(1000 + episode)
        seen, attacked = attack.perturb(victim, torch.as_tensor(obs)[None], threat)
        rewards.append(env.step(victim.act(seen[0].numpy()))[1])
        attacked_steps += int(attacked)
    assert np.mean(rewards) < 0.6
    assert victim.queries >= 200  # the adversary's training queries are counted apart
    if not director:
        assert victim.queries == 200 and attacked_steps == 200  # one query per step, every step perturbed
    else:
        assert attacked_steps > 150  # a director that learned aims for the other action at (nearly) every step
    assert attack.training_queries == 1536


def _continuous_victim() -> Any:
    from modelsec.rl.policy import Policy
    from tests.rl_fixtures import LinearGaussian

    return Policy(LinearGaussian(torch.ones(1, 2)), (2,), ActionSpec("continuous", low=(-1.0,), high=(1.0,)))


def test_the_director_env_realises_its_target_by_pgd() -> None:
    from modelsec.rl.attacks.learned import AdversaryEnv

    threat = ObservationThreat.for_space(_box(2, 1.0), np.array([1.0, 1.0]), norm="linf", eps=0.5)
    env = AdversaryEnv(_victim(), Bandit, threat, director=True)
    assert env.action_space.n == 2  # type: ignore[union-attr]
    outcomes = set()
    for seed in range(40):
        obs, _ = env.reset(seed=seed)
        right = int(obs[0] > 0)
        _, reward, terminated, _, info = env.step(np.int64(1 - right))  # aim for the wrong action
        fooled = abs(obs[0]) < 0.5
        assert terminated and reward == -info["victim_reward"] and info["victim_reward"] == (0.0 if fooled else 1.0)
        outcomes.add(fooled)
        env.reset(seed=seed)
        assert env.step(np.int64(right))[4]["victim_reward"] == 1.0  # aiming for its own action changes nothing
    assert outcomes == {True, False}
    with pytest.raises(ConfigError, match="discrete victim"):
        AdversaryEnv(_continuous_victim(), Bandit, threat, director=True)


def test_the_learned_attack_needs_an_environment() -> None:
    from modelsec.rl.attacks.learned import LearnedAttack

    threat = ObservationThreat.for_space(_box(2, 1.0), np.ones(2), norm="linf", eps=0.1)
    attack = LearnedAttack()
    attack.reset(0)
    with pytest.raises(ConfigError, match="needs the environment"):
        attack.perturb(_victim(), torch.zeros(1, 2), threat)
