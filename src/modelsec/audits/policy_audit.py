"""The policy audit workflow: how much of a trained policy's return survives attacks on its observations.

Threat model (the state-adversarial MDP of Zhang et al. 2020, "Robust Deep Reinforcement Learning against
Adversarial Perturbations on State Observations"): an attacker between a Gymnasium environment and the agent
replaces each observation by one within ``eps`` (L-inf or L2, in units of each observation dimension's standard
deviation, inside the observation space's bounds); the environment's state is untouched. The attacks
(:mod:`modelsec.rl.attacks`): uniform random noise (the baseline), FGSM/PGD on the action distribution (Huang et al.
2017), MAD (Zhang et al. 2020), the critic attack, the strategically-timed attack (Lin et al. 2017) and, in the
``thorough`` preset, a learned optimal adversary (Zhang et al. 2021).

:func:`run_policy_audit` (``modelsec audit-policy``):

1. the environment and the policy are checked against each other (observation shape, action space);
2. the unit of eps, each observation dimension's standard deviation, is estimated from ``scale_episodes`` clean
   episodes with seeds of their own (never the audit's), and recorded;
3. ``episodes`` seeded episodes are run clean, then under each attack at each eps with the SAME seeds, so that the
   worst case over attacks is taken per episode (as robust accuracy is per sample in the classifier audit);
4. every mean return gets a percentile-bootstrap 95% CI (:func:`modelsec.stats.bootstrap.mean_with_ci`), and a
   verdict (:func:`policy_verdict`) says how much return the worst case removes.

Same seed, same result (on the CPU): the episode seeds, the attacks' generators and the bootstrap resamples are all
derived from ``seed``. No file is written here (:mod:`modelsec.outputs.policy_audit` writes them).
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np

from modelsec.core.errors import ConfigError
from modelsec.core.options import COUNT, SEED, OneOf, check_seed
from modelsec.core.progress import NullProgress, Progress
from modelsec.core.seeding import derived_seed
from modelsec.results.audit import Verdict, eps_key
from modelsec.results.policy_audit import (
    RANDOM_ATTACK,
    EpisodeReturns,
    PolicyAttackResult,
    PolicyAttackSetting,
    PolicyAuditResult,
    PolicyInfo,
    PolicyWorstCase,
    ScaleEstimate,
    SkippedPolicyAttack,
    relative_drop,
)

if TYPE_CHECKING:
    from modelsec.rl.policy import Policy

PRESETS = ("quick", "thorough")
NORMS = ("linf", "l2")
PRESET_ATTACKS: dict[str, dict[str, tuple[str, ...]]] = {
    "quick": {
        "discrete": ("random", "pgd", "critic", "timed"),
        "continuous": ("random", "mad", "pgd", "critic"),
    },
    "thorough": {
        "discrete": ("random", "fgsm", "pgd", "critic", "timed", "learned"),
        "continuous": ("random", "fgsm", "mad", "pgd", "critic", "learned"),
    },
}
"""The attacks of each preset, by action kind: ``quick`` runs the random baseline, PGD on the action distribution
(discrete) or MAD and PGD (continuous), the critic attack where the policy has a critic, and the strategically-timed
attack (discrete); ``thorough`` adds FGSM and the learned adversary (the slowest). MAD attacks continuous actions
only (for discrete ones PGD on the action distribution is its counterpart)."""

FAIL_DROP = 0.5
"""A worst case that removes at least this fraction of the clean return (significantly) fails the audit."""
WARN_DROP = 0.1
"""... and at least this fraction (significantly), a warning."""
DEFAULT_EPS = (0.05, 0.1, 0.2)


@dataclass(frozen=True)
class PolicyAuditConfig:
    """What ``modelsec audit-policy`` audits and how. ``policy`` and ``env`` are the command's ``--policy`` and
    ``--env``; the other fields follow the options convention of :mod:`modelsec.core.options`.

    Args:
        policy: the policy file (safetensors with its card, ``.pt2``, or a Stable-Baselines3 ``.zip``).
        env: the Gymnasium environment id (CartPole-v1, Acrobot-v1, MountainCar-v0, Pendulum-v1, ...).
        episodes: seeded episodes, clean and under each attack at each eps (the same seeds for all).
        eps: radii of the observation perturbations, in units of each observation dimension's standard deviation.
        norm: the norm of the perturbations (linf or l2).
        preset: the attacks to run (quick: random, pgd or mad, critic, timed; thorough: also fgsm and the learned
            adversary); --attacks overrides it.
        attacks: the attacks to run by name instead of the preset's (random, fgsm, pgd, mad, critic, timed,
            learned).
        seed: seeds the episodes, the attacks and the bootstrap; the same seed gives the same result.
        scale_episodes: clean episodes (with seeds of their own) from which each observation dimension's standard
            deviation, the unit of eps, is estimated.
        max_steps: cut every episode after this many steps (default: the environment's own time limit).
        trust_model: allow policy files that need unpickling (read with weights_only=True). Only for files you
            trust.
        render: render an attacked episode beside the clean one as an animated image for the report.
    """

    policy: str | None = None
    env: str = "CartPole-v1"
    episodes: Annotated[int, COUNT] = 50
    eps: tuple[float, ...] = DEFAULT_EPS
    norm: Annotated[str, OneOf(*NORMS)] = "linf"
    preset: Annotated[str, OneOf(*PRESETS)] = "quick"
    attacks: tuple[str, ...] | None = None
    seed: Annotated[int, SEED] = 0
    scale_episodes: Annotated[int, COUNT] = 10
    max_steps: Annotated[int | None, COUNT] = None
    trust_model: bool = False
    render: bool = True

    def __post_init__(self) -> None:
        if not self.env or not isinstance(self.env, str):
            raise ConfigError("give the Gymnasium environment id (--env), e.g. CartPole-v1")
        if isinstance(self.episodes, bool) or not isinstance(self.episodes, int) or self.episodes < 1:
            raise ConfigError(f"--episodes must be an integer >= 1, got {self.episodes!r}")
        if isinstance(self.scale_episodes, bool) or not isinstance(self.scale_episodes, int) or self.scale_episodes < 1:
            raise ConfigError(f"--scale-episodes must be an integer >= 1, got {self.scale_episodes!r}")
        eps = tuple(self.eps)
        if not eps:
            raise ConfigError("--eps needs at least one value")
        for e in eps:
            if isinstance(e, bool) or not isinstance(e, (int, float)) or not math.isfinite(e) or e <= 0:
                raise ConfigError(f"every --eps must be a finite number > 0 (standard deviations), got {e!r}")
        if len({eps_key(e) for e in eps}) != len(eps):
            raise ConfigError(f"--eps has repeated values: {','.join(f'{e:g}' for e in eps)}")
        object.__setattr__(self, "eps", tuple(sorted(float(e) for e in eps)))
        if self.norm not in NORMS:
            raise ConfigError(f"--norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.preset not in PRESETS:
            raise ConfigError(f"--preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if self.attacks is not None:
            names = tuple(self.attacks)
            if not names:
                raise ConfigError("--attacks is empty")
            if len(set(names)) != len(names):
                raise ConfigError(f"--attacks names an attack twice: {','.join(names)}")
            object.__setattr__(self, "attacks", names)
        check_seed(self.seed)
        if self.max_steps is not None and (isinstance(self.max_steps, bool) or self.max_steps < 1):
            raise ConfigError(f"--max-steps must be >= 1, got {self.max_steps!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["eps"] = list(self.eps)
        d["attacks"] = None if self.attacks is None else list(self.attacks)
        return d


@dataclass(frozen=True)
class EpisodeFrames:
    """The frames of one attacked episode and of the clean one of the same seed (``rgb_array`` images
    ``(H, W, 3)`` uint8; empty where the environment cannot render), with what the animation's record says about
    them."""

    seed: int
    attack: str
    eps: float
    clean: Sequence[np.ndarray]
    attacked: Sequence[np.ndarray]
    clean_return: float
    attacked_return: float


@dataclass
class PolicyAuditOutcome:
    """What :func:`audit_policy` returns: the result, the frames of the animated episode when asked for, and the
    policy audited."""

    result: PolicyAuditResult
    frames: EpisodeFrames | None = None
    policy: Any = None


def run_policy_audit(config: PolicyAuditConfig, progress: Progress | None = None) -> PolicyAuditResult:
    """Audit the policy file ``config.policy`` in ``config.env`` (see the module's docstring); no files written."""
    return audit_policy(config, progress=progress, frames=False).result


def audit_policy(
    config: PolicyAuditConfig,
    *,
    policy: Policy | None = None,
    scale: np.ndarray | None = None,
    progress: Progress | None = None,
    frames: bool = False,
) -> PolicyAuditOutcome:
    """:func:`run_policy_audit` with its options: ``policy`` (an object instead of ``config.policy``), ``scale``
    (the unit of eps given rather than estimated: a comparison uses the baseline's for every policy), and
    ``frames`` (render the attacked episode beside the clean one, for the report)."""
    from modelsec.rl.attacks import POLICY_ATTACKS
    from modelsec.rl.environments import episode_seeds, make_env
    from modelsec.rl.rollout import check_compatible, estimate_scale, run_episodes
    from modelsec.rl.threat import ObservationThreat

    progress = progress or NullProgress()
    started = time.perf_counter()
    created = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    if config.attacks is not None:
        for name in config.attacks:
            POLICY_ATTACKS.get(name)  # ConfigError naming the known ones
    env = make_env(config.env)
    try:
        space = env.observation_space
        if policy is None:
            policy, info = _load(config)
        else:
            info = _policy_info(policy, None, None)
        check_compatible(policy, env, config.env)
    finally:
        env.close()

    timings: dict[str, float] = {}
    scale_seeds = scale_episode_seeds(config.seed, config.scale_episodes)
    tick = time.perf_counter()
    if scale is None:
        scale_values = np.asarray(estimate_scale(policy, config.env, scale_seeds, max_steps=config.max_steps))
        with progress.task(f"{config.env} observation scale", total=1) as advance:
            scale_steps = sum(
                e.steps for e in run_episodes(policy, config.env, scale_seeds, max_steps=config.max_steps)
            )
            advance(1)
        source = "clean rollouts of the audited policy"
    else:
        scale_values = np.asarray(scale, dtype=np.float64).reshape(-1)
        scale_seeds, scale_steps, source = [], 0, "given (a comparison's baseline policy)"
    if scale_values.size != int(np.prod(policy.observation_shape)):
        raise ConfigError(f"the scale has {scale_values.size} values for observations of shape {space.shape}")
    timings["scale"] = time.perf_counter() - tick
    base_threat = ObservationThreat.for_space(space, scale_values, norm=config.norm, eps=0.0)
    scale_record = ScaleEstimate(
        std=[float(s) for s in scale_values],
        seeds=[int(s) for s in scale_seeds],
        episodes=len(scale_seeds),
        steps=int(scale_steps),
        low=[_finite(v) for v in base_threat.low],
        high=[_finite(v) for v in base_threat.high],
        source=source,
    )

    seeds = episode_seeds(config.seed, config.episodes)
    tick = time.perf_counter()
    clean_episodes = run_episodes(policy, config.env, seeds, progress=progress, max_steps=config.max_steps)
    timings["clean"] = time.perf_counter() - tick
    clean_returns = [float(e.total_reward) for e in clean_episodes]
    clean_mean, clean_ci = _mean_ci(clean_returns, config.seed, "clean")
    clean = EpisodeReturns(
        returns=clean_returns,
        steps=[int(e.steps) for e in clean_episodes],
        mean_return=clean_mean,
        ci=clean_ci,
        queries=[int(e.queries) for e in clean_episodes],
    )

    names = config.attacks or PRESET_ATTACKS[config.preset][policy.action.kind]
    planned: list[tuple[str, Any]] = []
    skipped: list[SkippedPolicyAttack] = []
    for name in names:
        if name not in POLICY_ATTACKS.names():  # a preset's attack this installation lacks
            skipped.append(SkippedPolicyAttack(name, "not available in this installation of modelsec"))
            continue
        attack = _make_attack(POLICY_ATTACKS.get(name), config)
        reason = attack.unsupported_reason(policy, base_threat)
        if reason is None:
            planned.append((name, attack))
        elif config.attacks is not None:
            raise ConfigError(f"--attacks {name}: {reason}")
        else:
            skipped.append(SkippedPolicyAttack(name, reason))
    settings = [PolicyAttackSetting(n, str(a.needs), _plain(_attack_params(a))) for n, a in planned]

    results: list[PolicyAttackResult] = []
    tick = time.perf_counter()
    for e in config.eps:
        threat = base_threat.with_eps(e)
        for name, attack in planned:
            t0 = time.perf_counter()
            if hasattr(attack, "prepare"):  # an attack trained against the policy first (the learned adversary)
                attack.prepare(policy, config.env, threat, progress=progress)
            episodes = run_episodes(
                policy, config.env, seeds, attack=attack, threat=threat, progress=progress, max_steps=config.max_steps
            )
            returns = [float(ep.total_reward) for ep in episodes]
            mean, ci = _mean_ci(returns, config.seed, "attack", name, eps_key(e))
            steps = [int(ep.steps) for ep in episodes]
            attacked = [int(ep.attacked_steps) for ep in episodes]
            queries = [int(ep.queries) for ep in episodes]
            changed = [int(ep.changed_actions) for ep in episodes if ep.changed_actions is not None]
            counted = len(changed) == len(episodes)
            results.append(
                PolicyAttackResult(
                    attack=name, eps=float(e), returns=returns, steps=steps, attacked_steps=attacked,
                    queries=queries, mean_return=mean, ci=ci,
                    attacked_fraction=sum(attacked) / max(1, sum(steps)),
                    mean_queries=float(np.mean(queries)), seconds=time.perf_counter() - t0,
                    changed_actions=changed if counted else None,
                    changed_fraction=sum(changed) / max(1, sum(steps)) if counted else None,
                )
            )  # fmt: skip
    timings["attacks"] = time.perf_counter() - tick

    worst = [w for e in config.eps if (w := worst_case(results, e, clean_mean, config.seed)) is not None]
    notes = attack_notes(results, config.eps)
    verdict = policy_verdict(clean, worst, results)
    result = PolicyAuditResult(
        run_id=_run_id(),
        created_at=created,
        policy=info,
        env_id=config.env,
        episodes=config.episodes,
        seeds=[int(s) for s in seeds],
        max_steps=config.max_steps,
        norm=config.norm,
        eps=list(config.eps),
        scale=scale_record,
        attacks=settings,
        clean=clean,
        results=results,
        worst_case=worst,
        verdict=verdict,
        seed=config.seed,
        settings=config.to_dict(),
        versions=_versions(),
        timings={},
        preset=None if config.attacks is not None else config.preset,
        skipped=skipped,
        notes=notes,
    )
    recorded = None
    if frames and results:
        tick = time.perf_counter()
        recorded = episode_frames(policy, result, dict(planned), base_threat)
        timings["render"] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - started
    result = replace(result, timings={k: round(v, 3) for k, v in timings.items()})
    return PolicyAuditOutcome(result=result, frames=recorded, policy=policy)


def scale_episode_seeds(seed: int, episodes: int) -> list[int]:
    """The seeds of the clean episodes an audit of ``seed`` estimates the observation scale from (never the
    audit's own episodes: a stream of their own)."""
    from modelsec.rl.environments import episode_seeds

    return episode_seeds(derived_seed(seed, "policy-scale"), episodes)


def observation_scale(
    policy: Policy, env_id: str, *, seed: int = 0, episodes: int = 10, max_steps: int | None = None
) -> np.ndarray:
    """The observation scale (each dimension's standard deviation over clean episodes of ``policy``) exactly as an
    audit with these settings estimates it (the defaults: ``modelsec audit-policy``'s): what ``harden-policy
    --scale-from`` hardens against, so that training and audit share one threat model."""
    from modelsec.rl.rollout import estimate_scale

    return np.asarray(estimate_scale(policy, env_id, scale_episode_seeds(seed, episodes), max_steps=max_steps))


def episode_frames(policy: Policy, result: PolicyAuditResult, attacks: dict[str, Any], threat: Any) -> EpisodeFrames:
    """The frames of the episode the report animates, rendered again (the same seed gives the same episode): at
    the largest eps, the strongest attack that is not random noise (else random noise), the episode it hurt most
    (no frames where the environment cannot render)."""
    from modelsec.rl.rollout import run_episode

    eps = max(result.eps)
    at = [r for r in result.results if eps_key(r.eps) == eps_key(eps)]
    real = [r for r in at if r.attack != RANDOM_ATTACK] or at
    chosen = min(real, key=lambda r: r.mean_return)
    drops = [c - a for c, a in zip(result.clean.returns, chosen.returns, strict=True)]
    index = int(np.argmax(drops))
    seed = result.seeds[index]
    try:
        clean = run_episode(policy, result.env_id, seed, record_frames=True, max_steps=result.max_steps)
        attacked = run_episode(policy, result.env_id, seed, attack=attacks[chosen.attack],
                               threat=threat.with_eps(eps), record_frames=True, max_steps=result.max_steps)  # fmt: skip
    except Exception:
        return EpisodeFrames(int(seed), chosen.attack, float(eps), [], [], 0.0, 0.0)
    return EpisodeFrames(
        seed=int(seed), attack=chosen.attack, eps=float(eps), clean=clean.frames or [],
        attacked=attacked.frames or [], clean_return=float(clean.total_reward),
        attacked_return=float(attacked.total_reward),
    )  # fmt: skip


# -- the pure parts: worst case, notes, verdict ------------------------------------------------------------------------


def _mean_ci(values: Sequence[float], seed: int, *labels: object) -> tuple[float, Any]:
    from modelsec.stats.bootstrap import mean_with_ci

    return mean_with_ci(values, seed=derived_seed(seed, "policy-audit", *labels))


def worst_case(
    results: Sequence[PolicyAttackResult], eps: float, clean_mean: float, seed: int
) -> PolicyWorstCase | None:
    """Per episode, the lowest return over every attack run at ``eps`` (ties: the first attack run that is not the
    random noise), its mean
    with a bootstrap CI, and the drop against ``clean_mean``; ``None`` when no attack ran at ``eps``."""
    at = [r for r in results if eps_key(r.eps) == eps_key(eps)]
    if not at:
        return None
    at.sort(key=lambda r: r.attack == RANDOM_ATTACK)  # ties: a real attack is named before the noise
    table = np.asarray([r.returns for r in at], dtype=np.float64)  # (attacks, episodes)
    which = table.argmin(axis=0)
    returns = [float(v) for v in table.min(axis=0)]
    mean, ci = _mean_ci(returns, seed, "worst-case", eps_key(eps))
    return PolicyWorstCase(
        float(eps), returns, [at[i].attack for i in which], mean, ci, relative_drop(clean_mean, mean)
    )


def attack_notes(results: Sequence[PolicyAttackResult], eps: Sequence[float]) -> list[str]:
    """What the numbers say about the attacks themselves: random noise that hurts more than every gradient attack
    at an eps (their gradients may mislead them, as masked gradients mislead evasion attacks)."""
    notes = []
    for e in eps:
        at = [r for r in results if eps_key(r.eps) == eps_key(e)]
        noise = next((r for r in at if r.attack == RANDOM_ATTACK), None)
        others = [r for r in at if r.attack != RANDOM_ATTACK]
        if noise is not None and others and all(noise.ci.high < r.ci.low for r in others):
            notes.append(
                f"at eps {e:g} random noise (mean return {noise.mean_return:.1f}) hurt the policy more than every "
                "other attack: their gradients may mislead them (the worst case includes the noise)"
            )
    return notes


def policy_verdict(
    clean: EpisodeReturns, worst: Sequence[PolicyWorstCase], results: Sequence[PolicyAttackResult]
) -> Verdict:
    """The rule: ``fail`` when at some eps the worst case removes at least :data:`FAIL_DROP` of the clean return,
    ``warning`` at least :data:`WARN_DROP`, ``ok`` otherwise; a drop counts only when the worst case's CI lies
    entirely below the clean CI (else the episodes cannot tell it from chance). The headline names the smallest eps
    at which the level is reached; the details give every eps and the random baseline's share."""
    details = []
    level, headline_case = "ok", None
    for w in sorted(worst, key=lambda w: w.eps):
        significant = w.ci.high < clean.ci.low
        drop = w.relative_drop
        noise = next((r for r in results if r.attack == RANDOM_ATTACK and eps_key(r.eps) == eps_key(w.eps)), None)
        noise_text = ""
        if noise is not None and (noise_drop := relative_drop(clean.mean_return, noise.mean_return)) is not None:
            noise_text = f"; random noise: {noise.mean_return:.1f} ({_lost(noise_drop)})"
        details.append(
            f"eps {w.eps:g}: worst case {w.mean_return:.1f} [{w.ci.low:.1f}, {w.ci.high:.1f}] "
            f"({_lost(drop)}{'' if significant else ', within chance'}){noise_text}"
        )
        if drop is None or not significant:
            continue
        this = "fail" if drop >= FAIL_DROP else ("warning" if drop >= WARN_DROP else "ok")
        if _rank(this) > _rank(level):
            level, headline_case = this, w
    if headline_case is None:
        largest = max(worst, key=lambda w: w.eps) if worst else None
        headline = (
            f"the mean return stays within {WARN_DROP:.0%} of clean ({clean.mean_return:.1f}) under every attack up "
            f"to eps {largest.eps:g}"
            if largest is not None
            else f"clean mean return {clean.mean_return:.1f}; no attack was run"
        )
        return Verdict("ok", headline, details)
    w = headline_case
    at = [r for r in results if eps_key(r.eps) == eps_key(w.eps)]
    strongest = min(at, key=lambda r: (r.mean_return, r.attack == RANDOM_ATTACK)).attack if at else "?"
    headline = (
        f"at eps {w.eps:g} the worst case over attacks (strongest: {strongest}) cuts the mean return from "
        f"{clean.mean_return:.1f} "
        f"to {w.mean_return:.1f} ({_lost(w.relative_drop)})"
    )
    return Verdict(level, headline, details)


def _lost(drop: float | None) -> str:
    if drop is None:
        return "clean return 0: no relative drop"
    return f"{drop:.0%} lost" if drop >= 0 else f"{-drop:.0%} gained"


def _rank(level: str) -> int:
    return {"ok": 0, "warning": 1, "fail": 2}[level]


# -- helpers -----------------------------------------------------------------------------------------------------------


def _load(config: PolicyAuditConfig) -> tuple[Policy, PolicyInfo]:
    from modelsec.rl.files import load_policy

    if config.policy is None:
        raise ConfigError("give the policy file to audit (--policy FILE)")
    path = Path(config.policy).expanduser()
    if not path.is_file():
        raise ConfigError(f"no policy file at {config.policy}")
    policy = load_policy(path, trust_model=config.trust_model)
    return policy, _policy_info(policy, str(path), _sha256(path))


def _policy_info(policy: Policy, path: str | None, sha256: str | None) -> PolicyInfo:
    parameters = sum(int(p.numel()) for p in policy.module.parameters())
    card = _plain(dict(policy.card))
    return PolicyInfo(
        path=path,
        sha256=sha256,
        format=str(card.get("format", "module")),
        observation_shape=[int(s) for s in policy.observation_shape],
        action=_plain(policy.action.to_dict()),
        has_critic=bool(policy.has_critic),
        parameters=parameters,
        card=card,
    )


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _plain(value: Any) -> Any:
    """``value`` as plain JSON (tuples as lists, numpy scalars as numbers, non-finite floats as strings,
    anything else as its text)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else str(float(value))
    if callable(getattr(value, "to_dict", None)):
        return _plain(value.to_dict())
    return str(value)


def _make_attack(cls: Any, config: PolicyAuditConfig) -> Any:
    """An attack with its default settings; one that trains against the policy in the environment (its
    constructor takes ``env_id``) also gets the environment and a seed derived from the audit's."""
    import inspect

    parameters = inspect.signature(cls).parameters
    if "env_id" in parameters:
        extra: dict[str, Any] = {"env_id": config.env}
        if "seed" in parameters:
            extra["seed"] = derived_seed(config.seed, "policy-attack-training", cls.name) % (2**31)
        return cls(**extra)
    return cls()


def _attack_params(attack: Any) -> dict[str, Any]:
    """The attack's settings as it reports them; for one that reports none, its plain settings (env_id, steps,
    seed)."""
    params = dict(attack.params()) if callable(getattr(attack, "params", None)) else {}
    if not params:
        params = {
            k: getattr(attack, k)
            for k in ("env_id", "steps", "seed", "director")
            if isinstance(getattr(attack, k, None), (int, str))
        }
    return params


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _run_id() -> str:
    from modelsec.store.runs import new_run_id

    return new_run_id()


def _versions() -> dict[str, str]:
    from importlib import metadata

    from modelsec.core.version import versions

    out = dict(versions())
    for package in ("gymnasium", "stable-baselines3"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    out.setdefault("python", platform.python_version())
    return out
