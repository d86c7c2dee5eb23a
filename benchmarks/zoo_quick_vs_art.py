"""modelsec's ``quick`` preset against ART's 20-step PGD on every model of the benchmark zoo (issue 16).

Issue 16's target, per model: ``quick`` at most 0.5x ART ``ProjectedGradientDescent``'s wall time (20 steps of
2.5 * eps / 20, one random start, batch 128, as ``robustness_vs_art.py``) with robust accuracy no higher. The
benchmark reports the worst ratio over the zoo, not the best, and whether robust accuracy is no higher on every
model.

Threat model: white-box, untargeted, L-inf, eps 0.1 on Fashion-MNIST and on digits (``zoo.EPS``), inputs in [0, 1].
Per model, both sides attack the same N test images (the first N of a seed-0 permutation of the model's test
split; digits has 449), with the true labels, on two copies of the same weights, in one process with the same
torch thread count (1 by default), alternating which side runs first over ``--repeats`` rounds (the machine is
shared and noisy: compare only the ratio); the median-time round of each side is reported, with every round's
seconds and robust accuracy. Both sides' adversarial examples are re-classified here with the same code
(``robustness_vs_art.verified_robust``: an example outside the eps-ball or [0, 1] does not count as broken), and
each robust accuracy gets a 95% Clopper-Pearson interval.

Models that are not built are skipped (``--build-missing`` trains them first; see ``zoo.py``).

    .venv/bin/pip install -r benchmarks/requirements.txt
    PYTHONPATH=src .venv/bin/python benchmarks/zoo.py --build digits --threads 1
    PYTHONPATH=src .venv/bin/python benchmarks/zoo_quick_vs_art.py --models all --samples 200 --repeats 3
    PYTHONPATH=src .venv/bin/python benchmarks/zoo_quick_vs_art.py --quick   # smoke: 2 digits models, 50 images
"""

from __future__ import annotations

import argparse
import json
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
from common import stopwatch
from torch import nn

import modelsec
from modelsec.audits.presets import PRESETS, build_attacks
from modelsec.audits.robustness import evaluate_robustness
from modelsec.core.seeding import generator
from modelsec.stats.metrics import clopper_pearson

HERE = Path(__file__).resolve().parent
TARGET_RATIO = 0.5
QUICK_MODELS = "digits-mlp,digits-cnn"


def with_ci(robust: np.ndarray) -> dict[str, Any]:
    ci = clopper_pearson(int(robust.sum()), len(robust))
    return {"robust_accuracy": float(robust.mean()), "ci95": [ci.low, ci.high]}


def run_quick(model: zoo.ZooModel, x: torch.Tensor, y: torch.Tensor, seed: int) -> dict[str, Any]:
    """modelsec's ``quick`` preset through the audit's own robustness loop, timed end to end."""
    clf = model.classifier()
    attacks, skipped = build_attacks(PRESETS["quick"], clf, "linf")
    with stopwatch() as t:
        run = evaluate_robustness(clf, x, y, attacks=attacks, eps=[model.eps], norm="linf", generator=generator(seed))
    robust, checks = rva.verified_robust(clf.module, x, y, run.x_adv[model.eps], model.eps)
    return {
        "seconds": t["seconds"],
        **with_ci(robust),
        "checks": checks,
        "attacks": [
            {"attack": e.attack, "seconds": e.seconds, "robust_accuracy": e.robust_accuracy} for e in run.result.results
        ],
        "skipped": [s.attack for s in skipped],
    }


