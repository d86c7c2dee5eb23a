"""Attacked and hardened CartPole-v1 policies: issue 15's done-when, measured with modelsec's real policy attacks.

1. The baseline: PPO with :class:`~modelsec.rl.ppo.PPOConfig`'s defaults (seed ``--seed``), its clean return over
   ``--episodes`` seeded episodes (target 500), and the observations' scale (the per-dimension standard deviation,
   :func:`~modelsec.rl.rollout.estimate_scale`) over clean episodes on seeds separate from the evaluation's.
2. The hardened policy: SA-PPO (Zhang et al. 2020; :class:`~modelsec.rl.hardening.PolicyHardening`'s defaults,
   eps 1.0) given the baseline's scale, so that it is hardened against the threat measured here. Both trainings
   are timed; the policies are kept in ``benchmarks/models/`` (not committed) with their training seconds and
   reused (``--retrain`` to redo).
3. For both policies and every eps (L-inf, in units of the baseline's scale, the same absolute threat for both):
   the mean return with its 95% percentile-bootstrap interval over the same episode seeds under ``random``
   (uniform noise in the ball), ``fgsm`` and ``pgd`` (Huang et al. 2017; PGD with Madry et al.'s iterations),
   ``critic`` (minimise the policy's own value, Zhang et al. 2020), ``timed`` (Lin et al. 2017: the inner PGD on at
   most 25% of the steps, where the action preference ``c(s) = max pi - min pi`` reaches the episode's running 75th
   percentile) and ``timed-fixed`` (the same, with Lin et al.'s fixed threshold: the 75th percentile of ``c(s)``
   over the policy's clean steps on the scale's seeds), and ``worst``: per episode the lowest return of the
   attacks (random excluded). The timed attacks' attacked-step fraction, and for ``pgd`` and the timed attacks
   the fraction of steps whose action the attack changed. ``learned``: the learned adversary (ATLA, Zhang et al.
   2021, in its director form for discrete actions, Sun et al. 2022's PA-AD) trained ``--learned`` steps against
   each policy at each eps (``--learned 0`` leaves it out), included in ``worst``.
   Pendulum-v1 (continuous actions; ``--pendulum-eps``, '' to skip): a PPO policy (:data:`PENDULUM_PPO`) under
   ``random``, ``fgsm``, ``pgd``, ``mad`` (Zhang et al. 2020) and ``critic``, eps in units of its own scale.
4. Issue 15's checks, printed met / missed (nothing here is tuned to pass them):
   a. at some eps ``random`` keeps >= 90% of the clean return while the strongest attack (the lowest mean of a
      single attack) removes >= 80% of it (baseline);
   b. ``timed`` does >= 80% of the full attack's damage (damage = clean - attacked mean; full: ``pgd``, the same
      inner attack on every step) while attacking <= 25% of the steps, at an eps where the full attack does damage
      (>= 10% of the clean return); for both timed variants;
   c. at the eps of (a), the hardened policy keeps >= 2x the baseline's return under its own strongest attack,
      and its clean return is within 10% of the baseline's.

Each episode is deterministic (the policy's argmax action) and seeded, attacks are seeded per episode, one torch
thread per process; ``--workers N`` runs the (policy, eps, attack) cells in N processes (the results do not depend
on N). Prints Markdown; writes ``results/policies.json`` (``--quick``: ``results/policies-quick.json``).

    PYTHONPATH=src .venv/bin/python benchmarks/policies.py                 # the measurement (98 min, 2 busy cores)
    PYTHONPATH=src .venv/bin/python benchmarks/policies.py --quick         # smoke run (a couple of minutes)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modelsec.core.seeding import derived_seed
from modelsec.rl.attacks import POLICY_ATTACKS
from modelsec.rl.attacks.base import PolicyAttack
from modelsec.rl.attacks.learned import ADVERSARY_PPO
from modelsec.rl.attacks.timed import TimedAttack, action_preference
from modelsec.rl.environments import episode_seeds, make_env
from modelsec.rl.files import load_policy, save_policy
from modelsec.rl.hardening import PolicyHardening, harden_policy
from modelsec.rl.policy import Policy
from modelsec.rl.ppo import PPOConfig, train_ppo
from modelsec.rl.rollout import estimate_scale, run_episodes
from modelsec.rl.threat import ObservationThreat
from modelsec.stats.bootstrap import mean_with_ci

HERE = Path(__file__).resolve().parent
ENV = "CartPole-v1"
SINGLE = ("random", "fgsm", "pgd", "critic", "timed", "timed-fixed")
"""The attacks run on every (policy, eps); ``worst`` is taken over all but ``random``."""
TIMED = ("timed", "timed-fixed")
PENDULUM = "Pendulum-v1"
PENDULUM_ATTACKS = ("random", "fgsm", "pgd", "mad", "critic")
PENDULUM_PPO = PPOConfig(
    total_steps=300_000, n_envs=8, n_steps=256, gamma=0.9, gae_lambda=0.95, epochs=10, minibatch_size=256,
    learning_rate=1e-3, log_std_init=-0.5,
)  # fmt: skip
"""PPO for Pendulum-v1 (the discount and GAE of RL Zoo's Pendulum settings; 48 s on one idle core, mean return
about -170 over 20 episodes, where a random policy gets about -1200)."""


def fmt(x: float) -> str:
    return f"{x:.1f}"


# -- training (cached) -----------------------------------------------------------------------------------------


def cached_policy(path: Path, train: Any, retrain: bool) -> tuple[Policy, float]:
    """The policy saved at ``path`` with its recorded training seconds, or trained now (and saved)."""
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists() and not retrain:
        return load_policy(path), float(json.loads(meta.read_text())["seconds"])
    start = time.perf_counter()
    policy = train()
    seconds = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    save_policy(policy, path)
    meta.write_text(json.dumps({"seconds": seconds}) + "\n")
    return policy, seconds


def clean_preferences(policy: Policy, seeds: list[int], max_steps: int | None) -> np.ndarray:
    """Lin et al.'s ``c(s)`` at every step of clean deterministic episodes of ``policy``."""
    env = make_env(ENV)
    out: list[float] = []
    try:
        for seed in seeds:
            observation, _ = env.reset(seed=int(seed))
            steps = 0
            while max_steps is None or steps < max_steps:
                obs = torch.as_tensor(np.asarray(observation, dtype=np.float32)).reshape(1, -1)
                out.append(float(action_preference(policy, obs)[0]))
                observation, _, terminated, truncated, _ = env.step(int(policy.actions(obs)[0].item()))
                steps += 1
                if terminated or truncated:
                    break
    finally:
        env.close()
    return np.asarray(out)


