"""The learned optimal adversary (Zhang et al. 2021, "Robust Reinforcement Learning on State Observations with
Learned Optimal Adversary", ATLA's attacker), and for discrete actions its policy-space form (Sun et al. 2022,
"Who Is the Strongest Enemy? Towards Optimal and Efficient Evasion Attacks in Deep RL", PA-AD's director).

Threat model: the state-adversarial MDP (Zhang et al. 2020): the attacker sees the true observation ``s`` and shows
the victim any ``s'`` of the ball of :class:`~modelsec.rl.threat.ObservationThreat`; the victim (fixed, acting
deterministically) never learns. For a fixed victim, the attacker's best strategy is itself the optimal policy of
an MDP: its observation is ``s``, its action chooses ``s'``, its reward is minus the victim's reward. So the
adversary is trained with PPO (:func:`~modelsec.rl.ppo.train_ppo`) on :class:`AdversaryEnv`, a wrapper of the
victim's environment: the adversary's continuous action ``a`` in ``[-1, 1]^d`` maps to the perturbation ``eps *
scale * a`` (L-inf), or ``eps * scale * a`` projected onto the ball (L2), clipped to the observation bounds. Where
the victim has a critic, the adversary's reward is shaped by it (a potential-based shaping, which keeps the optimal
adversary: :class:`AdversaryEnv`). It needs no gradients of the victim, only its actions (and its value estimates
for the shaping), but many episodes: the strongest attack reported by the paper given enough training, and the
slowest (the ``thorough`` preset's); the training budget is the ``steps`` setting.

Discrete actions (``director``, the default there): a deterministic victim's action is all that an observation
perturbation changes, so the adversary's choice at ``s`` reduces to which reachable action the victim plays. Sun et
al. split the attacker into a *director*, trained by RL, that picks the victim's new action, and an *actor* that
finds the perturbation realising it by gradients. Here the director is a PPO policy over the victim's actions and
the actor is :func:`~modelsec.rl.attacks.action.targeted_action_attack` (PGD on the logit margin, stopped when the
victim plays the target; a step whose target is already the victim's action is not perturbed). The director's MDP
has as many actions as the victim instead of one per observation dimension, so PPO learns it from far fewer
steps. The optimum is the same where PGD finds every reachable action.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from modelsec.core.errors import ConfigError
from modelsec.core.progress import Progress
from modelsec.core.seeding import derived_seed
from modelsec.rl.attacks.action import targeted_action_attack
from modelsec.rl.attacks.base import POLICY_ATTACKS, PolicyAttack
from modelsec.rl.policy import Policy
from modelsec.rl.ppo import EnvSource, PPOConfig, env_label, new_env, train_ppo
from modelsec.rl.threat import ObservationThreat

ADVERSARY_PPO = PPOConfig(
    total_steps=50_000,
    n_envs=8,
    n_steps=64,
    epochs=10,
    minibatch_size=128,
    learning_rate=3e-4,
    gamma=0.99,
    gae_lambda=0.95,
    entropy_coef=0.0,
    log_std_init=-0.5,
)
"""The adversary's PPO settings (its ``total_steps`` is replaced by the attack's ``steps`` budget)."""
TARGET_STEPS = 10
"""PGD steps of the director's actor (of ``2.5 * eps / TARGET_STEPS`` each, Madry et al.'s choice)."""


class _Box:
    """The adversary's action space ``[-1, 1]^d`` (the attributes :class:`~modelsec.rl.policy.ActionSpec` reads)."""

    def __init__(self, dim: int) -> None:
        self.low = np.full(dim, -1.0, dtype=np.float32)
        self.high = np.full(dim, 1.0, dtype=np.float32)
        self.shape = (dim,)


class _Discrete:
    """The director's action space: the victim's ``n`` actions (the attribute :class:`ActionSpec` reads)."""

    def __init__(self, n: int) -> None:
        self.n = n


def directed(victim: Policy, obs: torch.Tensor, target: torch.Tensor, threat: ObservationThreat) -> torch.Tensor:
    """The observations that make ``victim`` play the director's ``target`` actions ``(B,)`` where PGD reaches
    them within ``threat`` (:func:`~modelsec.rl.attacks.action.targeted_action_attack`); unchanged where the
    victim already plays them."""
    return targeted_action_attack(
        victim, obs, threat, target.reshape(-1).long(), steps=TARGET_STEPS, step_size=2.5 * threat.eps / TARGET_STEPS
    )


