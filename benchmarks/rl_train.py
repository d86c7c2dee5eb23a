"""PPO and hardened PPO on CartPole-v1: training time, clean return, and return under attacks on the observations
(issue 15).

    PYTHONPATH=src python benchmarks/rl_train.py --seeds 0 1 2            # PPO's defaults: time and return
    PYTHONPATH=src python benchmarks/rl_train.py --seeds 0 --eps 0.5 1.0 --harden sa-ppo pgd-ppo \
        --settings '{"eps": 0.5}' --cache /tmp/rl-policies

Each policy is evaluated deterministically over ``--episodes`` seeded episodes, clean and under local white-box
attacks (10 L-inf PGD steps of eps/4 from a random start): ``pgd`` pushes probability away from the clean action
(Huang et al. 2017), ``critic`` minimises the policy's own value estimate (Zhang et al. 2020), ``push-left`` /
``push-right`` make the policy play one action wherever they can; ``worst`` is the lowest mean return of the
attacks. Eps is in units of the per-dimension standard deviation of the *baseline's* clean observations, so that
every policy faces the same absolute threat. The audit (``modelsec audit-policy``) runs the full attack set with
confidence intervals; this script is a quick check for tuning defaults. One torch thread.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modelsec.core.seeding import generator, spawned_seeds
from modelsec.rl.architectures import actor_critic_policy
from modelsec.rl.attacks.learned import LearnedAttack
from modelsec.rl.hardening import PolicyHardening, harden_policy
from modelsec.rl.policy import ActionSpec, Policy
from modelsec.rl.ppo import PPOConfig, new_env, train_ppo
from modelsec.rl.threat import ObservationThreat

ENV = "CartPole-v1"


def pgd_logits(
    policy: Policy, obs: torch.Tensor, threat: ObservationThreat, steps: int, g: torch.Generator
) -> torch.Tensor:
    """PGD pushing probability away from the clean action; the first point that changes the action is kept."""
    with torch.no_grad():
        clean_action = policy.module(obs).logits.argmax(dim=1)
    best = obs.clone()
    point = threat.random_point(obs, g)
    for _ in range(steps):
        point = point.detach().requires_grad_(True)
        logits = policy.module(point).logits
        loss = torch.nn.functional.cross_entropy(logits, clean_action, reduction="sum")
        (grad,) = torch.autograd.grad(loss, point)
        with torch.no_grad():
            flipped = logits.argmax(dim=1) != clean_action
            best = torch.where(flipped[:, None], point.detach(), best)
        point = threat.ascent_step(obs, point.detach(), grad, threat.eps / 4)
    with torch.no_grad():
        flipped = policy.module(point).logits.argmax(dim=1) != clean_action
        unchanged = (best == obs).all(dim=1)
        best = torch.where((flipped & unchanged)[:, None], point, best)
    return best


def pgd_targeted(
    policy: Policy, obs: torch.Tensor, threat: ObservationThreat, steps: int, g: torch.Generator, target: int
) -> torch.Tensor:
    """PGD making the policy play ``target`` wherever it can (in CartPole: push the cart one way every step)."""
    want = torch.full((obs.shape[0],), target)
    point = threat.random_point(obs, g)
    for _ in range(steps):
        point = point.detach().requires_grad_(True)
        loss = -torch.nn.functional.cross_entropy(policy.module(point).logits, want, reduction="sum")
        (grad,) = torch.autograd.grad(loss, point)
        point = threat.ascent_step(obs, point.detach(), grad, threat.eps / 4)
    return point


def pgd_critic(
    policy: Policy, obs: torch.Tensor, threat: ObservationThreat, steps: int, g: torch.Generator
) -> torch.Tensor:
    """PGD minimising the policy's own value estimate (the critic attack of Zhang et al. 2020)."""
    point = threat.random_point(obs, g)
    for _ in range(steps):
        point = point.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(-policy.module(point).value.sum(), point)
        point = threat.ascent_step(obs, point.detach(), grad, threat.eps / 4)
    return point


ATTACKS: dict[str, Callable[..., torch.Tensor]] = {
    "pgd": pgd_logits,
    "critic": pgd_critic,
    "push-left": lambda *a: pgd_targeted(*a, target=0),
    "push-right": lambda *a: pgd_targeted(*a, target=1),
}


