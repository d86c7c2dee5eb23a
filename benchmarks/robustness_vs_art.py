"""modelsec's robustness presets against the Adversarial Robustness Toolbox (ART) on the same model and images.

Two pairs, on each model (the bundled standard Fashion-MNIST small-cnn, and the PGD adversarially trained one
written by ``benchmarks/train_pgd_at.py``), L-inf at eps 0.1, on the first N images of a seed-0 permutation of the
10,000 Fashion-MNIST test images:

- modelsec ``quick`` (APGD on the margin loss, 12 steps, restarts where cheap; then FGSM) vs ART
  ``ProjectedGradientDescent`` (20 steps of 2.5 * eps / 20, one random start, batch 128). Target: at most 0.5x
  ART's wall time, robust accuracy no higher.
- modelsec ``standard`` (APGD-CE, APGD-T, DeepFool, Square, FGSM; each on what the earlier ones left) vs ART
  ``AutoAttack`` with its default attack list (APGD-CE and APGD-DLR with 5 restarts each, DeepFool, Square with 5
  restarts). Target: no slower, robust accuracy no higher.

Both sides get the true labels and the same weights (two copies of the module, loaded from the same file), run
in the same process with the same thread count, and their adversarial examples are re-classified here with the
same code: robust accuracy = mean(argmax(model(x_adv)) == y), where an example outside the eps-ball or the input
bounds counts as not broken. Wall times include everything each library does inside its call (input checks,
re-classification), not model loading.

    .venv/bin/pip install -r benchmarks/requirements.txt
    .venv/bin/python benchmarks/train_pgd_at.py
    .venv/bin/python benchmarks/robustness_vs_art.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import common  # benchmarks/common.py, beside this script
import numpy as np
import torch
from common import stopwatch
from torch import nn

import modelsec
from modelsec.audits.presets import PRESETS, build_attacks
from modelsec.audits.robustness import evaluate_robustness
from modelsec.core.seeding import generator
from modelsec.data import load_splits
from modelsec.models.base import eval_mode
from modelsec.models.loading import LoadedModel, load_model
from modelsec.results.audit import eps_key

HERE = Path(__file__).resolve().parent
MODELS: dict[str, Path | None] = {
    "standard": None,  # the bundled reference model
    "pgd-at": HERE / "models" / "fmnist-pgd-at.safetensors",
}
STANDARD_ATTACKS = ("apgd", "apgd-t", "deepfool", "square")
QUICK_TARGET_RATIO = 0.5
STANDARD_TARGET_RATIO = 1.0
PGD_STEPS = 20
PEER_BATCH = 128
AUTOATTACK_BUDGET_S = 25 * 60
AUTOATTACK_FALLBACK_SAMPLES = 200
AUTOATTACK_PROBE_SAMPLES = 100


def import_art() -> Any:
    return common.import_art("attacks.evasion", "estimators.classification")


@torch.no_grad()
def verified_robust(
    module: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, eps: float
) -> tuple[np.ndarray, dict[str, Any]]:
    """Per-sample robust flags from re-classifying ``x_adv``; examples outside the eps-ball (with a float32
    tolerance) or the [0, 1] bounds do not count as breaking a sample."""
    x_adv = torch.as_tensor(x_adv, dtype=torch.float32)
    with eval_mode(module):
        pred = torch.cat([module(x_adv[i : i + 500]).argmax(1) for i in range(0, len(x_adv), 500)])
    dist = (x_adv - x).flatten(1).abs().amax(1)
    valid = (dist <= eps + 1e-5) & (x_adv.flatten(1).amin(1) >= -1e-6) & (x_adv.flatten(1).amax(1) <= 1 + 1e-6)
    robust = (pred == y) | ~valid
    checks = {"max_linf": float(dist.max()), "invalid_examples": int((~valid).sum())}
    return robust.numpy(), checks


def clean_accuracy(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad(), eval_mode(module):
        return float((module(x).argmax(1) == y).float().mean())


def run_modelsec(
    loaded: LoadedModel, x: torch.Tensor, y: torch.Tensor, *, preset: str, eps: float, seed: int
) -> dict[str, Any]:
    clf = loaded.classifier
    attacks, skipped = build_attacks(PRESETS[preset], clf, "linf")
    with stopwatch() as t:
        run = evaluate_robustness(clf, x, y, attacks=attacks, eps=[eps], norm="linf", generator=generator(seed))
    robust, checks = verified_robust(clf.module, x, y, run.x_adv[eps], eps)
    return {
        "seconds": t["seconds"],
        "robust_accuracy": float(robust.mean()),
        "robust_accuracy_reported": run.result.robust_accuracy[eps_key(eps)],
        "checks": checks,
        "attacks": [
            {"attack": e.attack, "params": e.params, "seconds": e.seconds, "robust_accuracy": e.robust_accuracy}
            for e in run.result.results
        ],
        "skipped": [s.attack for s in skipped],
    }


def art_classifier(art: Any, module: nn.Module) -> Any:
    return art.estimators.classification.PyTorchClassifier(
        model=module,
        loss=nn.CrossEntropyLoss(),
        input_shape=(1, 28, 28),
        nb_classes=10,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )


def run_art(
    art: Any, module: nn.Module, x: torch.Tensor, y: torch.Tensor, *, make_attack: Callable[[Any], Any], eps: float
) -> dict[str, Any]:
    estimator = art_classifier(art, module)
    attack = make_attack(estimator)
    x_np, y_np = x.numpy(), y.numpy()
    np.random.seed(0)  # ART draws random starts from numpy's global generator
    with stopwatch() as t:
        x_adv = attack.generate(x=x_np, y=y_np)  # true labels: without them ART attacks its own predictions
    robust, checks = verified_robust(module, x, y, torch.from_numpy(x_adv), eps)
    out: dict[str, Any] = {"seconds": t["seconds"], "robust_accuracy": float(robust.mean()), "checks": checks}
    best = getattr(attack, "best_attacks", None)
    if best is not None and len(best):
        names = [type(a).__name__ + (f"({a.loss_type})" if hasattr(a, "loss_type") else "") for a in attack.attacks]
        out["broken_by"] = {names[i]: int((best == i).sum()) for i in range(len(names))}
    return out


def art_pgd(art: Any, eps: float) -> Callable[[Any], Any]:
    def make(estimator: Any) -> Any:
        return art.attacks.evasion.ProjectedGradientDescent(
            estimator,
            norm=np.inf,
            eps=eps,
            eps_step=2.5 * eps / PGD_STEPS,
            max_iter=PGD_STEPS,
            num_random_init=1,
            batch_size=PEER_BATCH,
            verbose=False,
        )

    return make


def art_autoattack(art: Any, eps: float, eps_step: float) -> Callable[[Any], Any]:
    def make(estimator: Any) -> Any:
        return art.attacks.evasion.AutoAttack(estimator, norm=np.inf, eps=eps, eps_step=eps_step, batch_size=PEER_BATCH)

    return make


def pair_entry(
    label: str, peer_label: str, ours: dict[str, Any], peer: dict[str, Any], target_ratio: float, n: int
) -> dict[str, Any]:
    ratio = ours["seconds"] / peer["seconds"]
    return {
        "pair": label,
        "peer": peer_label,
        "samples": n,
        "modelsec": ours,
        "art": peer,
        "ratio": ratio,
        "target": f"time ratio <= {target_ratio:g} and robust accuracy <= ART's",
        "time_target_met": ratio <= target_ratio,
        "accuracy_target_met": ours["robust_accuracy"] <= peer["robust_accuracy"],
    }


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median time, plus every run's seconds."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    chosen = dict(ordered[len(ordered) // 2])
    chosen["seconds_all"] = [r["seconds"] for r in runs]
    return chosen


def bench_model(name: str, args: argparse.Namespace, art: Any, x_all: torch.Tensor, y_all: torch.Tensor) -> dict:
    path = MODELS[name]
    if path is not None and not path.exists():
        raise SystemExit(f"{path} does not exist; run benchmarks/train_pgd_at.py first")
    ours_model = load_model(path)
    peer_module = load_model(path).classifier.module  # an independent copy of the same weights
    x, y = x_all[: args.samples], y_all[: args.samples]
    entry: dict[str, Any] = {
        "path": ours_model.info.path,
        "sha256": ours_model.info.sha256,
        "clean_accuracy": clean_accuracy(peer_module, x, y),
        "pairs": [],
    }
    print(f"\n== {name}: {ours_model.info.path}, clean accuracy {entry['clean_accuracy']:.3f} on {len(x)}", flush=True)

    # warm-up: thread pools and oneDNN kernels, so neither side pays them inside its timing
    for module in (ours_model.classifier.module, peer_module):
        xw = x[:PEER_BATCH].clone().requires_grad_(True)
        nn.functional.cross_entropy(module(xw), y[:PEER_BATCH]).backward()

    if "quick" in args.pairs:
        ours_runs, peer_runs = [], []
        for rep in range(args.repeats):  # alternate the order so that drift in machine load hits both sides
            sides = ["ours", "peer"] if rep % 2 == 0 else ["peer", "ours"]
            for side in sides:
                if side == "ours":
                    ours_runs.append(run_modelsec(ours_model, x, y, preset="quick", eps=args.eps, seed=rep))
                else:
                    peer_runs.append(run_art(art, peer_module, x, y, make_attack=art_pgd(art, args.eps), eps=args.eps))
            print(
                f"  quick rep {rep + 1}: modelsec {ours_runs[-1]['seconds']:.2f} s "
                f"({ours_runs[-1]['robust_accuracy']:.3f}), ART PGD-20 {peer_runs[-1]['seconds']:.2f} s "
                f"({peer_runs[-1]['robust_accuracy']:.3f})",
                flush=True,
            )
        entry["pairs"].append(
            pair_entry(
                "quick",
                f"ART ProjectedGradientDescent ({PGD_STEPS} steps)",
                median_run(ours_runs),
                median_run(peer_runs),
                QUICK_TARGET_RATIO,
                len(x),
            )
        )

    if "standard" in args.pairs and not args.skip_autoattack:
        n_aa = args.samples
        probe = None
        make_aa = art_autoattack(art, args.eps, args.autoattack_eps_step)
        previous_n = previous_art_samples(args, name, entry["sha256"]) if args.reuse_art else None
        if previous_n is not None:
            n_aa = previous_n
        elif args.autoattack_samples == "auto":
            k = min(AUTOATTACK_PROBE_SAMPLES, args.samples)
            probe = run_art(art, peer_module, x[:k], y[:k], make_attack=make_aa, eps=args.eps)
            estimate = probe["seconds"] * args.samples / k
            probe.update({"samples": k, "estimated_seconds_for_all": estimate})
            print(f"  AutoAttack probe on {k}: {probe['seconds']:.1f} s -> about {estimate / 60:.1f} min", flush=True)
            if estimate > AUTOATTACK_BUDGET_S:
                n_aa = min(AUTOATTACK_FALLBACK_SAMPLES, args.samples)
        else:
            n_aa = min(int(args.autoattack_samples), args.samples)
        xs, ys = x[:n_aa], y[:n_aa]
        peer = reusable_art(args, name, entry["sha256"], n_aa) if args.reuse_art else None
        if peer is None:
            peer = run_art(art, peer_module, xs, ys, make_attack=make_aa, eps=args.eps)
        print(f"  ART AutoAttack on {n_aa}: {peer['seconds']:.1f} s ({peer['robust_accuracy']:.3f})", flush=True)
        ours = run_modelsec(ours_model, xs, ys, preset="standard", eps=args.eps, seed=0)
        print(f"  modelsec standard on {n_aa}: {ours['seconds']:.1f} s ({ours['robust_accuracy']:.3f})", flush=True)
        pair = pair_entry(
            "standard",
            f"ART AutoAttack (default attacks, eps_step {args.autoattack_eps_step:g})",
            ours,
            peer,
            STANDARD_TARGET_RATIO,
            n_aa,
        )
        if probe is not None:
            pair["autoattack_probe"] = probe
        if n_aa < args.samples:
            pair["note"] = (
                f"ART AutoAttack on {args.samples} images was estimated to take more than "
                f"{AUTOATTACK_BUDGET_S // 60} minutes, so both sides ran on the first {n_aa}"
            )
        entry["pairs"].append(pair)
    return entry


def _previous_standard_pair(args: argparse.Namespace, name: str, sha256: str) -> dict[str, Any] | None:
    if not args.out.exists():
        return None
    model = json.loads(args.out.read_text(encoding="utf-8")).get("models", {}).get(name, {})
    if model.get("sha256") != sha256:
        return None
    pair = next((p for p in model.get("pairs", []) if p["pair"] == "standard"), None)
    if pair is None or pair.get("config", model.get("config", {})).get("eps") != args.eps:
        return None
    return pair


def previous_art_samples(args: argparse.Namespace, name: str, sha256: str) -> int | None:
    """The image count of the stored ART AutoAttack run of this model (same weights, same eps), if any."""
    pair = _previous_standard_pair(args, name, sha256)
    return None if pair is None else int(pair["samples"])


def reusable_art(args: argparse.Namespace, name: str, sha256: str, n: int) -> dict[str, Any] | None:
    """ART AutoAttack's stored result on the same weights, eps and images (ART's side does not depend on
    modelsec's presets), marked with the date it was measured; None when there is none to reuse."""
    pair = _previous_standard_pair(args, name, sha256)
    if pair is None or int(pair["samples"]) != n:
        return None
    art = dict(pair["art"])
    art.setdefault("measured", pair.get("date", "unknown"))
    art["reused"] = True
    return art


