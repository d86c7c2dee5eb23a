"""Proximal Policy Optimization: train an actor-critic policy in a Gymnasium environment.

PPO (Schulman et al. 2017, "Proximal Policy Optimization Algorithms") with generalised advantage estimation
(GAE(lambda), Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage Estimation"):
``n_envs`` copies of the environment are stepped in lock-step in this process for ``n_steps`` steps (a rollout),
then ``epochs`` passes of minibatch gradient steps maximise the clipped surrogate
``min(r A, clip(r, 1 - c, 1 + c) A)`` (``r`` the probability ratio of the new and the rollout's policy, ``A`` the
normalised advantage) minus ``value_coef`` times the critic's squared error plus ``entropy_coef`` times the
entropy, with the gradient's norm clipped; the learning rate decays linearly to 0. Discrete actions follow a
categorical distribution over the logits, continuous ones a diagonal Gaussian (its sample is clipped to the bounds
before the environment sees it; the log-probability is the unclipped sample's). A time limit (truncation) is not a
terminal state: its reward is bootstrapped with ``gamma`` times the critic's value of the final observation.

Everything random is seeded: the environments' seeds come from :func:`~modelsec.core.seeding.spawned_seeds`, the
action samples and minibatch shuffles from one ``torch.Generator``; the same seed gives the same policy, bit for
bit, on the CPU. Training runs in *segments* of ``segment_updates`` updates; every segment starts with freshly
seeded environments (an episode still running at a segment's end is cut there, which PPO treats like a time
limit), so that the state after a segment is the policy, the optimizer, the generator and the update index alone:
with ``checkpoint_dir`` it is saved there after every segment (a :class:`~modelsec.store.checkpoint.CheckpointFile`
read back with ``weights_only=True``) and an interrupted run resumed from it ends with the same policy as an
uninterrupted one.

Two hooks let a defense change the training (:mod:`modelsec.rl.hardening`): a ``regulariser`` adds a loss term on
each minibatch's observations (SA-PPO's smoothness term), and ``observe`` replaces the observations the policy sees
during the rollouts (PPO on PGD-perturbed observations).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from modelsec.core.errors import ConfigError
from modelsec.core.progress import NullProgress, Progress
from modelsec.core.seeding import derived_generator, derived_seed, generator, spawned_seeds
from modelsec.rl.architectures import ActorCriticMLP, actor_critic_policy
from modelsec.rl.environments import make_env
from modelsec.rl.policy import ActionSpec, Policy, PolicyOutput
from modelsec.store.checkpoint import CheckpointFile

EnvSource = str | Callable[[], Any]
"""A Gymnasium environment id, or a function returning a fresh environment (a wrapper, a test's toy env)."""

CHECKPOINT_FORMAT = "modelsec-ppo-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "ppo.ckpt"
SCALE_MOMENTUM = 0.9
"""The observations' per-dimension variance seen by the hooks (:attr:`TrainingContext.scale`) is an exponential
moving average over rollouts, with this weight on the previous value."""


@dataclass(frozen=True)
class PPOConfig:
    """PPO's hyper-parameters; the defaults train CartPole-v1 to return 500 in about a minute on one CPU core.

    Args:
        total_steps: environment steps in all (over all copies); rounded down to whole updates.
        n_envs: copies of the environment stepped in lock-step.
        n_steps: steps of each copy per rollout (an update sees ``n_envs * n_steps`` transitions).
        epochs: passes over a rollout's transitions per update.
        minibatch_size: transitions per gradient step.
        learning_rate: Adam's initial learning rate.
        anneal: decay the learning rate linearly to 0 over the training.
        gamma: the discount factor.
        gae_lambda: GAE's lambda (bias-variance trade-off of the advantages).
        clip_range: the surrogate's clip ``c`` (ratios outside ``[1 - c, 1 + c]`` give no gradient).
        value_coef: weight of the critic's squared error.
        entropy_coef: weight of the entropy bonus.
        max_grad_norm: the gradient's L2 norm is clipped to this.
        normalize_advantages: advantages normalised to mean 0, std 1 per minibatch.
        hidden: hidden layer sizes of a fresh actor-critic MLP (actor and critic alike).
        activation: ``tanh`` or ``relu``.
        log_std_init: initial log standard deviation of a fresh Gaussian policy (continuous actions).
        segment_updates: updates per segment: the environments are reseeded, and a checkpoint written, after each.
    """

    total_steps: int = 100_000
    n_envs: int = 8
    n_steps: int = 32
    epochs: int = 20
    minibatch_size: int = 256
    learning_rate: float = 1e-3
    anneal: bool = True
    gamma: float = 0.98
    gae_lambda: float = 0.8
    clip_range: float = 0.2
    value_coef: float = 0.5
    entropy_coef: float = 0.0
    max_grad_norm: float = 0.5
    normalize_advantages: bool = True
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    log_std_init: float = 0.0
    segment_updates: int = 25

    def __post_init__(self) -> None:
        positive = ("total_steps", "n_envs", "n_steps", "epochs", "minibatch_size", "segment_updates")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"PPO's {name} must be >= 1, got {getattr(self, name)}")
        if self.total_steps < self.n_envs * self.n_steps:
            raise ConfigError(
                f"PPO's total_steps ({self.total_steps}) is less than one rollout (n_envs * n_steps = "
                f"{self.n_envs * self.n_steps})"
            )
        for name in ("learning_rate", "clip_range", "max_grad_norm"):
            if not float(getattr(self, name)) > 0:
                raise ConfigError(f"PPO's {name} must be > 0, got {getattr(self, name)}")
        for name in ("gamma", "gae_lambda"):
            if not 0 <= float(getattr(self, name)) <= 1:
                raise ConfigError(f"PPO's {name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("value_coef", "entropy_coef"):
            if not float(getattr(self, name)) >= 0:
                raise ConfigError(f"PPO's {name} must be >= 0, got {getattr(self, name)}")
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ConfigError(f"PPO's hidden layer sizes must be >= 1, got {self.hidden}")

    @property
    def rollout_size(self) -> int:
        return self.n_envs * self.n_steps

    @property
    def updates(self) -> int:
        return self.total_steps // self.rollout_size

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["hidden"] = list(self.hidden)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PPOConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown PPO settings: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        kwargs = dict(values)
        if "hidden" in kwargs:
            kwargs["hidden"] = tuple(int(h) for h in kwargs["hidden"])
        return cls(**kwargs)


@dataclass
class UpdateStats:
    """One PPO update: ``mean_return`` of the episodes that ended during its rollout (``None`` if none did),
    the last epoch's mean losses, and the seconds since training started."""

    update: int
    steps: int
    episodes: int
    mean_return: float | None
    policy_loss: float
    value_loss: float
    entropy: float
    approx_kl: float
    clip_fraction: float
    regulariser: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PPOResult:
    """A trained policy and its training history (one :class:`UpdateStats` per update)."""

    policy: Policy
    history: list[UpdateStats] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int = 0


@dataclass
class TrainingContext:
    """What the hooks know about the training: ``progress`` (the fraction of updates done, in ``[0, 1)``),
    ``update``, ``scale`` (the per-dimension standard deviation of the clean observations of the rollouts so far,
    an exponential moving average; ``None`` before the first rollout), and ``generator`` (the training's
    generator: hooks that draw from it stay reproducible)."""

    progress: float
    update: int
    scale: np.ndarray | None
    generator: torch.Generator


class Regulariser(Protocol):
    """A loss term on a minibatch's observations, added to PPO's loss (already weighted): ``(module, obs, context)
    -> scalar tensor``."""

    def __call__(self, module: nn.Module, obs: torch.Tensor, context: TrainingContext) -> torch.Tensor: ...


class ObservationHook(Protocol):
    """What the policy sees during the rollouts instead of the clean observations: ``(module, obs, context) ->
    obs'`` (same shape, detached)."""

    def __call__(self, module: nn.Module, obs: torch.Tensor, context: TrainingContext) -> torch.Tensor: ...


# --- the distributions ---------------------------------------------------------------------------------------------


def sample_actions(out: PolicyOutput, g: torch.Generator) -> torch.Tensor:
    """Actions drawn from the policy's distribution: categorical over ``logits`` ``(B,)``, or a diagonal Gaussian
    ``mean + exp(log_std) * noise`` ``(B, d)``."""
    if out.logits is not None:
        probs = torch.softmax(out.logits, dim=1)
        return torch.multinomial(probs, 1, generator=g).squeeze(1)
    assert out.mean is not None and out.log_std is not None
    noise = torch.randn(out.mean.shape, generator=g, dtype=out.mean.dtype)
    return out.mean + out.log_std.exp().expand_as(out.mean) * noise


def log_prob(out: PolicyOutput, actions: torch.Tensor) -> torch.Tensor:
    """Per-sample log-probability ``(B,)`` of ``actions`` under the policy's distribution."""
    if out.logits is not None:
        return torch.log_softmax(out.logits, dim=1).gather(1, actions.long().view(-1, 1)).squeeze(1)
    assert out.mean is not None and out.log_std is not None
    log_std = out.log_std.expand_as(out.mean)
    z = (actions - out.mean) / log_std.exp()
    return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(dim=1)


def entropy(out: PolicyOutput) -> torch.Tensor:
    """Per-sample entropy ``(B,)`` of the policy's distribution."""
    if out.logits is not None:
        logp = torch.log_softmax(out.logits, dim=1)
        return -(logp.exp() * logp).sum(dim=1)
    assert out.mean is not None and out.log_std is not None
    return (out.log_std.expand_as(out.mean) + 0.5 * math.log(2 * math.pi * math.e)).sum(dim=1)


# --- the pure parts of the algorithm --------------------------------------------------------------------------------


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    last_values: torch.Tensor,
    *,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns (Schulman et al. 2016) of a rollout.

    Args:
        rewards: ``(T, N)`` rewards of ``T`` steps of ``N`` environments (a truncated step's reward already holds
            ``gamma * V(final observation)``).
        values: ``(T, N)`` the critic's values of the observations the steps started from.
        dones: ``(T, N)`` whether the episode ended with that step (terminated or truncated): nothing after it is
            bootstrapped.
        last_values: ``(N,)`` the critic's values of the observations after the last step.

    Returns:
        ``(advantages, returns)``, both ``(T, N)``; ``returns = advantages + values`` (the critic's targets).
    """
    steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(last_values)
    for t in reversed(range(steps)):
        next_values = last_values if t == steps - 1 else values[t + 1]
        live = 1.0 - dones[t].to(rewards.dtype)
        delta = rewards[t] + gamma * next_values * live - values[t]
        running = delta + gamma * lam * live * running
        advantages[t] = running
    return advantages, advantages + values


def clipped_surrogate_loss(
    new_log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, clip_range: float
) -> torch.Tensor:
    """PPO's clipped policy loss: ``-mean(min(r A, clip(r, 1 - c, 1 + c) A))`` with ``r = exp(new - old)``."""
    ratio = torch.exp(new_log_prob - old_log_prob)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - clip_range, 1 + clip_range) * advantages
    return -torch.minimum(unclipped, clipped).mean()


def orthogonal_init(module: ActorCriticMLP, g: torch.Generator) -> None:
    """The usual PPO initialisation: orthogonal weights with gain sqrt(2) in the hidden layers, 0.01 on the action
    head (a near-uniform initial policy) and 1 on the value head; zero biases."""
    hidden_gain = math.sqrt(2)
    with torch.no_grad():
        for net in (module.mlp_extractor.policy_net, module.mlp_extractor.value_net):
            for layer in net:
                if isinstance(layer, nn.Linear):
                    nn.init.orthogonal_(layer.weight, gain=hidden_gain, generator=g)
                    layer.bias.zero_()
        for head, gain in ((module.action_net, 0.01), (module.value_net, 1.0)):
            nn.init.orthogonal_(head.weight, gain=gain, generator=g)
            head.bias.zero_()


# --- environments ---------------------------------------------------------------------------------------------------


def env_label(env: EnvSource) -> str:
    """How a run names its environment: the id, or the factory's ``label`` (or qualified name)."""
    if isinstance(env, str):
        return env
    return str(getattr(env, "label", None) or getattr(env, "__qualname__", type(env).__name__))


def new_env(env: EnvSource) -> Any:
    """A fresh environment: ``modelsec.rl.environments.make_env(id)`` for an id, ``env()`` for a factory."""
    if not isinstance(env, str):
        return env()
    return make_env(env)


def to_env_action(action: torch.Tensor, spec: ActionSpec) -> Any:
    """One sampled action as the environment takes it (an int, or a float32 array clipped to the bounds)."""
    if spec.kind == "discrete":
        return int(action.item())
    return np.clip(action.numpy(), np.asarray(spec.low), np.asarray(spec.high)).astype(np.float32)


def _as_batch(observations: list[np.ndarray]) -> torch.Tensor:
    return torch.as_tensor(np.stack([np.asarray(o, dtype=np.float32) for o in observations]))


# --- training ---------------------------------------------------------------------------------------------------------


def _state_hash(module: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def train_ppo(
    env_id: EnvSource,
    config: PPOConfig | None = None,
    *,
    seed: int,
    policy: Policy | None = None,
    progress: Progress | None = None,
    checkpoint_dir: Path | str | None = None,
    regulariser: Regulariser | None = None,
    observe: ObservationHook | None = None,
    run_info: dict[str, Any] | None = None,
) -> PPOResult:
    """Train a policy with PPO in ``env_id`` (see the module's docstring).

    Args:
        env_id: a Gymnasium id, or a function returning a fresh environment (Box observations).
        config: the hyper-parameters (:class:`PPOConfig`'s defaults when ``None``).
        seed: the run's seed (environments, initialisation, samples, shuffles).
        policy: a policy to fine-tune (an :class:`~modelsec.rl.architectures.ActorCriticMLP` or any module with a
            critic returning a :class:`~modelsec.rl.policy.PolicyOutput`); trained in place. ``None``: a fresh
            actor-critic MLP of ``config.hidden``, orthogonally initialised.
        progress: a progress bar (one step per update).
        checkpoint_dir: where to save the training state after every segment and resume it from (``ppo.ckpt``;
            the caller deletes it once it has saved the policy).
        regulariser: a loss term on each minibatch's observations (:class:`Regulariser`).
        observe: what the policy sees in the rollouts instead of the clean observations (:class:`ObservationHook`).
        run_info: plain values identifying the hooks' settings in the checkpoint (a checkpoint of other settings is
            refused).

    Returns:
        The trained policy (its card says how it was trained) and the history of the updates.
    """
    config = config or PPOConfig()
    progress = progress or NullProgress()
    start_time = time.perf_counter()
    probe = new_env(env_id)
    try:
        space = probe.observation_space
        if not hasattr(space, "low") or space.shape is None:
            raise ConfigError(f"{env_label(env_id)} has a non-Box observation space; PPO here needs a Box")
        observation_shape = tuple(int(s) for s in space.shape)
        spec = ActionSpec.from_space(probe.action_space)
    finally:
        probe.close()
    if policy is None:
        policy = actor_critic_policy(
            observation_shape,
            spec,
            hidden=config.hidden,
            activation=config.activation,
            seed=derived_seed(seed, "ppo", "init"),
        )
        assert isinstance(policy.module, ActorCriticMLP)
        orthogonal_init(policy.module, derived_generator(seed, "ppo", "orthogonal"))
        if spec.kind == "continuous":
            with torch.no_grad():
                policy.module.log_std.fill_(config.log_std_init)
        initial = "fresh"
    else:
        if policy.observation_shape != observation_shape or policy.action != spec:
            raise ConfigError(
                f"the policy (observations {policy.observation_shape}, actions {policy.action.to_dict()}) does not "
                f"fit {env_label(env_id)} (observations {observation_shape}, actions {spec.to_dict()})"
            )
        if not policy.has_critic:
            raise ConfigError("PPO fine-tuning needs a policy with a critic (an actor-critic policy)")
        initial = _state_hash(policy.module)
    module = policy.module
    optimizer = torch.optim.Adam(module.parameters(), lr=config.learning_rate, eps=1e-5)
    g = generator(derived_seed(seed, "ppo", "samples"))
    history: list[UpdateStats] = []
    start_update = 0
    scale_var: torch.Tensor | None = None

    checkpoint: CheckpointFile | None = None
    if checkpoint_dir is not None:
        run = {
            "algorithm": "ppo",
            "env": env_label(env_id),
            "config": config.to_dict(),
            "seed": int(seed),
            "initial": initial,
            "hooks": dict(run_info or {}),
        }
        checkpoint = CheckpointFile(
            Path(checkpoint_dir) / CHECKPOINT_NAME,
            run,
            format=CHECKPOINT_FORMAT,
            version=CHECKPOINT_VERSION,
            needs="the same environment, PPO settings, seed and initial policy",
        )
        saved = checkpoint.load()
        if saved is not None:
            module.load_state_dict(saved["module"])
            optimizer.load_state_dict(saved["optimizer"])
            g.set_state(saved["generator"])
            start_update = int(saved["update"])
            history = [UpdateStats(**h) for h in saved["history"]]
            scale_var = saved.get("scale_var")
            progress.note(f"resuming PPO at update {start_update} of {config.updates} from {checkpoint.path}")

    updates = config.updates
    n, steps = config.n_envs, config.n_steps
    envs = [new_env(env_id) for _ in range(n)]
    module.train()
    try:
        with progress.task(f"PPO {env_label(env_id)}", total=updates) as advance:
            advance(start_update)
            observations: list[np.ndarray] = []
            running = np.zeros(n)
            for update in range(start_update, updates):
                if update == start_update or update % config.segment_updates == 0:
                    segment = update // config.segment_updates
                    seeds = spawned_seeds(derived_seed(seed, "ppo", "envs", segment), n)
                    observations = [env.reset(seed=s)[0] for env, s in zip(envs, seeds, strict=True)]
                    running = np.zeros(n)
                fraction = update / updates
                if config.anneal:
                    for group in optimizer.param_groups:
                        group["lr"] = config.learning_rate * (1.0 - fraction)
                scale = None if scale_var is None else scale_var.sqrt().numpy().astype(np.float64)
                context = TrainingContext(progress=fraction, update=update, scale=scale, generator=g)

                seen_obs, clean_obs, actions, old_logp, values, rewards, dones = [], [], [], [], [], [], []
                finished: list[float] = []
                for _ in range(steps):
                    clean = _as_batch(observations)
                    seen = observe(module, clean, context) if observe is not None else clean
                    with torch.no_grad():
                        out = module(seen)
                        action = sample_actions(out, g)
                        seen_obs.append(seen)
                        clean_obs.append(clean)
                        actions.append(action)
                        old_logp.append(log_prob(out, action))
                        values.append(out.value)
                    step_rewards = np.zeros(n, dtype=np.float64)
                    step_dones = np.zeros(n, dtype=bool)
                    truncated_final: list[tuple[int, np.ndarray]] = []
                    for i, env in enumerate(envs):
                        obs, reward, terminated, truncated, _ = env.step(to_env_action(action[i], spec))
                        running[i] += float(reward)
                        step_rewards[i] = float(reward)
                        if terminated or truncated:
                            if truncated and not terminated:
                                truncated_final.append((i, obs))
                            finished.append(float(running[i]))
                            running[i] = 0.0
                            step_dones[i] = True
                            obs, _ = env.reset()
                        observations[i] = obs
                    if truncated_final:
                        with torch.no_grad():
                            final_values = module(_as_batch([o for _, o in truncated_final])).value
                        for (i, _), v in zip(truncated_final, final_values, strict=True):
                            step_rewards[i] += config.gamma * float(v)
                    rewards.append(torch.as_tensor(step_rewards, dtype=torch.float32))
                    dones.append(torch.as_tensor(step_dones))
                with torch.no_grad():
                    last_values = module(_as_batch(observations)).value
                advantages, returns = gae(
                    torch.stack(rewards),
                    torch.stack(values),
                    torch.stack(dones),
                    last_values,
                    gamma=config.gamma,
                    lam=config.gae_lambda,
                )
                clean_batch = torch.cat(clean_obs)
                batch_var = clean_batch.flatten(1).var(dim=0)
                scale_var = (
                    batch_var if scale_var is None else SCALE_MOMENTUM * scale_var + (1 - SCALE_MOMENTUM) * batch_var
                )
                context.scale = scale_var.sqrt().numpy().astype(np.float64)
                stats = _optimise(
                    module,
                    optimizer,
                    config,
                    g,
                    context,
                    regulariser,
                    obs=torch.cat(seen_obs),
                    actions=torch.cat(actions),
                    old_logp=torch.cat(old_logp),
                    advantages=advantages.flatten(),
                    returns=returns.flatten(),
                )
                history.append(
                    UpdateStats(
                        update=update,
                        steps=(update + 1) * config.rollout_size,
                        episodes=len(finished),
                        mean_return=float(np.mean(finished)) if finished else None,
                        seconds=time.perf_counter() - start_time,
                        **stats,
                    )
                )
                advance(1)
                if checkpoint is not None and ((update + 1) % config.segment_updates == 0 or update + 1 == updates):
                    checkpoint.write(
                        {
                            "update": update + 1,
                            "module": module.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "generator": g.get_state(),
                            "history": [h.to_dict() for h in history],
                            "scale_var": scale_var,
                        }
                    )
    finally:
        for env in envs:
            env.close()
        module.eval()
    policy.card = {
        **policy.card,
        "algorithm": "ppo",
        "env": env_label(env_id),
        "seed": int(seed),
        "ppo": config.to_dict(),
        "training_steps": updates * config.rollout_size,
    }
    return PPOResult(policy, history, time.perf_counter() - start_time, resumed_from=start_update)


def _optimise(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: PPOConfig,
    g: torch.Generator,
    context: TrainingContext,
    regulariser: Regulariser | None,
    *,
    obs: torch.Tensor,
    actions: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
) -> dict[str, float]:
    """The epochs of minibatch gradient steps of one update; the last epoch's mean statistics."""
    size = obs.shape[0]
    batch = min(config.minibatch_size, size)
    sums: dict[str, float] = {}
    for _ in range(config.epochs):
        sums = dict.fromkeys(("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "regulariser"), 0.0)
        order = torch.randperm(size, generator=g)
        count = 0
        for start in range(0, size - batch + 1, batch):
            idx = order[start : start + batch]
            out = module(obs[idx])
            new_logp = log_prob(out, actions[idx])
            adv = advantages[idx]
            if config.normalize_advantages and adv.numel() > 1:
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            policy_loss = clipped_surrogate_loss(new_logp, old_logp[idx], adv, config.clip_range)
            value_loss = (out.value - returns[idx]).pow(2).mean()
            ent = entropy(out).mean()
            loss = policy_loss + config.value_coef * value_loss - config.entropy_coef * ent
            reg = regulariser(module, obs[idx], context) if regulariser is not None else None
            if reg is not None:
                loss = loss + reg
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(module.parameters(), config.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                log_ratio = new_logp - old_logp[idx]
                sums["policy_loss"] += float(policy_loss)
                sums["value_loss"] += float(value_loss)
                sums["entropy"] += float(ent)
                sums["approx_kl"] += float(((log_ratio.exp() - 1) - log_ratio).mean())
                sums["clip_fraction"] += float(((log_ratio.exp() - 1).abs() > config.clip_range).float().mean())
                sums["regulariser"] += float(reg) if reg is not None else 0.0
            count += 1
        sums = {k: v / max(count, 1) for k, v in sums.items()}
    return sums
