"""modelsec's ``standard`` preset against ART's AutoAttack on every model of the benchmark zoo (issue 16).

Issue 16's target, per model: ``standard`` at most 0.2x ART ``AutoAttack``'s wall time with robust accuracy no
higher. ART's side is the configuration ``robustness_vs_art.py`` uses (``art_autoattack``: ART's default attack
list, APGD-CE and APGD-DLR with 5 random starts of 100 steps each, DeepFool, Square with 5 restarts of 5,000
queries; untargeted; ``eps_step`` = eps; batch 128). modelsec's side is what an audit runs for ``--preset
standard`` (Croce & Hein 2020's chain: APGD-CE, APGD-DLR, APGD-T, DeepFool, Square, FGSM): the pre-attack sanity
checks and their remedies (``modelsec.audits.sanity``: on a model without input gradients, Square and HopSkipJump
first), then the chain through ``evaluate_robustness`` (each attack on what the earlier ones left, the
minimum-norm pass included); its seconds include the pre-checks, not the post-attack checks (which only report).

Threat model: white-box, untargeted, L-inf, eps 0.1 on Fashion-MNIST and on digits (``zoo.EPS``), inputs in [0, 1].
Per model, both sides attack the same N test images (the first N of the seed-0 permutation of the model's test
split that ``zoo_quick_vs_art.py`` uses), with the true labels, on two copies of the same weights, in one process
with the same torch thread count (1 by default). Both sides' adversarial examples are re-classified here with the
same code (``robustness_vs_art.verified_robust``: an example outside the eps-ball or [0, 1] does not count as
broken), and each robust accuracy gets a 95% Clopper-Pearson interval.

ART's AutoAttack takes hours on a robust Fashion-MNIST model (75 min for 200 images of the PGD-trained CNN in
``robustness_vs_art.py``), and its time is far from linear in the images (Square's 5 x 5,000 iterations cost
about the same for 20 images as for 200), so the image count is chosen per run: ``--samples`` for the models
named, and the results of earlier runs of other models are kept in ``--out`` (``--fresh`` starts over), so that
the robust Fashion-MNIST models can run on fewer images than the others; each model's entry records its image
count. With ``--repeats`` above 1 the rounds alternate which side runs first, and the median-time round of each
side is reported. ART's progress bars are turned off (``verbose=False`` on each of its attacks; nothing else
changes).

Models that are not built are skipped (``zoo.py --build`` builds them).

    .venv/bin/pip install -r benchmarks/requirements.txt
    PYTHONPATH=src .venv/bin/python benchmarks/zoo.py --build all --threads 1
    PYTHONPATH=src .venv/bin/python benchmarks/zoo_standard_vs_art.py --models digits --samples 200
    PYTHONPATH=src .venv/bin/python benchmarks/zoo_standard_vs_art.py --models fmnist-mlp,fmnist-cnn --samples 100
    PYTHONPATH=src .venv/bin/python benchmarks/zoo_standard_vs_art.py --quick   # smoke: 2 digits models, 20 images
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import robustness_vs_art as rva  # benchmarks/robustness_vs_art.py, beside this script
import torch
import zoo  # benchmarks/zoo.py
import zoo_quick_vs_art as zq  # benchmarks/zoo_quick_vs_art.py: the same images, CIs and round bookkeeping
from common import stopwatch
from torch import nn

import modelsec
from modelsec.attacks.base import EvasionAttack
from modelsec.audits.presets import build_attacks, preset_specs
from modelsec.audits.robustness import RobustnessRun, evaluate_robustness
from modelsec.audits.sanity import apply_remedies, pre_checks
from modelsec.core.seeding import generator
from modelsec.results.audit import AttackCost

HERE = Path(__file__).resolve().parent
TARGET_RATIO = 0.2
QUICK_MODELS = "digits-mlp,digits-pgd-at"


def pick_images(model: zoo.ZooModel, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` test images of the seed-0 permutation (``zoo_quick_vs_art.py``'s images)."""
    x_all, y_all = model.test_set()
    pick = torch.from_numpy(np.random.default_rng(0).permutation(len(y_all))[:n])
    return x_all[pick], y_all[pick]


