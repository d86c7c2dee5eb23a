"""PPO and hardened PPO on CartPole-v1: training time, clean return, and return under a PGD attack on the
observations (issue 15).

    PYTHONPATH=src python benchmarks/rl_train.py --seeds 0 1 2            # PPO's defaults: time and return
    PYTHONPATH=src python benchmarks/rl_train.py --harden sa-ppo --seeds 0 --eps 0.1 0.2 0.3

Each policy is evaluated deterministically over ``--episodes`` seeded episodes, clean and under a local PGD attack
on the logits (Huang et al. 2017: ``--attack-steps`` L-inf steps from a random start pushing probability away from
the clean action; the perturbation in units of the per-dimension standard deviation of the *baseline's* clean
observations, so that every policy faces the same absolute threat). The audit (``modelsec audit-policy``) runs the
full attack set; this script is a quick check while tuning defaults. One torch thread.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

from modelsec.core.seeding import generator, spawned_seeds
from modelsec.rl.hardening import PolicyHardening, harden_policy
from modelsec.rl.policy import Policy
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


def evaluate(
    policy: Policy, seeds: list[int], threat: ObservationThreat | None, steps: int = 10
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
            batch = pgd_logits(policy, batch, threat, steps, g)
        with torch.no_grad():
            actions = policy.module(batch).logits.argmax(dim=1)
        for i, a in zip(index, actions.tolist(), strict=True):
            obs[i], r, term, trunc, _ = envs[i].step(int(a))
            returns[i] += r
            if term or trunc:
                live[i] = False
    return returns, np.concatenate(seen)


def report(name: str, policy: Policy, seeds: list[int], base: ObservationThreat, eps: list[float]) -> dict[str, Any]:
    clean, _ = evaluate(policy, seeds, None)
    row: dict[str, Any] = {"policy": name, "clean": float(clean.mean())}
    for e in eps:
        attacked, _ = evaluate(policy, seeds, base.with_eps(e))
        row[f"pgd@{e}"] = float(attacked.mean())
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--eps", type=float, nargs="*", default=[])
    parser.add_argument("--harden", choices=["sa-ppo", "pgd-ppo"], nargs="*", default=[])
    parser.add_argument("--settings", type=json.loads, default={}, help="PolicyHardening settings as JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)
    eval_seeds = spawned_seeds(2026, args.episodes)
    for seed in args.seeds:
        start = time.perf_counter()
        baseline = train_ppo(ENV, PPOConfig(), seed=seed).policy
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
        report("ppo", baseline, eval_seeds, base, args.eps)
        for method in args.harden:
            config = PolicyHardening.from_dict({"method": method, **args.settings})
            start = time.perf_counter()
            hardened = harden_policy(ENV, config, seed=seed).policy
            print(json.dumps({"method": method, "seconds": round(time.perf_counter() - start, 1)}), flush=True)
            report(method, hardened, eval_seeds, base, args.eps)


if __name__ == "__main__":
    main()