def run_art_pgd(art: Any, module: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> dict[str, Any]:
    """ART's PGD-20 (``robustness_vs_art.art_pgd``) on an ART ``PyTorchClassifier`` of the model's input shape."""
    estimator = art.estimators.classification.PyTorchClassifier(
        model=module,
        loss=nn.CrossEntropyLoss(),
        input_shape=tuple(x.shape[1:]),
        nb_classes=10,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )
    attack = rva.art_pgd(art, eps)(estimator)
    np.random.seed(0)  # ART draws its random start from numpy's global generator
    with stopwatch() as t:
        x_adv = attack.generate(x=x.numpy(), y=y.numpy())  # true labels, as modelsec gets them
    robust, checks = rva.verified_robust(module, x, y, torch.from_numpy(x_adv), eps)
    return {"seconds": t["seconds"], **with_ci(robust), "checks": checks}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median time, plus every round's seconds and robust accuracy."""
    chosen = dict(sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2])
    chosen["seconds_all"] = [r["seconds"] for r in runs]
    chosen["robust_accuracy_all"] = [r["robust_accuracy"] for r in runs]
    return chosen


def bench(name: str, art: Any, args: argparse.Namespace) -> dict[str, Any]:
    model = zoo.build(name, models_dir=args.models_dir)
    peer = zoo.build(name, models_dir=args.models_dir).module  # an independent copy of the same weights
    x_all, y_all = model.test_set()
    pick = torch.from_numpy(np.random.default_rng(0).permutation(len(y_all))[: args.samples])
    x, y = x_all[pick], y_all[pick]
    clean = zoo.accuracy(peer, x, y)
    print(f"\n== {name} ({model.entry.kind}, eps {model.eps}): clean {clean:.3f} on {len(y)} images", flush=True)
    for module in (model.module, peer):  # warm-up: thread pools and kernels, outside both timings
        with torch.enable_grad():
            xw = x[:128].clone().requires_grad_(True)
            module.eval()
            nn.functional.cross_entropy(module(xw), y[:128]).backward()
            module.zero_grad(set_to_none=True)
    ours_runs, peer_runs = [], []
    for rep in range(args.repeats):
        for side in ("ours", "peer") if rep % 2 == 0 else ("peer", "ours"):
            if side == "ours":
                ours_runs.append(run_quick(model, x, y, seed=rep))
            else:
                peer_runs.append(run_art_pgd(art, peer, x, y, model.eps))
        print(
            f"  round {rep + 1}: modelsec quick {ours_runs[-1]['seconds']:.2f} s "
            f"({ours_runs[-1]['robust_accuracy']:.3f}), ART PGD-20 {peer_runs[-1]['seconds']:.2f} s "
            f"({peer_runs[-1]['robust_accuracy']:.3f})",
            flush=True,
        )
    ours, theirs = median_run(ours_runs), median_run(peer_runs)
    ratio = ours["seconds"] / theirs["seconds"]
    return {
        "data": model.entry.data,
        "kind": model.entry.kind,
        "eps": model.eps,
        "samples": len(y),
        "clean_accuracy": clean,
        "model_clean_accuracy": model.card["clean_accuracy"],
        "training_seconds": model.card["training_seconds"],
        "modelsec": ours,
        "art": theirs,
        "ratio": ratio,
        "time_target_met": ratio <= TARGET_RATIO,
        "accuracy_target_met": ours["robust_accuracy"] <= theirs["robust_accuracy"],
        "accuracy_target_met_every_round": max(ours["robust_accuracy_all"]) <= min(theirs["robust_accuracy_all"]),
    }


def pct(r: dict[str, Any]) -> str:
    lo, hi = r["ci95"]
    return f"{100 * r['robust_accuracy']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def markdown_table(results: dict[str, Any], seconds_digits: int = 2, ratio_digits: int = 2) -> str:
    """One row per model: both sides' seconds, the ratio, both robust accuracies with CIs, met / missed (also the
    table of ``zoo_standard_vs_art.py``, with its own precision)."""
    lines = [
        "| model | kind | images | clean | modelsec s | ART s | ratio | modelsec robust [95% CI] | ART robust [95% CI] "
        "| time | accuracy |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- | --- |",
    ]
    for name, m in results["models"].items():
        lines.append(
            f"| {name} | {m['kind']} | {m['samples']} | {100 * m['clean_accuracy']:.1f}% "
            f"| {m['modelsec']['seconds']:.{seconds_digits}f} | {m['art']['seconds']:.{seconds_digits}f} "
            f"| {m['ratio']:.{ratio_digits}f}x "
            f"| {pct(m['modelsec'])} | {pct(m['art'])} | {'met' if m['time_target_met'] else 'missed'} "
            f"| {'met' if m['accuracy_target_met'] else 'missed'} |"
        )
    return "\n".join(lines)