# -- one cell: a policy under one attack at one eps ------------------------------------------------------------


@dataclass
class Cell:
    policy: str
    eps: float
    attack: str  # "clean" or a name of SINGLE or PENDULUM_ATTACKS, or "learned"
    settings: dict[str, Any]
    env: str = ENV


def attack_names(learned: int) -> tuple[str, ...]:
    """The CartPole attacks: :data:`SINGLE`, and ``learned`` when it has a training budget."""
    return (*SINGLE, "learned") if learned else SINGLE


def build_attack(name: str, settings: dict[str, Any]) -> PolicyAttack | None:
    if name == "clean":
        return None
    if name == "timed-fixed":
        return TimedAttack(**settings)
    return POLICY_ATTACKS.get(name)(**settings)


def run_cell(cell: Cell, policy: Policy, threat: ObservationThreat, seeds: list[int], max_steps: int | None) -> dict:
    torch.set_num_threads(1)
    attack = build_attack(cell.attack, cell.settings)
    start = time.perf_counter()
    if cell.attack == "learned":
        assert attack is not None
        attack.prepare(policy, cell.env, threat)  # type: ignore[attr-defined]
    train_seconds = time.perf_counter() - start
    episodes = run_episodes(
        policy, cell.env, seeds, attack=attack, threat=None if attack is None else threat, max_steps=max_steps
    )
    return {
        "policy": cell.policy,
        "eps": cell.eps,
        "attack": cell.attack,
        "settings": cell.settings,
        "returns": [e.total_reward for e in episodes],
        "steps": [e.steps for e in episodes],
        "attacked_steps": [e.attacked_steps for e in episodes],
        "changed_actions": [e.changed_actions for e in episodes],
        "queries": [e.queries for e in episodes],
        "seconds": time.perf_counter() - start,
        **({"adversary_training_seconds": train_seconds} if cell.attack == "learned" else {}),
    }


_WORKER: dict[str, Any] = {}