def perturbation(obs: torch.Tensor, action: torch.Tensor, threat: ObservationThreat) -> torch.Tensor:
    """The observations an adversary's actions ``(B, d)`` in ``[-1, 1]^d`` choose: ``obs + eps * scale * a``,
    projected onto the threat's ball and clipped to the bounds (a zero-scale dimension is not changed)."""
    unit = action.clamp(-1, 1).reshape(obs.shape).to(obs.dtype)
    scale = torch.tensor(threat.scale, dtype=obs.dtype).view(1, *obs.shape[1:])
    return threat.project(obs, obs + threat.eps * unit * scale)


class AdversaryEnv:
    """The adversary's MDP for a fixed ``victim`` in the environment ``env``: observations are the victim's clean
    observations, actions in ``[-1, 1]^d`` choose the perturbed observation the victim acts on (deterministically;
    with ``director``, a discrete victim's action to aim for, realised by :func:`directed`), rewards are minus the
    victim's rewards; episodes end when the victim's do. ``info["victim_reward"]`` is the victim's reward.

    With ``shaping`` (the adversary's discount factor) and a victim with a critic, the reward is shaped by the
    potential ``Phi(s) = -V(s)`` (the victim's own value of the true state, 0 after termination):
    ``-r + shaping * Phi(s') - Phi(s)``. Potential-based shaping leaves the optimal adversary unchanged (Ng et al.
    1999, "Policy Invariance under Reward Transformations") and gives a signal at every step where the true reward
    gives one only when the victim fails (CartPole's +1 a step)."""

    def __init__(
        self,
        victim: Policy,
        env: EnvSource,
        threat: ObservationThreat,
        *,
        shaping: float | None = None,
        director: bool = False,
    ) -> None:
        if director and victim.action.kind != "discrete":
            raise ConfigError("a director aims for the victim's actions: it needs a discrete victim")
        self.victim = victim
        self.threat = threat
        self.shaping = shaping if victim.has_critic else None
        self.director = director
        self.env = new_env(env)
        self.observation_space = self.env.observation_space
        dim = int(np.prod(self.observation_space.shape))
        if dim != len(threat.scale):
            raise ConfigError(f"the threat has {len(threat.scale)} dimensions, the observations {dim}")
        self.action_space: _Box | _Discrete = _Discrete(int(victim.action.n or 0)) if director else _Box(dim)
        self._obs: np.ndarray = np.zeros(self.observation_space.shape, dtype=np.float32)

    def _potential(self, obs: np.ndarray) -> float:
        with torch.no_grad():
            value = self.victim.output(torch.as_tensor(obs)[None]).value
        return 0.0 if value is None else -float(value[0])

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed)
        self._obs = np.asarray(obs, dtype=np.float32)
        return self._obs, info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        clean = torch.as_tensor(self._obs)[None]
        if self.director:
            seen = directed(self.victim, clean, torch.as_tensor(np.asarray(action)).reshape(1), self.threat)
        else:
            seen = perturbation(clean, torch.as_tensor(np.asarray(action, dtype=np.float32))[None], self.threat)
        obs, reward, terminated, truncated, info = self.env.step(self.victim.act(seen[0].numpy()))
        new_obs = np.asarray(obs, dtype=np.float32)
        adversary_reward = -float(reward)
        if self.shaping is not None:
            after = 0.0 if terminated else self._potential(new_obs)
            adversary_reward += self.shaping * after - self._potential(self._obs)
        self._obs = new_obs
        return new_obs, adversary_reward, bool(terminated), bool(truncated), {**info, "victim_reward": float(reward)}

    def close(self) -> None:
        self.env.close()


@dataclass
class _Factory:
    """A picklable, named factory of :class:`AdversaryEnv` (``train_ppo`` builds one per copy)."""

    victim: Policy
    env: EnvSource
    threat: ObservationThreat
    shaping: float | None = None
    director: bool = False

    @property
    def label(self) -> str:
        return f"adversary-of-{env_label(self.env)}"

    def __call__(self) -> AdversaryEnv:
        return AdversaryEnv(self.victim, self.env, self.threat, shaping=self.shaping, director=self.director)


