"""Policy attacks: closed-form optima on linear policies, the contract, the timed attack's budget, reproducibility,
and the attacks' effect on CartPole-v1 and Pendulum-v1 with hand-built controllers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from modelsec.core.errors import ConfigError
from modelsec.rl.attacks import POLICY_ATTACKS, AttackContractError, PolicyAttack
from modelsec.rl.attacks.timed import TimedAttack, action_preference
from modelsec.rl.policy import Policy
from modelsec.rl.threat import ObservationThreat
from tests.rl_fixtures import (
    TOY_OBS,
    TOY_W,
    cartpole_controller,
    linear_policy,
    pendulum_controller,
    register_toy,
    toy_margins,
)

OWN_ATTACKS = ["random", "fgsm", "pgd", "mad", "critic", "timed"]


def threat_for(scale: np.ndarray, norm: str, eps: float, bound: float = 100.0) -> ObservationThreat:
    d = len(scale)
    return ObservationThreat(norm, eps, tuple(map(float, scale)), (-bound,) * d, (bound,) * d)


def attack(name: str, seed: int = 0, **settings: object) -> PolicyAttack:
    a = POLICY_ATTACKS.get(name)(**settings)
    a.reset(seed)
    return a


# -- closed form: a linear two-action policy ------------------------------------------------------------------------

W = torch.tensor([[0.3, -0.2, 0.1, 0.0, 0.5], [-0.4, 0.6, 0.4, 1.0, -0.5]])
DW = (W[1] - W[0]).double()
SCALE = np.array([0.5, 2.0, 1.0, 0.25, 1.5])


def states(n: int = 400, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 5, generator=torch.Generator().manual_seed(seed)) * 0.5


def margins(s: torch.Tensor) -> torch.Tensor:
    return s.double() @ DW


def away_from_boundary(m: torch.Tensor, radius: float) -> torch.Tensor:
    """States whose margin is not within float rounding of the flipping radius."""
    return (m.abs() - radius).abs() > 1e-4 * max(radius, 1.0)


@pytest.mark.parametrize("eps", [0.05, 0.2, 0.6])
def test_fgsm_linf_is_the_closed_form_optimum(eps: float) -> None:
    policy, s = linear_policy(W), states()
    m, scale = margins(s), torch.tensor(SCALE)
    radius = eps * float((scale * DW.abs()).sum())  # max change of the margin in the L-inf ball
    adv, attacked = attack("fgsm").perturb(policy, s, threat_for(SCALE, "linf", eps))
    expected = s.double() - eps * scale * torch.sign(DW) * torch.sign(m)[:, None]
    assert attacked
    torch.testing.assert_close(adv.double(), expected, atol=1e-6, rtol=1e-6)
    flipped = policy.actions(adv) != policy.actions(s)
    keep = away_from_boundary(m, radius)
    assert torch.equal(flipped[keep], (m.abs() <= radius)[keep])
    assert 0 < int(flipped.sum()) < len(s) or eps == 0.6  # the case mixes flipped and kept actions


@pytest.mark.parametrize("eps", [0.05, 0.2])
def test_fgsm_l2_moves_the_margin_by_eps_times_the_scaled_weight_norm(eps: float) -> None:
    policy, s = linear_policy(W), states()
    m, scale = margins(s), torch.tensor(SCALE)
    direction = scale * DW
    radius = eps * float(direction.norm())  # max change of the margin in the L2 ball
    adv, _ = attack("fgsm").perturb(policy, s, threat_for(SCALE, "l2", eps))
    expected = s.double() - eps * (scale * direction / direction.norm()) * torch.sign(m)[:, None]
    torch.testing.assert_close(adv.double(), expected, atol=1e-6, rtol=1e-6)
    flipped = policy.actions(adv) != policy.actions(s)
    keep = away_from_boundary(m, radius)
    assert torch.equal(flipped[keep], (m.abs() <= radius)[keep])


@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_flips_exactly_the_closed_form_set_and_saturates_elsewhere(random_start: bool) -> None:
    eps = 0.2
    policy, s = linear_policy(W), states(200, seed=1)
    m, scale = margins(s), torch.tensor(SCALE)
    radius = eps * float((scale * DW.abs()).sum())
    threat = threat_for(SCALE, "linf", eps)
    adv, _ = attack("pgd", steps=20, random_start=random_start).perturb(policy, s, threat)
    flipped = policy.actions(adv) != policy.actions(s)
    keep = away_from_boundary(m, radius)
    assert torch.equal(flipped[keep], (m.abs() <= radius)[keep])
    assert bool(threat.contains(s, adv).all())
    # where no point of the ball flips, PGD ends at the corner that minimises the margin's magnitude
    corner = s.double() - eps * scale * torch.sign(DW) * torch.sign(m)[:, None]
    robust = (m.abs() > radius) & keep
    torch.testing.assert_close(adv.double()[robust], corner[robust], atol=1e-6, rtol=1e-6)


def test_pgd_l2_flips_just_above_the_minimal_eps_and_not_below() -> None:
    policy, s = linear_policy(W), states(25, seed=2)
    minimal = margins(s).abs() / float((torch.tensor(SCALE) * DW).norm())  # minimal flipping eps per state
    for factor, should_flip in [(1.02, True), (0.98, False)]:
        for i in range(len(s)):
            threat = threat_for(SCALE, "l2", float(minimal[i]) * factor)
            adv, _ = attack("pgd", steps=30, random_start=False).perturb(policy, s[i : i + 1], threat)
            flipped = bool(policy.actions(adv) != policy.actions(s[i : i + 1]))
            assert flipped == should_flip, (i, factor)


def test_pgd_stops_at_the_first_iterate_that_flips_the_action() -> None:
    policy, s = linear_policy(W), states(100, seed=3)
    eps, steps = 0.6, 10
    threat = threat_for(SCALE, "linf", eps)
    before = policy.queries
    adv, _ = attack("pgd", steps=steps, random_start=False).perturb(policy, s, threat)
    assert policy.queries - before <= len(s) * (steps + 1)  # clean logits + at most one query per step
    # every flipped state sits at the first flipping iterate: one step back (towards s) it did not flip yet
    m_adv, m = margins(adv), margins(s)
    step = 2.5 * eps / steps
    flipped = torch.sign(m_adv) != torch.sign(m)
    assert bool(flipped.all())  # every state flips at eps 0.6
    back = adv.double() + step * torch.tensor(SCALE) * torch.sign(DW) * torch.sign(m)[:, None]
    back = torch.maximum(
        torch.minimum(back, s.double() + eps * torch.tensor(SCALE)), s.double() - eps * torch.tensor(SCALE)
    )
    moved = (adv.double() - s.double()).abs().amax(dim=1) > 0
    assert bool((torch.sign(margins(back.float()))[moved] == torch.sign(m)[moved]).all())


def test_targeted_attack_reaches_a_target_exactly_in_its_closed_form_set() -> None:
    """The director's actor: two actions, the target the other one: it is reached iff the margin is within the
    L-inf radius (as for the flip); a state already playing its target is not moved (and costs one query)."""
    from modelsec.rl.attacks.action import targeted_action_attack

    eps, policy, s = 0.2, linear_policy(W), states(200, seed=4)
    m, scale = margins(s), torch.tensor(SCALE)
    radius = eps * float((scale * DW.abs()).sum())
    threat = threat_for(SCALE, "linf", eps)
    clean = policy.actions(s)
    target = torch.where(torch.arange(len(s)) % 3 == 0, clean, 1 - clean)  # a third aim for their own action
    before = policy.queries
    adv = targeted_action_attack(policy, s, threat, target, steps=20, step_size=2.5 * eps / 20)
    assert policy.queries - before <= len(s) * 20
    assert bool(threat.contains(s, adv).all())
    own = target == clean
    assert torch.equal(adv[own], s[own])
    keep = away_from_boundary(m, radius) & ~own
    reached = policy.actions(adv) == target
    assert torch.equal(reached[keep], (m.abs() <= radius)[keep])


def test_targeted_attack_reaches_the_asked_action_of_three() -> None:
    """Three actions with logits (0, x0, x1): aiming at action 1 or 2 from a state playing 0 ends at that very
    action (the margin pushes the target up and the best other down), at a large enough eps."""
    from modelsec.rl.attacks.action import targeted_action_attack

    policy = linear_policy(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    s = torch.tensor([[-0.5, -0.4], [-0.3, -0.6]])
    assert policy.actions(s).tolist() == [0, 0]
    threat = threat_for(np.ones(2), "linf", 1.0)
    for goal in (1, 2):
        target = torch.full((2,), goal)
        adv = targeted_action_attack(policy, s, threat, target, steps=20, step_size=0.125)
        assert policy.actions(adv).tolist() == [goal, goal]


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", ["mad", "pgd"])
@pytest.mark.parametrize("stochastic", [False, True])
def test_mad_reaches_the_closed_form_maximal_deviation_of_a_linear_policy(
    norm: str, name: str, stochastic: bool
) -> None:
    policy, eps = pendulum_controller(stochastic=stochastic), 0.3
    scale = np.array([0.2, 0.5, 2.0])
    obs = torch.tensor([[0.6, 0.8, 0.5], [1.0, 0.0, -1.0], [-0.6, 0.8, 2.0]])
    w = torch.tensor([0.0, -2.0, -0.5], dtype=torch.float64) * torch.tensor(scale)
    best = eps * float(w.abs().sum() if norm == "linf" else w.norm())  # max |mean(s') - mean(s)|
    threat = threat_for(scale, norm, eps)
    adv, _ = attack(name, seed=1, steps=20).perturb(policy, obs, threat)
    with torch.no_grad():
        deviation = (policy.output(adv).mean - policy.output(obs).mean).abs().squeeze(1).double()
    if norm == "linf":  # sign steps reach the optimal corner exactly
        torch.testing.assert_close(deviation, torch.full((3,), best, dtype=torch.float64), atol=1e-5, rtol=1e-5)
    else:  # normalised-gradient steps converge to the optimum (the random start's orthogonal part shrinks)
        assert bool((deviation >= 0.97 * best).all()) and bool((deviation <= best * (1 + 1e-5)).all())
    noise, _ = attack("random", seed=1).perturb(policy, obs, threat)
    with torch.no_grad():
        random_deviation = (policy.output(noise).mean - policy.output(obs).mean).abs()
    assert bool((random_deviation < best * 0.999).all())


def test_critic_attack_minimises_the_value_at_the_closed_form_corner() -> None:
    v = torch.tensor([1.0, -2.0, 0.0, 0.5, 3.0])
    policy, s, eps = linear_policy(W, critic=v), states(20), 0.1
    adv, _ = attack("critic", steps=10).perturb(policy, s, threat_for(SCALE, "linf", eps))
    expected = s.double() - eps * torch.tensor(SCALE) * torch.sign(v.double())
    torch.testing.assert_close(adv.double(), expected, atol=1e-6, rtol=1e-6)


def test_timed_preference_is_the_probability_gap() -> None:
    policy = linear_policy(TOY_W)
    c = action_preference(policy, torch.as_tensor(TOY_OBS)).double()
    torch.testing.assert_close(c, torch.tensor(np.abs(np.tanh(toy_margins() / 2))), atol=1e-6, rtol=1e-6)


# -- returns under attack, by hand, on the toy environment -----------------------------------------------------------


@pytest.mark.parametrize("name", ["fgsm", "pgd"])
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3, 1.0])
def test_return_under_attack_on_the_toy_environment_is_computed_by_hand(name: str, eps: float) -> None:
    pytest.importorskip("gymnasium")
    from modelsec.rl.rollout import run_episode

    env_id, policy = register_toy(), linear_policy(TOY_W)
    scale = np.array([1.0, 0.5, 2.0])
    radius = eps * float(np.sum(scale * np.abs((TOY_W[1] - TOY_W[0]).numpy())))
    expected = float(np.sum(np.abs(toy_margins()) > radius))  # a step is lost iff its action can be flipped
    episode = run_episode(
        policy,
        env_id,
        0,
        attack=attack(name, random_start=False) if name == "pgd" else attack(name),
        threat=threat_for(scale, "linf", eps, bound=10.0),
    )
    assert episode.total_reward == expected
    assert episode.steps == episode.attacked_steps == len(TOY_OBS)
    assert episode.changed_actions == len(TOY_OBS) - expected  # every lost step is a changed action, and only those
    if name == "fgsm":  # the clean logits, one gradient, the action played; counting changes is not a query
        assert episode.queries == 3 * episode.steps


def test_timed_attack_on_the_toy_environment_follows_its_rule() -> None:
    pytest.importorskip("gymnasium")
    from modelsec.rl.rollout import run_episode

    env_id, policy = register_toy(), linear_policy(TOY_W)
    scale, eps, threshold, budget = np.array([1.0, 1.0, 1.0]), 2.0, 0.1, 0.4
    margins_ = toy_margins()
    c = np.abs(np.tanh(margins_ / 2))
    radius = eps * float(np.sum(np.abs((TOY_W[1] - TOY_W[0]).numpy())))
    assert bool((np.abs(margins_) < radius).all())  # the inner attack flips every step it attacks
    attacked, lost = 0, 0
    for t in range(1, len(TOY_OBS) + 1):  # the rule, by hand
        if c[t - 1] >= threshold and attacked + 1 <= budget * t:
            attacked += 1
            lost += 1
    timed = TimedAttack(inner="fgsm", threshold=threshold, budget=budget)
    episode = run_episode(policy, env_id, 0, attack=timed, threat=threat_for(scale, "linf", eps, bound=10.0))
    assert 0 < attacked < len(TOY_OBS)
    assert episode.attacked_steps == attacked
    assert episode.total_reward == len(TOY_OBS) - lost
    assert episode.changed_actions == lost


def test_timed_attack_respects_its_budget_at_every_step() -> None:
    policy = linear_policy(TOY_W)
    threat = threat_for(np.ones(3), "linf", 0.5)
    for budget in [0.1, 0.25, 0.5]:
        for threshold in [None, 0.0]:
            timed = attack("timed", inner="fgsm", budget=budget, threshold=threshold)
            for t in range(1, 4 * len(TOY_OBS) + 1):
                obs = torch.as_tensor(TOY_OBS[(t - 1) % len(TOY_OBS)])[None]
                adv, hit = timed.perturb(policy, obs, threat)
                assert timed.attacked_steps <= budget * t + 1e-9
                assert hit or torch.equal(adv, obs)
            if threshold == 0.0:  # every step qualifies: the budget is used up exactly
                assert timed.attacked_steps == int(budget * 4 * len(TOY_OBS) + 1e-9)


# -- the contract ---------------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class Rogue(PolicyAttack):
    """Returns whatever it is told to (to test that the base class refuses it)."""

    name = "rogue"
    needs = "none"
    mode: str = "outside"

    def _perturb(self, policy: Policy, obs: torch.Tensor, threat: ObservationThreat) -> tuple[torch.Tensor, bool]:
        scale = torch.tensor(threat.scale)
        if self.mode == "outside":
            return obs + 1.01 * threat.eps * scale, True
        if self.mode == "bounds":
            return torch.full_like(obs, threat.high[0] + 1e-3), True
        if self.mode == "nan":
            return torch.full_like(obs, float("nan")), True
        if self.mode == "silent":
            return obs + 0.5 * threat.eps * scale, False
        if self.mode == "shape":
            return obs[:, :-1], True
        return obs + threat.eps * scale, True  # on the ball's boundary: allowed


@pytest.mark.parametrize("mode", ["outside", "bounds", "nan", "silent", "shape"])
def test_the_contract_refuses_observations_outside_the_threat_model(mode: str) -> None:
    eps = 1.0 if mode == "bounds" else 0.1  # "bounds": inside the ball, outside the observation bounds only
    policy, threat = linear_policy(TOY_W), threat_for(np.ones(3), "linf", eps, bound=0.5)
    rogue = Rogue(mode=mode)
    rogue.reset(0)
    with pytest.raises(AttackContractError):
        rogue.perturb(policy, torch.as_tensor(TOY_OBS[:1]), threat)


def test_the_contract_accepts_the_boundary_and_needs_a_reset() -> None:
    policy, threat = linear_policy(TOY_W), threat_for(np.ones(3), "linf", 0.1)
    rogue = Rogue(mode="edge")
    with pytest.raises(RuntimeError, match="reset"):
        rogue.perturb(policy, torch.as_tensor(TOY_OBS[:1]), threat)
    rogue.reset(0)
    _, hit = rogue.perturb(policy, torch.as_tensor(TOY_OBS[:1]), threat)
    assert hit and rogue.steps_seen == rogue.attacked_steps == 1


def test_attacks_refuse_policies_they_cannot_attack() -> None:
    discrete, continuous = linear_policy(TOY_W), pendulum_controller()
    obs_d, obs_c = torch.as_tensor(TOY_OBS[:1]), torch.tensor([[1.0, 0.0, 0.0]])
    threat = threat_for(np.ones(3), "linf", 0.1)
    for name, policy, obs in [("critic", discrete, obs_d), ("mad", discrete, obs_d), ("timed", continuous, obs_c)]:
        a = attack(name)
        assert a.unsupported_reason(policy, threat) is not None
        with pytest.raises(ConfigError):
            a.perturb(policy, obs, threat)
    with pytest.raises(ConfigError):
        POLICY_ATTACKS.get("pgd")(steps=0)
    with pytest.raises(ConfigError):
        POLICY_ATTACKS.get("timed")(budget=1.5)
    with pytest.raises(ConfigError):
        POLICY_ATTACKS.get("mad")(random_start=False)


@pytest.mark.parametrize("name", OWN_ATTACKS)
def test_every_attack_at_eps_zero_leaves_the_observation_unchanged(name: str) -> None:
    continuous = name == "mad"
    policy = pendulum_controller() if continuous else linear_policy(TOY_W, critic=torch.ones(3))
    obs = torch.tensor([[0.6, 0.8, 0.5]]) if continuous else torch.as_tensor(TOY_OBS[:1])
    a = attack(name)
    adv, _ = a.perturb(policy, obs, threat_for(np.ones(3), "linf", 0.0))
    assert torch.equal(adv, obs)


# -- episodes in Gymnasium's classic-control environments -----------------------------------------------------------


@pytest.fixture(scope="module")
def cartpole_threat() -> tuple[Policy, ObservationThreat]:
    pytest.importorskip("gymnasium")
    from modelsec.rl.environments import episode_seeds, make_env
    from modelsec.rl.rollout import estimate_scale

    policy = cartpole_controller(critic=True)
    scale = estimate_scale(policy, "CartPole-v1", episode_seeds(1, 2), max_steps=200)
    env = make_env("CartPole-v1")
    return policy, ObservationThreat.for_space(env.observation_space, scale, norm="linf", eps=2.0)


def test_pgd_breaks_the_cartpole_controller_where_random_noise_does_not(
    cartpole_threat: tuple[Policy, ObservationThreat],
) -> None:
    from modelsec.rl.environments import episode_seeds
    from modelsec.rl.rollout import run_episodes

    policy, threat = cartpole_threat
    seeds, horizon = episode_seeds(0, 3), 200
    clean = run_episodes(policy, "CartPole-v1", seeds, max_steps=horizon)
    noise = run_episodes(policy, "CartPole-v1", seeds, attack=attack("random"), threat=threat, max_steps=horizon)
    pgd = run_episodes(policy, "CartPole-v1", seeds, attack=attack("pgd", steps=3), threat=threat, max_steps=horizon)
    assert all(e.total_reward == horizon for e in clean)
    assert all(e.total_reward >= 0.9 * horizon for e in noise)
    assert all(e.total_reward <= 0.5 * horizon for e in pgd)  # measured: 38-49 of 200
    assert all(e.attacked_steps == e.steps for e in pgd)
    assert all(e.queries > e.steps for e in pgd)  # the attack's own queries are counted


@pytest.mark.parametrize("name", OWN_ATTACKS)
def test_same_seed_same_attacked_episodes(name: str, cartpole_threat: tuple[Policy, ObservationThreat]) -> None:
    from modelsec.rl.environments import episode_seeds, make_env
    from modelsec.rl.rollout import estimate_scale, run_episodes

    settings: dict[str, object] = {} if name in ("random", "fgsm") else {"steps": 2}
    if name == "timed":
        settings = {"inner": POLICY_ATTACKS.get("pgd")(steps=2)}
    if name == "mad":
        policy, env_id = pendulum_controller(stochastic=True), "Pendulum-v1"
        scale = estimate_scale(policy, env_id, [0], max_steps=30)
        threat = ObservationThreat.for_space(make_env(env_id).observation_space, scale, norm="l2", eps=0.5)
    else:
        (policy, threat), env_id = cartpole_threat, "CartPole-v1"
    seeds = episode_seeds(5, 2)
    runs = [
        run_episodes(policy, env_id, seeds, attack=POLICY_ATTACKS.get(name)(**settings), threat=threat, max_steps=40)
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
    assert all(0 < e.attacked_steps <= e.steps for e in runs[0])
    if name == "timed":
        assert all(e.attacked_steps <= 0.25 * e.steps for e in runs[0])


@pytest.mark.parametrize("name", ["mad", "pgd", "fgsm", "random"])
def test_pendulum_episodes_under_continuous_attacks(name: str) -> None:
    pytest.importorskip("gymnasium")
    from modelsec.rl.environments import make_env
    from modelsec.rl.rollout import run_episode

    policy = pendulum_controller()
    threat = ObservationThreat.for_space(make_env("Pendulum-v1").observation_space, np.ones(3), norm="linf", eps=0.0)
    clean = run_episode(policy, "Pendulum-v1", 3, max_steps=25)
    attacked = run_episode(
        policy,
        "Pendulum-v1",
        3,
        attack=attack(name, steps=2) if name in ("mad", "pgd") else attack(name),
        threat=threat,
        max_steps=25,
    )
    assert attacked.total_reward == clean.total_reward  # eps 0: the same episode
    assert attacked.attacked_steps == attacked.steps == 25
    assert attacked.changed_actions is None and clean.changed_actions is None  # counted for discrete actions only


def test_params_record_the_settings_and_the_inner_attack() -> None:
    assert POLICY_ATTACKS.get("pgd")(steps=7).params() == {"steps": 7, "step_size": None, "random_start": True}
    timed = POLICY_ATTACKS.get("timed")(inner=POLICY_ATTACKS.get("critic")(steps=3), budget=0.5)
    assert timed.params() == {
        "inner": {"attack": "critic", "steps": 3, "step_size": None, "random_start": False},
        "threshold": None,
        "budget": 0.5,
    }


def test_observations_outside_the_bounds_are_left_unattacked() -> None:
    policy, threat = linear_policy(TOY_W), threat_for(np.ones(3), "linf", 0.2, bound=1.0)
    obs = torch.tensor([[0.3, 0.1, 0.2], [1.5, 0.0, 0.0], [-0.2, 0.05, 0.4]])  # the second lies outside [-1, 1]
    fgsm = attack("fgsm")
    adv, hit = fgsm.perturb(policy, obs, threat)
    assert hit and torch.equal(adv[1], obs[1])
    assert bool((adv[[0, 2]] != obs[[0, 2]]).all())
    alone, hit = fgsm.perturb(policy, obs[1:2], threat)
    assert not hit and torch.equal(alone, obs[1:2])
    assert (fgsm.steps_seen, fgsm.attacked_steps) == (2, 1)