def _init_worker(
    policies: dict[str, Policy], bases: dict[str, ObservationThreat], seeds: list[int], max_steps: int | None
) -> None:
    torch.set_num_threads(1)
    _WORKER.update(policies=policies, bases=bases, seeds=seeds, max_steps=max_steps)


def _work(cell: Cell) -> dict:
    w = _WORKER
    threat = w["bases"][cell.env].with_eps(cell.eps)
    return run_cell(cell, w["policies"][cell.policy], threat, w["seeds"], w["max_steps"])


def changed_fraction(r: dict[str, Any]) -> float | None:
    """The steps whose action the attack changed, over all steps (discrete policies; ``None`` otherwise)."""
    if any(c is None for c in r["changed_actions"]):
        return None
    return float(np.sum(r["changed_actions"]) / np.sum(r["steps"]))


# -- summaries and checks --------------------------------------------------------------------------------------


def summary(returns: list[float], seed: int) -> dict[str, Any]:
    mean, ci = mean_with_ci(returns, seed=seed)
    return {"mean": mean, "ci": [ci.low, ci.high]}


def checks(results: dict[str, Any], eps_list: list[float]) -> dict[str, Any]:
    base = results["policies"]["baseline"]
    hard = results["policies"].get("sa-ppo")
    clean = base["clean"]["mean"]
    out: dict[str, Any] = {"a": [], "b": [], "c": []}
    for e in eps_list:
        row = base["eps"][str(e)]
        singles = {a: row[a]["mean"] for a in row if a not in ("random", "worst")}
        strongest = min(singles, key=singles.__getitem__)
        random_kept = row["random"]["mean"] / clean
        removed = 1 - singles[strongest] / clean
        out["a"].append(
            {
                "eps": e,
                "random_kept": random_kept,
                "strongest": strongest,
                "strongest_removed": removed,
                "met": bool(random_kept >= 0.9 and removed >= 0.8),
            }
        )
        full_damage = clean - row["pgd"]["mean"]
        for t in TIMED:
            damage = clean - row[t]["mean"]
            fraction = row[t]["attacked_fraction"]
            ratio = damage / full_damage if full_damage > 0 else None
            out["b"].append(
                {
                    "eps": e,
                    "attack": t,
                    "damage": damage,
                    "full_damage": full_damage,
                    "ratio": ratio,
                    "attacked_fraction": fraction,
                    "met": bool(full_damage >= 0.1 * clean and ratio is not None and ratio >= 0.8 and fraction <= 0.25),
                }
            )
        if hard is not None:
            hrow = hard["eps"][str(e)]
            hsingles = {a: hrow[a]["mean"] for a in hrow if a not in ("random", "worst")}
            hstrongest = min(hsingles, key=hsingles.__getitem__)
            ratio = hsingles[hstrongest] / singles[strongest] if singles[strongest] > 0 else float("inf")
            clean_kept = hard["clean"]["mean"] / clean
            out["c"].append(
                {
                    "eps": e,
                    "baseline_strongest": [strongest, singles[strongest]],
                    "hardened_strongest": [hstrongest, hsingles[hstrongest]],
                    "ratio": ratio,
                    "hardened_clean_kept": clean_kept,
                    "a_met_here": out["a"][-1]["met"],
                    "met": bool(ratio >= 2 and clean_kept >= 0.9),
                }
            )
    a_eps = [r["eps"] for r in out["a"] if r["met"]]
    out["a_met"] = bool(a_eps)
    out["b_met"] = {t: any(r["met"] for r in out["b"] if r["attack"] == t) for t in TIMED}
    out["c_met"] = any(r["met"] and r["eps"] in a_eps for r in out["c"])
    return out