def cost_dict(c: AttackCost | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {
        "attacked": c.attacked,
        "forward": c.forward,
        "backward": c.backward,
        "floor_forward": c.floor_forward,
        "floor_backward": c.floor_backward,
    }


def run_preset(
    model: zoo.ZooModel,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    preset: str,
    seed: int,
    swap: dict[type, type[EvasionAttack]] | None = None,
    cut_after: str | None = None,
) -> tuple[dict[str, Any], RobustnessRun]:
    """The audit's robustness step for ``preset``, timed end to end: the pre-attack checks and the plan they
    order, then the chain at the model's eps. ``swap`` replaces the attacks of a class by a subclass built from
    the same parameters, and ``cut_after`` ends the plan after the first attack of that name (``zoo_cost.py``
    records APGD-T's targets that way: the attacks before it, hence what reaches it, are the full chain's); the
    timed benchmark uses neither."""
    clf = model.classifier()
    with stopwatch() as t:
        with stopwatch() as t_pre:
            flags, remedies = pre_checks(clf, x, y)
            specs = apply_remedies(list(preset_specs(preset)), remedies)
        if cut_after is not None:
            names = [spec.attack for spec in specs]
            specs = specs[: names.index(cut_after) + 1] if cut_after in names else specs
        attacks, skipped = build_attacks(specs, clf, "linf", preset=preset)
        if swap:
            attacks = [swap[type(a)](**a.params()) if type(a) in swap else a for a in attacks]
        run = evaluate_robustness(clf, x, y, attacks=attacks, eps=[model.eps], norm="linf", generator=generator(seed))
    robust, checks = rva.verified_robust(clf.module, x, y, run.x_adv[model.eps], model.eps)
    out = {
        "seconds": t["seconds"],
        "pre_check_seconds": t_pre["seconds"],
        **zq.with_ci(robust),
        "checks": checks,
        "flags": [f.check for f in flags],
        "remedies": remedies.notes,
        "attacks": [
            {
                "attack": e.attack,
                "seconds": e.seconds,
                "robust_accuracy": e.robust_accuracy,
                "cost": cost_dict(e.cost),
            }
            for e in run.result.results
        ],
        "min_norm_pass": [
            {"attack": m.attack, "seconds": m.seconds, "cost": cost_dict(m.cost)}
            for m in run.result.min_norm
            if m.cost is not None
        ],
        "skipped": [s.attack for s in skipped],
    }
    return out, run


def art_estimator(art: Any, module: nn.Module, input_shape: tuple[int, ...]) -> Any:
    return art.estimators.classification.PyTorchClassifier(
        model=module,
        loss=nn.CrossEntropyLoss(),
        input_shape=input_shape,
        nb_classes=10,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )


def run_art_autoattack(art: Any, module: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> dict[str, Any]:
    """ART's AutoAttack as ``robustness_vs_art.py`` builds it (``eps_step`` = eps), on the true labels. ART's
    Square attack takes images only, so a model on flat features (the digits MLP) is shown to ART as a flattening
    layer before it, on the features laid out as a 1 x side x side image: the same inputs, ball and model."""
    flat = x.dim() == 2
    if flat:
        side = math.isqrt(x.shape[1])
        if side * side != x.shape[1]:
            raise SystemExit(f"{x.shape[1]} features do not make a square image for ART's Square attack")
        module_art: nn.Module = nn.Sequential(nn.Flatten(), module).eval()
        x_art = x.reshape(len(x), 1, side, side)
    else:
        module_art, x_art = module, x
    attack = rva.art_autoattack(art, eps, eps)(art_estimator(art, module_art, tuple(x_art.shape[1:])))
    for a in attack.attacks:
        a.set_params(verbose=False)
    np.random.seed(0)  # ART draws its random starts from numpy's global generator
    with stopwatch() as t:
        x_adv = attack.generate(x=x_art.numpy(), y=y.numpy())
    x_adv_t = torch.from_numpy(x_adv).reshape(x.shape)
    robust, checks = rva.verified_robust(module, x, y, x_adv_t, eps)
    out: dict[str, Any] = {"seconds": t["seconds"], **zq.with_ci(robust), "checks": checks, "samples": len(y)}
    best = attack.best_attacks
    if len(best):
        names = [type(a).__name__ + (f"({a.loss_type})" if hasattr(a, "loss_type") else "") for a in attack.attacks]
        out["broken_by"] = {names[i]: int((best == i).sum()) for i in range(len(names))}
    return out


def warm_up(modules: list[nn.Module], x: torch.Tensor, y: torch.Tensor) -> None:
    """Thread pools and kernels, outside every timing."""
    for module in modules:
        with torch.enable_grad():
            xw = x[:128].clone().requires_grad_(True)
            module.eval()
            nn.functional.cross_entropy(module(xw), y[:128]).backward()
            module.zero_grad(set_to_none=True)


def bench(name: str, art: Any, args: argparse.Namespace) -> dict[str, Any]:
    model = zoo.build(name, models_dir=args.models_dir)
    peer = zoo.build(name, models_dir=args.models_dir).module  # an independent copy of the same weights
    x, y = pick_images(model, args.samples)
    clean = zoo.accuracy(peer, x, y)
    print(f"\n== {name} ({model.entry.kind}, eps {model.eps}): clean {clean:.3f} on {len(y)} images", flush=True)
    warm_up([model.module, peer], x, y)
    ours_runs: list[dict[str, Any]] = []
    peer_runs: list[dict[str, Any]] = []
    for rep in range(args.repeats):
        for side in ("peer", "ours") if rep % 2 == 0 else ("ours", "peer"):
            if side == "ours":
                ours_runs.append(run_preset(model, x, y, preset="standard", seed=rep)[0])
            else:
                peer_runs.append(run_art_autoattack(art, peer, x, y, model.eps))
        print(
            f"  round {rep + 1}: modelsec standard {ours_runs[-1]['seconds']:.1f} s "
            f"({ours_runs[-1]['robust_accuracy']:.3f}), ART AutoAttack {peer_runs[-1]['seconds']:.1f} s "
            f"({peer_runs[-1]['robust_accuracy']:.3f})",
            flush=True,
        )
    ours, theirs = zq.median_run(ours_runs), zq.median_run(peer_runs)
    ratio = ours["seconds"] / theirs["seconds"]
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": model.entry.data,
        "kind": model.entry.kind,
        "eps": model.eps,
        "samples": len(y),
        "clean_accuracy": clean,
        "model_clean_accuracy": model.card["clean_accuracy"],
        "modelsec": ours,
        "art": theirs,
        "ratio": ratio,
        "time_target_met": ratio <= TARGET_RATIO,
        "accuracy_target_met": ours["robust_accuracy"] <= theirs["robust_accuracy"],
        "accuracy_target_met_every_round": max(ours["robust_accuracy_all"]) <= min(theirs["robust_accuracy_all"]),
        "load_average": os.getloadavg(),
    }


def markdown_table(results: dict[str, Any]) -> str:
    return zq.markdown_table(results, seconds_digits=1, ratio_digits=3)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="all", help="zoo names, or 'all', 'digits', 'fmnist' (comma-separated)")
    p.add_argument("--samples", type=int, default=200, help="test images per model, at most (digits has 449)")
    p.add_argument("--repeats", type=int, default=1, help="timed rounds per model (default 1: AutoAttack is slow)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--models-dir", type=Path, default=zoo.MODELS_DIR)
    p.add_argument("--out", type=Path, default=HERE / "results" / "zoo_standard.json")
    p.add_argument(
        "--merge",
        type=Path,
        action="append",
        default=[],
        help="fold the model entries of this result file (another process's --out) into --out; repeatable; "
        "with --models '' nothing is run",
    )
    p.add_argument(
        "--fresh", action="store_true", help="overwrite --out (by default the models not run now keep their entries)"
    )
    p.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_MODELS}, 20 images, /tmp output")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.samples, args.repeats = QUICK_MODELS, 20, 1
        if args.out == p.get_default("out"):
            args.out = Path("/tmp/zoo_standard-smoke.json")
    names = zoo.select(args.models)
    missing = [n for n in names if zoo.cached_card(zoo.ZOO[n], args.models_dir) is None]
    if missing:
        print(f"not built, skipped: {', '.join(missing)} (build them with zoo.py --build)")
        names = [n for n in names if n not in missing]

    torch.set_num_threads(args.threads)
    art = rva.import_art()
    results: dict[str, Any] = {
        "benchmark": "zoo_standard_vs_art",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {
            "pair": "modelsec standard (pre-checks, remedies, chain) vs ART AutoAttack (default attacks, eps_step eps)",
            "norm": "linf",
            "eps": zoo.EPS,
            "samples": "per model (each entry's samples; --samples of the run that measured it)",
            "images": "first N of np.random.default_rng(0).permutation of the model's test split",
            "repeats": args.repeats,
            "peer_batch_size": rva.PEER_BATCH,
            "torch_threads": torch.get_num_threads(),
            "target": f"time ratio <= {TARGET_RATIO:g} and robust accuracy <= ART's, on every model",
        },
        "versions": {
            "modelsec": modelsec.__version__,
            "adversarial-robustness-toolbox": art.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "not_built": missing,
        "models": {},
    }
    if args.out.exists() and not args.fresh:  # keep the other models' entries, each with its own date and images
        previous = json.loads(args.out.read_text(encoding="utf-8"))
        results["models"] = {k: v for k, v in previous.get("models", {}).items() if k not in names}
        results["runs"] = previous.get("runs", [])
    for other in args.merge:
        merged = json.loads(other.read_text(encoding="utf-8"))
        results["models"].update({k: v for k, v in merged.get("models", {}).items() if k not in names})
        known = {r["date"] for r in results.get("runs", [])}
        results.setdefault("runs", []).extend(r for r in merged.get("runs", []) if r["date"] not in known)
    results["models"] = {k: results["models"][k] for k in zoo.ZOO if k in results["models"]}  # the zoo's order
    results["summary"] = zq.summary(results)
    if names:
        results.setdefault("runs", []).append(
            {"date": results["date"], "models": names, "samples": args.samples, "load_average_start": os.getloadavg()}
        )
    for name in names:
        results["models"][name] = bench(name, art, args)
        results["runs"][-1]["load_average_end"] = os.getloadavg()
        results["models"] = {k: results["models"][k] for k in zoo.ZOO if k in results["models"]}  # the zoo's order
        results["summary"] = zq.summary(results)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")  # partial results survive
    if not names:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print("\n" + markdown_table(results))
    zq.print_summary(results, TARGET_RATIO, ratio_digits=3)
    for r in results.get("runs", []):
        print(f"run {r['date']}: load average at start {r['load_average_start']}, end {r.get('load_average_end')}")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