def train_adversary(
    victim: Policy,
    env: EnvSource,
    threat: ObservationThreat,
    *,
    seed: int,
    steps: int = ADVERSARY_PPO.total_steps,
    config: PPOConfig = ADVERSARY_PPO,
    shaping: bool = True,
    director: bool = False,
    progress: Progress | None = None,
) -> Policy:
    """An adversary policy trained with PPO for ``steps`` environment steps against the fixed ``victim`` (its
    deterministic action in ``[-1, 1]^d``, mapped by :func:`perturbation`, is the attack; with ``director``, the
    victim's action it aims for, realised by :func:`directed`); ``shaping``: the reward shaped by the victim's
    critic where it has one (see :class:`AdversaryEnv`)."""
    config = replace(config, total_steps=max(int(steps), config.rollout_size))
    factory = _Factory(victim, env, threat, config.gamma if shaping else None, director)
    adversary = train_ppo(factory, config, seed=seed, progress=progress).policy
    adversary.card = {
        **adversary.card,
        "role": "observation adversary",
        "victim_env": env_label(env),
        "shaped": bool(shaping and victim.has_critic),
        "director": director,
    }
    return adversary


@POLICY_ATTACKS.register("learned")
class LearnedAttack(PolicyAttack):
    """The learned optimal adversary (ATLA's attacker, Zhang et al. 2021; for discrete actions PA-AD's director,
    Sun et al. 2022) as a policy attack: at its first use against a policy and threat it trains a PPO adversary in
    ``env_id`` for ``steps`` steps (or uses the one :meth:`prepare` trained), then perturbs each observation with
    the adversary's deterministic action. A perturbation adversary attacks every step; a director attacks the steps
    whose target differs from the victim's own action.

    Args:
        env_id: the victim's environment (needed to train the adversary).
        steps: the adversary's training budget (environment steps).
        seed: the adversary's training seed.
        ppo: the adversary's PPO settings (its ``total_steps`` replaced by ``steps``).
        director: for a discrete victim, learn which action to make it play and realise it by targeted PGD (the
            module's docstring); ``False``: learn the perturbation itself, as ATLA does. Continuous victims always
            get the perturbation adversary.
    """

    name = "learned"
    needs = "none"
    action_kinds = frozenset({"discrete", "continuous"})

    def __init__(
        self,
        *,
        env_id: str | None = None,
        steps: int = ADVERSARY_PPO.total_steps,
        seed: int = 0,
        ppo: PPOConfig = ADVERSARY_PPO,
        director: bool = True,
    ) -> None:
        if steps < 1:
            raise ConfigError(f"the learned attack's steps must be >= 1, got {steps}")
        self.env_id = env_id
        self.steps = int(steps)
        self.seed = int(seed)
        self.ppo = ppo
        self.director = bool(director)
        self.training_queries = 0
        self._adversaries: dict[tuple[int, str], Policy] = {}

    def _key(self, policy: Policy, threat: ObservationThreat) -> tuple[int, str]:
        return id(policy), repr(threat.to_dict())

    def prepare(
        self, policy: Policy, env_id: EnvSource, threat: ObservationThreat, *, progress: Progress | None = None
    ) -> Policy:
        """Train the adversary of ``policy`` under ``threat`` in ``env_id`` (its seed derived from the attack's and
        the eps), and keep it for :meth:`perturb`."""
        key = self._key(policy, threat)
        if key not in self._adversaries:
            before = policy.queries
            seed = derived_seed(self.seed, "learned-adversary", threat.norm, threat.eps)
            policy.queries = 0
            adversary = train_adversary(
                policy,
                env_id,
                threat,
                seed=seed,
                steps=self.steps,
                config=self.ppo,
                director=self._directs(policy),
                progress=progress,
            )
            self.training_queries += self.steps
            policy.queries = before
            self._adversaries[key] = adversary
        return self._adversaries[key]

    def _perturb(self, policy: Policy, obs: torch.Tensor, threat: ObservationThreat) -> tuple[torch.Tensor, bool]:
        key = self._key(policy, threat)
        if key not in self._adversaries:
            if self.env_id is None:
                raise ConfigError("the learned attack needs the environment to train its adversary: env_id=...")
            self.prepare(policy, self.env_id, threat)
        adversary = self._adversaries[key]
        if not self._directs(policy):
            return perturbation(obs, adversary.actions(obs), threat), True
        target = adversary.actions(obs)
        aimed = target != policy.actions(obs)
        if not bool(aimed.any()):
            return obs, False
        out = obs.clone()
        out[aimed] = directed(policy, obs[aimed], target[aimed], threat)
        return out, True

    def _directs(self, policy: Policy) -> bool:
        return self.director and policy.action.kind == "discrete"