def summary(results: dict[str, Any]) -> dict[str, Any]:
    models = results["models"]
    if not models:
        return {}
    worst = max(models, key=lambda n: models[n]["ratio"])
    higher = [n for n, m in models.items() if not m["accuracy_target_met"]]
    return {
        "models": len(models),
        "worst_ratio": models[worst]["ratio"],
        "worst_ratio_model": worst,
        "time_target_met_on_every_model": all(m["time_target_met"] for m in models.values()),
        "robust_accuracy_no_higher_on_every_model": not higher,
        "robust_accuracy_higher_on": higher,
    }


def print_summary(results: dict[str, Any], target_ratio: float, ratio_digits: int = 2) -> None:
    """The worst time ratio and whether each target holds on every model (also ``zoo_standard_vs_art.py``'s)."""
    s = results.get("summary", {})
    if not s:
        return
    slow = [n for n, m in results["models"].items() if not m["time_target_met"]]
    print(
        f"\nworst time ratio: {s['worst_ratio']:.{ratio_digits}f}x ({s['worst_ratio_model']}); "
        f"at most {target_ratio:g}x on every model: {s['time_target_met_on_every_model']}"
        + (f" (above it on {', '.join(slow)})" if slow else "")
    )
    print(
        "robust accuracy no higher than ART's on every model: "
        f"{s['robust_accuracy_no_higher_on_every_model']}"
        + (f" (higher on {', '.join(s['robust_accuracy_higher_on'])})" if s["robust_accuracy_higher_on"] else "")
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="all", help="zoo names, or 'all', 'digits', 'fmnist' (comma-separated)")
    p.add_argument("--samples", type=int, default=200, help="test images per model (digits has 449)")
    p.add_argument("--repeats", type=int, default=3, help="alternating timed rounds per model (median reported)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--build-missing", action="store_true", help="train the selected models that are not built")
    p.add_argument("--models-dir", type=Path, default=zoo.MODELS_DIR)
    p.add_argument("--out", type=Path, default=HERE / "results" / "zoo_quick.json")
    p.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_MODELS}, 50 images, 1 round, /tmp output")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.samples, args.repeats = QUICK_MODELS, 50, 1
        if args.out == p.get_default("out"):
            args.out = Path("/tmp/zoo_quick-smoke.json")
    names = zoo.select(args.models)
    missing = [n for n in names if zoo.cached_card(zoo.ZOO[n], args.models_dir) is None]
    if missing and not args.build_missing:
        print(f"not built, skipped: {', '.join(missing)} (build them with zoo.py --build, or --build-missing)")
        names = [n for n in names if n not in missing]

    torch.set_num_threads(args.threads)
    art = rva.import_art()
    results: dict[str, Any] = {
        "benchmark": "zoo_quick_vs_art",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {
            "pair": "modelsec quick vs ART ProjectedGradientDescent (20 steps of 2.5 * eps / 20, 1 random start)",
            "norm": "linf",
            "eps": zoo.EPS,
            "samples": args.samples,
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
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average_start": os.getloadavg()},
        "not_built": missing if not args.build_missing else [],
        "models": {},
    }
    for name in names:
        results["models"][name] = bench(name, art, args)
        results["machine"]["load_average_end"] = os.getloadavg()
        results["summary"] = summary(results)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")  # partial results survive
    print("\n" + markdown_table(results))
    print_summary(results, TARGET_RATIO)
    print(f"load average at start {results['machine']['load_average_start']}, end {os.getloadavg()}")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