def merge_pairs(previous_entry: dict[str, Any], entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The pairs just measured, plus the previous run's pairs of the same model that were not rerun now, provided
    the model file is the same (same sha256); older entries without their own date inherit their model's."""
    if not previous_entry or previous_entry.get("sha256") != entry["sha256"]:
        return entry["pairs"]
    rerun = {p["pair"] for p in entry["pairs"]}
    kept = []
    for pair in previous_entry.get("pairs", []):
        if pair["pair"] not in rerun:
            for key in ("date", "config", "versions"):
                if key in previous_entry:
                    pair.setdefault(key, previous_entry[key])
            kept.append(pair)
    order = {"quick": 0, "standard": 1}
    return sorted(kept + entry["pairs"], key=lambda p: order.get(p["pair"], 2))


def markdown_table(results: dict[str, Any]) -> str:
    lines = [
        "| model | date | modelsec preset | ART attack | images | modelsec s | ART s | ratio | target ratio "
        "| modelsec robust acc | ART robust acc | time target | accuracy target |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for name, model in results["models"].items():
        for p in model["pairs"]:
            target = QUICK_TARGET_RATIO if p["pair"] == "quick" else STANDARD_TARGET_RATIO
            date = p.get("date", model.get("date", "?"))[:10]
            lines.append(
                f"| {name} | {date} | {p['pair']} | {p['peer']} | {p['samples']} | {p['modelsec']['seconds']:.1f} "
                f"| {p['art']['seconds']:.1f} | {p['ratio']:.2f}x | <= {target:g}x "
                f"| {100 * p['modelsec']['robust_accuracy']:.1f}% | {100 * p['art']['robust_accuracy']:.1f}% "
                f"| {'met' if p['time_target_met'] else 'missed'} "
                f"| {'met' if p['accuracy_target_met'] else 'missed'} |"
            )
    return "\n".join(lines)


def registered_attacks() -> list[str]:
    from modelsec.attacks.evasion import EVASION_ATTACKS

    return list(EVASION_ATTACKS.names())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="standard,pgd-at", help=f"comma-separated, from {', '.join(MODELS)}")
    p.add_argument("--pairs", default="quick,standard", help="comma-separated: quick, standard")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--repeats", type=int, default=3, help="timed runs of the quick pair (the median is reported)")
    p.add_argument("--skip-autoattack", action="store_true", help="only the quick pair")
    p.add_argument(
        "--autoattack-samples",
        default="auto",
        help="images for the standard pair; 'auto' probes ART AutoAttack on 100 images and falls back to 200 "
        "when all of --samples would take ART more than 25 minutes",
    )
    p.add_argument("--autoattack-eps-step", type=float, default=None, help="ART AutoAttack eps_step (default eps)")
    p.add_argument(
        "--reuse-art",
        action="store_true",
        help="standard pair: reuse ART AutoAttack's stored result for the same weights, eps and images instead of "
        "rerunning it (hours on a robust model); only modelsec's side is measured again, under today's load",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=HERE / "results" / "robustness_vs_art.json")
    p.add_argument(
        "--fresh",
        action="store_true",
        help="overwrite --out instead of merging into it (by default the models and pairs not run now are kept, "
        "each with the date it was measured)",
    )
    args = p.parse_args(argv)
    args.pairs = [s.strip() for s in args.pairs.split(",") if s.strip()]
    if args.autoattack_eps_step is None:
        args.autoattack_eps_step = args.eps  # ART's default eps_step is 0.1, which is eps here
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in names:
        if m not in MODELS:
            p.error(f"unknown model {m!r}; known: {', '.join(MODELS)}")
    run_standard = "standard" in args.pairs and not args.skip_autoattack
    missing = [a for a in STANDARD_ATTACKS if a not in registered_attacks()]
    if run_standard and missing:
        p.error(f"the standard preset needs attacks that are not registered yet: {', '.join(missing)}")

    torch.set_num_threads(args.threads)
    art = import_art()
    splits = load_splits("fashion-mnist", seed=0)
    pick = np.random.default_rng(0).permutation(len(splits.nonmembers))[: args.samples]
    x_all = torch.from_numpy(splits.nonmembers.x[pick])
    y_all = torch.from_numpy(splits.nonmembers.y[pick])

    results: dict[str, Any] = {
        "benchmark": "robustness_vs_art",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {
            "eps": args.eps,
            "norm": "linf",
            "samples": args.samples,
            "images": "first N of np.random.default_rng(0).permutation of the 10,000 Fashion-MNIST test images",
            "quick_repeats": args.repeats,
            "art_pgd": {"max_iter": PGD_STEPS, "eps_step": 2.5 * args.eps / PGD_STEPS, "num_random_init": 1},
            "art_autoattack": {"eps_step": args.autoattack_eps_step, "attacks": "ART defaults"},
            "peer_batch_size": PEER_BATCH,
            "torch_threads": torch.get_num_threads(),
        },
        "versions": {
            "modelsec": modelsec.__version__,
            "adversarial-robustness-toolbox": art.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count()},
        "models": {},
    }
    previous: dict[str, Any] = {}
    if args.out.exists() and not args.fresh:
        # merge: keep the other models' entries and, for the models run now, the pairs not run now
        previous = json.loads(args.out.read_text(encoding="utf-8")).get("models", {})
        results["models"] = {k: v for k, v in previous.items() if k not in names}
    for name in names:
        entry = bench_model(name, args, art, x_all, y_all)
        for pair in entry["pairs"]:  # every pair records when and how it was measured
            pair.update(date=results["date"], config=results["config"], versions=results["versions"])
        entry["pairs"] = merge_pairs(previous.get(name, {}), entry)
        entry["date"] = results["date"]  # the model's latest measurement; each pair keeps its own
        results["models"][name] = entry
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")  # partial results survive
    table = markdown_table(results)
    print("\n" + table)
    print(f"\nwrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