def evaluate(
    policy: Policy, seeds: list[int], threat: ObservationThreat | None, steps: int = 10, attack: str = "pgd"
) -> tuple[np.ndarray, np.ndarray]:
    """Returns and all clean observations of deterministic episodes run in lock-step."""
    envs = [new_env(ENV) for _ in seeds]
    obs = [env.reset(seed=s)[0] for env, s in zip(envs, seeds, strict=True)]
    live = np.ones(len(seeds), dtype=bool)
    returns = np.zeros(len(seeds))
    seen: list[np.ndarray] = []
    g = generator(12345)
    while live.any():
        index = np.flatnonzero(live)
        batch = torch.as_tensor(np.stack([obs[i] for i in index]), dtype=torch.float32)
        seen.append(batch.numpy())
        if threat is not None:
            batch = ATTACKS[attack](policy, batch, threat, steps, g)
        with torch.no_grad():
            actions = policy.module(batch).logits.argmax(dim=1)
        for i, a in zip(index, actions.tolist(), strict=True):
            obs[i], r, term, trunc, _ = envs[i].step(int(a))
            returns[i] += r
            if term or trunc:
                live[i] = False
    return returns, np.concatenate(seen)


def report(
    name: str,
    policy: Policy,
    seeds: list[int],
    base: ObservationThreat,
    eps: list[float],
    attacks: list[str],
    learned_steps: int = 0,
) -> dict[str, Any]:
    clean, _ = evaluate(policy, seeds, None)
    row: dict[str, Any] = {"policy": name, "clean": float(clean.mean())}
    for e in eps:
        means = {a: float(evaluate(policy, seeds, base.with_eps(e), attack=a)[0].mean()) for a in attacks}
        if learned_steps:
            attack = LearnedAttack(steps=learned_steps, seed=0)
            attack.prepare(policy, ENV, base.with_eps(e))
            ATTACKS["learned"] = lambda p, obs, threat, steps, g, a=attack: a.perturb(p, obs, threat)[0]
            means["learned"] = float(evaluate(policy, seeds, base.with_eps(e), attack="learned")[0].mean())
        worst = min(means, key=means.__getitem__)
        row[f"eps={e}"] = {"worst": means[worst], "by": worst, **means}
    print(json.dumps(row), flush=True)
    return row


def cached(folder: Path | None, name: str, train: Callable[[], Policy]) -> Policy:
    """A trained policy, from ``folder`` when it holds one called ``name`` (a state dict read with
    ``weights_only``)."""
    path = None if folder is None else folder / f"{name}.pt"
    if path is not None and path.exists():
        policy = actor_critic_policy((4,), ActionSpec("discrete", n=2), seed=0)
        policy.module.load_state_dict(torch.load(path, weights_only=True))
        return policy
    policy = train()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(policy.module.state_dict(), path)
    return policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--eps", type=float, nargs="*", default=[])
    parser.add_argument("--attacks", nargs="+", choices=sorted(ATTACKS), default=sorted(ATTACKS))
    parser.add_argument("--harden", choices=["sa-ppo", "pgd-ppo"], nargs="*", default=[])
    parser.add_argument(
        "--settings", type=json.loads, nargs="*", default=[{}], help="PolicyHardening settings as JSON, one a run"
    )
    parser.add_argument("--learned", type=int, default=0, help="also the learned adversary, trained this many steps")
    parser.add_argument("--cache", type=Path, default=None, help="keep trained policies here (state dicts)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    eval_seeds = spawned_seeds(2026, args.episodes)
    for seed in args.seeds:
        start = time.perf_counter()
        baseline = cached(args.cache, f"ppo-{seed}", lambda s=seed: train_ppo(ENV, PPOConfig(), seed=s).policy)
        seconds = time.perf_counter() - start
        clean, observations = evaluate(baseline, eval_seeds, None)
        print(
            json.dumps({"seed": seed, "ppo_seconds": round(seconds, 1), "mean": clean.mean(), "min": clean.min()}),
            flush=True,
        )
        if not args.eps:
            continue
        space = new_env(ENV).observation_space
        base = ObservationThreat.for_space(space, observations.std(axis=0), norm="linf", eps=0.0)
        print(json.dumps({"scale": list(base.scale)}), flush=True)
        report("ppo", baseline, eval_seeds, base, args.eps, args.attacks, args.learned)
        for method in args.harden:
            for settings in args.settings:
                config = PolicyHardening.from_dict({"method": method, **settings})
                name = f"{method}-{seed}-" + hashlib.sha256(json.dumps(config.to_dict()).encode()).hexdigest()[:8]
                start = time.perf_counter()
                hardened = cached(args.cache, name, lambda c=config, s=seed: harden_policy(ENV, c, seed=s).policy)
                took = round(time.perf_counter() - start, 1)
                print(json.dumps({"method": method, "settings": settings, "seconds": took}), flush=True)
                report(method, hardened, eval_seeds, base, args.eps, args.attacks, args.learned)


if __name__ == "__main__":
    main()