def markdown(results: dict[str, Any], eps_list: list[float]) -> str:
    lines: list[str] = []
    names = [*results["attacks"], "worst"]
    changed = ("pgd", *TIMED, *(("learned",) if "learned" in results["attacks"] else ()))
    for key, p in results["policies"].items():
        lines.append(
            f"**{key}** (training {p['training_seconds']:.0f} s): clean return {fmt(p['clean']['mean'])} "
            f"[{fmt(p['clean']['ci'][0])}, {fmt(p['clean']['ci'][1])}], timed-fixed threshold "
            f"{p['timed_threshold']:.4f}\n"
        )
        lines.append(
            "| eps | "
            + " | ".join(names)
            + " | timed attacked | timed-fixed attacked | "
            + " | ".join(f"{a} changed" for a in changed)
            + " |"
        )
        lines.append("| --- " * (len(names) + 3 + len(changed)) + "|")
        for e in eps_list:
            row = p["eps"][str(e)]
            cells = [f"{fmt(row[a]['mean'])} [{fmt(row[a]['ci'][0])}, {fmt(row[a]['ci'][1])}]" for a in names]
            frac = [f"{100 * row[t]['attacked_fraction']:.1f}%" for t in TIMED]
            frac += [f"{100 * row[a]['changed_fraction']:.1f}%" for a in changed]
            lines.append(f"| {e:g} | " + " | ".join(cells + frac) + " |")
        lines.append("")
    c = results["checks"]
    lines.append("Checks (baseline unless said otherwise):\n")
    for r in c["a"]:
        lines.append(
            f"- (a) eps {r['eps']:g}: random keeps {100 * r['random_kept']:.1f}% (>= 90%), {r['strongest']} removes "
            f"{100 * r['strongest_removed']:.1f}% (>= 80%): {'met' if r['met'] else 'missed'}"
        )
    for r in c["b"]:
        ratio = "n/a" if r["ratio"] is None else f"{100 * r['ratio']:.1f}%"
        lines.append(
            f"- (b) eps {r['eps']:g} {r['attack']}: damage {fmt(r['damage'])} of pgd's {fmt(r['full_damage'])} "
            f"({ratio}, >= 80%), attacking {100 * r['attacked_fraction']:.1f}% of the steps (<= 25%): "
            f"{'met' if r['met'] else 'missed'}"
        )
    for r in c["c"]:
        lines.append(
            f"- (c) eps {r['eps']:g}: hardened {fmt(r['hardened_strongest'][1])} under {r['hardened_strongest'][0]} "
            f"vs baseline {fmt(r['baseline_strongest'][1])} under {r['baseline_strongest'][0]} ({r['ratio']:.2f}x, "
            f">= 2x), hardened clean {100 * r['hardened_clean_kept']:.1f}% of the baseline's (>= 90%): "
            f"{'met' if r['met'] else 'missed'}{'' if r['a_met_here'] else ' (not an eps where (a) holds)'}"
        )
    lines.append(
        f"\n(a) {'MET' if c['a_met'] else 'MISSED'}; (b) timed {'MET' if c['b_met']['timed'] else 'MISSED'}, "
        f"timed-fixed {'MET' if c['b_met']['timed-fixed'] else 'MISSED'}; (c) {'MET' if c['c_met'] else 'MISSED'} "
        "(at an eps where (a) holds)"
    )
    if "pendulum" in results:
        pd = results["pendulum"]
        lines.append(
            f"\n**{PENDULUM}** (PPO, training {pd['training_seconds']:.0f} s): clean return {fmt(pd['clean']['mean'])} "
            f"[{fmt(pd['clean']['ci'][0])}, {fmt(pd['clean']['ci'][1])}], scale {np.round(pd['scale'], 4).tolist()}\n"
        )
        pnames = [*PENDULUM_ATTACKS, "worst"]
        lines.append("| eps | " + " | ".join(pnames) + " |")
        lines.append("| --- " * (len(pnames) + 1) + "|")
        for e in pd["eps_list"]:
            row = pd["eps"][str(e)]
            cells = [f"{fmt(row[a]['mean'])} [{fmt(row[a]['ci'][0])}, {fmt(row[a]['ci'][1])}]" for a in pnames]
            lines.append(f"| {e:g} | " + " | ".join(cells) + " |")
    if "learned" in results["attacks"]:
        lines.append(f"\nlearned adversary: {results['learned_steps']} steps of PPO against each policy at each eps;")
        for key, p in results["policies"].items():
            trained = [f"{p['eps'][str(e)]['learned']['adversary_training_seconds']:.0f}" for e in eps_list]
            lines.append(f"- {key}: trained in {', '.join(trained)} s (eps {', '.join(f'{e:g}' for e in eps_list)})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: short training, 5 episodes of <= 100 steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--scale-episodes", type=int, default=20, help="clean episodes for the scale and c(s) quantile")
    p.add_argument("--eps", default="0.25,0.5,1.0,1.5")
    p.add_argument("--threshold-quantile", type=float, default=0.75, help="timed-fixed: quantile of clean c(s)")
    p.add_argument(
        "--learned", type=int, default=ADVERSARY_PPO.total_steps, metavar="STEPS",
        help="the learned adversary's training steps (0: leave it out)",
    )  # fmt: skip
    p.add_argument("--workers", type=int, default=1, help="processes for the attack cells")
    p.add_argument("--pendulum-eps", default="0.25,0.5,1.0", help="Pendulum-v1's eps ('' to skip Pendulum)")
    p.add_argument("--retrain", action="store_true")
    p.add_argument("--models-dir", type=Path, default=HERE / "models")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    eps_list = [float(x) for x in args.eps.split(",")]
    pendulum_eps = [float(x) for x in args.pendulum_eps.split(",") if x.strip()]
    max_steps: int | None = None
    ppo = PPOConfig()
    pendulum_ppo = PENDULUM_PPO
    tag = ""
    if args.quick:
        args.episodes = min(args.episodes, 5)
        args.scale_episodes = min(args.scale_episodes, 3)
        max_steps = 100
        ppo = PPOConfig(total_steps=8 * 32 * 20)
        pendulum_ppo = replace(PENDULUM_PPO, total_steps=8 * 256 * 4)
        args.learned = min(args.learned, 2048)
        tag = "-quick"
    out = args.out or HERE / "results" / f"policies{tag}.json"
    eval_seeds = episode_seeds(derived_seed(args.seed, "policies-eval"), args.episodes)
    scale_seeds = episode_seeds(derived_seed(args.seed, "policies-scale"), args.scale_episodes)
    started = time.perf_counter()

    baseline, base_seconds = cached_policy(
        args.models_dir / f"policies-ppo-seed{args.seed}{tag}.safetensors",
        lambda: train_ppo(ENV, ppo, seed=args.seed).policy,
        args.retrain,
    )
    scale = estimate_scale(baseline, ENV, scale_seeds, max_steps=max_steps)
    print(f"baseline trained in {base_seconds:.0f} s; scale {np.round(scale, 4).tolist()}", flush=True)
    hardening = PolicyHardening(scale=tuple(float(s) for s in scale), ppo=ppo)
    hardened, hard_seconds = cached_policy(
        args.models_dir / f"policies-sappo-seed{args.seed}{tag}.safetensors",
        lambda: harden_policy(ENV, hardening, seed=args.seed).policy,
        args.retrain,
    )
    print(f"sa-ppo trained in {hard_seconds:.0f} s", flush=True)
    space = make_env(ENV).observation_space
    bases = {ENV: ObservationThreat.for_space(space, scale, norm="linf", eps=0.0)}
    policies = {"baseline": baseline, "sa-ppo": hardened}
    seconds = {"baseline": base_seconds, "sa-ppo": hard_seconds}
    thresholds = {
        k: float(np.quantile(clean_preferences(pol, scale_seeds, max_steps), args.threshold_quantile))
        for k, pol in policies.items()
    }
    if pendulum_eps:
        pendulum, pendulum_seconds = cached_policy(
            args.models_dir / f"policies-pendulum-ppo-seed{args.seed}{tag}.safetensors",
            lambda: train_ppo(PENDULUM, pendulum_ppo, seed=args.seed).policy,
            args.retrain,
        )
        pendulum_scale = estimate_scale(pendulum, PENDULUM, scale_seeds, max_steps=max_steps)
        print(f"pendulum PPO trained in {pendulum_seconds:.0f} s; scale {np.round(pendulum_scale, 4).tolist()}")
        space = make_env(PENDULUM).observation_space
        bases[PENDULUM] = ObservationThreat.for_space(space, pendulum_scale, norm="linf", eps=0.0)

    cells: list[Cell] = []
    for k in policies:
        cells.append(Cell(k, 0.0, "clean", {}))
        for e in eps_list:
            for a in attack_names(args.learned):
                settings = {"threshold": thresholds[k]} if a == "timed-fixed" else {}
                if a == "learned":
                    settings = {"env_id": ENV, "steps": args.learned, "seed": 0}
                cells.append(Cell(k, e, a, settings))
    all_policies = dict(policies)
    if pendulum_eps:
        all_policies["pendulum"] = pendulum
        cells.append(Cell("pendulum", 0.0, "clean", {}, PENDULUM))
        cells += [Cell("pendulum", e, a, {}, PENDULUM) for e in pendulum_eps for a in PENDULUM_ATTACKS]
    # the slowest cells first, so that the workers finish together
    cells.sort(key=lambda c: (c.attack != "learned", c.policy != "sa-ppo", -c.eps))
    if args.workers > 1:
        with ProcessPoolExecutor(
            args.workers, initializer=_init_worker, initargs=(all_policies, bases, eval_seeds, max_steps)
        ) as pool:
            done = []
            for r in pool.map(_work, cells):
                done.append(r)
                print(f"  {r['policy']} eps {r['eps']:g} {r['attack']}: {np.mean(r['returns']):.1f}", flush=True)
    else:
        done = []
        for c in cells:
            r = run_cell(c, all_policies[c.policy], bases[c.env].with_eps(c.eps), eval_seeds, max_steps)
            done.append(r)
            print(f"  {r['policy']} eps {r['eps']:g} {r['attack']}: {np.mean(r['returns']):.1f}", flush=True)

    def ci_seed(*parts: Any) -> int:
        return derived_seed(args.seed, "policies-ci", *parts)

    results: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["benchmarks/policies.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
            "torch_threads": 1,
            "workers": args.workers,
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "env": ENV,
        "quick": args.quick,
        "max_steps": max_steps,
        "episodes": args.episodes,
        "eval_seeds": eval_seeds,
        "scale_seeds": scale_seeds,
        "scale": scale.tolist(),
        "threat": {"norm": "linf", "eps_unit": "the baseline's per-dimension std over clean episodes"},
        "ppo": ppo.to_dict(),
        "hardening": hardening.to_dict(),
        "attacks": list(attack_names(args.learned)),
        "learned_steps": args.learned,
        "threshold_quantile": args.threshold_quantile,
        "policies": {},
    }
    by = {(r["policy"], r["eps"], r["attack"]): r for r in done}
    for k in policies:
        clean = by[(k, 0.0, "clean")]
        entry: dict[str, Any] = {
            "training_seconds": seconds[k],
            "clean": {**summary(clean["returns"], ci_seed(k, "clean")), "returns": clean["returns"]},
            "timed_threshold": thresholds[k],
            "eps": {},
        }
        for e in eps_list:
            row: dict[str, Any] = {}
            for a in attack_names(args.learned):
                r = by[(k, e, a)]
                row[a] = {
                    **({"adversary_training_seconds": r["adversary_training_seconds"]} if a == "learned" else {}),
                    **summary(r["returns"], ci_seed(k, e, a)),
                    "attacked_fraction": float(np.sum(r["attacked_steps"]) / np.sum(r["steps"])),
                    "changed_fraction": changed_fraction(r),
                    "changed_actions": r["changed_actions"],
                    "seconds": r["seconds"],
                    "settings": r["settings"],
                    "returns": r["returns"],
                    "attacked_steps": r["attacked_steps"],
                    "steps": r["steps"],
                }
            worst = np.min([row[a]["returns"] for a in attack_names(args.learned) if a != "random"], axis=0).tolist()
            row["worst"] = {**summary(worst, ci_seed(k, e, "worst")), "returns": worst}
            entry["eps"][str(e)] = row
        results["policies"][k] = entry
    if pendulum_eps:
        clean = by[("pendulum", 0.0, "clean")]
        pd: dict[str, Any] = {
            "ppo": pendulum_ppo.to_dict(),
            "training_seconds": pendulum_seconds,
            "scale": pendulum_scale.tolist(),
            "clean": {**summary(clean["returns"], ci_seed("pendulum", "clean")), "returns": clean["returns"]},
            "eps_list": pendulum_eps,
            "eps": {},
        }
        for e in pendulum_eps:
            row = {}
            for a in PENDULUM_ATTACKS:
                r = by[("pendulum", e, a)]
                row[a] = {**summary(r["returns"], ci_seed("pendulum", e, a)), "returns": r["returns"],
                          "seconds": r["seconds"], "queries": r["queries"]}  # fmt: skip
            worst = np.min([row[a]["returns"] for a in PENDULUM_ATTACKS if a != "random"], axis=0).tolist()
            row["worst"] = {**summary(worst, ci_seed("pendulum", e, "worst")), "returns": worst}
            pd["eps"][str(e)] = row
        results["pendulum"] = pd
    results["checks"] = checks(results, eps_list)
    results["seconds"] = time.perf_counter() - started
    text = markdown(results, eps_list)
    print()
    print(text)
    print(f"\n({results['seconds']:.0f} s in all, training included only when not cached)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
