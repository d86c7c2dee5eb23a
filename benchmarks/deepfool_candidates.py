"""DeepFool's candidate classes on every zoo model (issue 16): how many of the classes with the highest clean
logits DeepFool must compare for the same minimal distances, and whether their gradients are cheaper in one pass.

``standard`` ends with a minimum-norm pass, DeepFool (Moosavi-Dezfooli et al. 2016) on every correctly classified
sample; each of its steps costs, per sample standing, ``candidates - 1`` backward passes (the paper's reference
code: 10 candidates, the label and the 9 classes with the highest clean logits). On the zoo's wider models that
pass was most of ``standard``'s time (``zoo_standard_vs_art.py``).

Threat model: white-box, untargeted, minimum-norm, L-inf and L2 (DeepFool ignores eps: the distances are what it
finds), inputs in [0, 1]; per model, the first N test images of the seed-0 permutation that the other zoo
benchmarks use (``zoo_standard_vs_art.pick_images``), seed 0, DeepFool's other parameters at their defaults (50
steps, overshoot 0.02).

**Part ``candidates``.** For each model and norm, DeepFool with ``candidates`` = 10 (the reference) and each of
``--candidates``: per sample the verified minimal distance (``EvasionResult.min_distance``: inf where none was
found), the seconds and the passes spent (``EvasionResult.cost``). Against the reference, over the samples it found
(finite, above 0): the median and the 90% quantile of the ratio ``d_k / d_10`` (inf where k found none), the share
of samples whose distance grew by more than 1% and by more than 5%, the samples found by each. A k qualifies when
its median ratio is at most 1.01 and its 90% quantile at most 1.02 on every model and norm (the models where the
reference finds nothing, the input-quantised ones, do not count); the summary gives each k's worst case and the
smallest k that qualifies.

**Part ``gradients``.** The ``k - 1`` candidate gradients of one step, three ways, on the first step's graph
(``--grad-samples`` correctly classified images, ``Classifier.logits`` as the attack calls it): ``k - 1`` backward
passes through one forward graph with ``retain_graph`` (DeepFool's loop), one batched backward pass
(``torch.autograd.grad(..., is_grads_batched=True)``, vmapped over the ``k - 1`` one-hot output gradients), and
one backward pass of the batch replicated ``k - 1`` times. The median seconds of ``--grad-repeats`` calls (forward
included) and the largest difference from the loop's gradients.

    PYTHONPATH=src .venv/bin/python benchmarks/deepfool_candidates.py --models all --samples 200
    PYTHONPATH=src .venv/bin/python benchmarks/deepfool_candidates.py --quick   # smoke: 2 digits models, 20 images
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zoo  # benchmarks/zoo.py
import zoo_standard_vs_art as zs  # benchmarks/zoo_standard_vs_art.py: the zoo's images, warm-up, cost entries
from common import ZooResults, stopwatch

from modelsec.attacks.base import ThreatModel
from modelsec.attacks.evasion import DeepFool
from modelsec.attacks.gradients import input_gradient
from modelsec.core.seeding import generator
from modelsec.models.base import Classifier

HERE = Path(__file__).resolve().parent
REFERENCE = 10
CANDIDATES = (2, 3, 4, 5)
NORMS = ("linf", "l2")
MEDIAN_BOUND = 1.01
Q90_BOUND = 1.02
QUICK_MODELS = "digits-mlp,digits-cnn"
GRAD_MODES = ("loop", "batched", "replicated")


def run_deepfool(clf: Classifier, x: torch.Tensor, y: torch.Tensor, norm: str, k: int) -> dict[str, Any]:
    """DeepFool with ``k`` candidates (other parameters at their defaults): distances, seconds, passes."""
    attack = DeepFool(candidates=k)
    with stopwatch() as t:
        res = attack(clf, x, y, ThreatModel(norm, 1.0), generator=generator(0))  # eps: ignored by the distances
    assert res.min_distance is not None
    d = res.min_distance.tolist()
    return {
        "candidates": k,
        "seconds": t["seconds"],
        "cost": zs.cost_dict(res.cost),
        "found": sum(1 for v in d if 0 < v < math.inf),
        "min_distance": [None if v == math.inf else v for v in d],  # JSON has no inf: None where none was found
    }


def distances(run: dict[str, Any]) -> np.ndarray:
    return np.array([math.inf if v is None else v for v in run["min_distance"]], dtype=np.float64)


def quantile(values: np.ndarray, q: float) -> float:
    """The q-quantile (linear interpolation) of values that may hold inf, which ``np.quantile`` turns into nan."""
    v = np.sort(values)
    pos = q * (len(v) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    if lo == hi or v[lo] == v[hi]:
        return float(v[lo])
    return float(v[lo] + (v[hi] - v[lo]) * (pos - lo))


def compare(ref: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """``run``'s distances against the reference's, over the samples the reference found."""
    d_ref, d = distances(ref), distances(run)
    found = (d_ref > 0) & np.isfinite(d_ref)
    out: dict[str, Any] = {
        "compared": int(found.sum()),
        "found": run["found"],
        "found_not_by_reference": int(((d_ref > 0) & ~np.isfinite(d_ref) & np.isfinite(d)).sum()),
        "seconds_ratio": run["seconds"] / ref["seconds"] if ref["seconds"] else None,
        "backward_ratio": run["cost"]["backward"] / ref["cost"]["backward"] if ref["cost"]["backward"] else None,
    }
    if not found.any():
        return {**out, "median_ratio": None, "q90_ratio": None, "max_ratio": None, "grew_1pct": None, "grew_5pct": None}
    ratio = d[found] / d_ref[found]  # inf where k found none
    return {
        **out,
        "median_ratio": quantile(ratio, 0.5),
        "q90_ratio": quantile(ratio, 0.9),
        "max_ratio": float(ratio.max()),
        "min_ratio": float(ratio.min()),
        "grew_1pct": float((ratio > 1.01).mean()),
        "grew_5pct": float((ratio > 1.05).mean()),
        "lost": int((~np.isfinite(ratio)).sum()),
    }


# -- the gradients of one step, three ways -------------------------------------------------------------------------


def step_gradients(clf: Classifier, x: torch.Tensor, y: torch.Tensor, k: int, mode: str) -> torch.Tensor:
    """The ``k - 1`` gradients ``grad (z_j - z_y)`` of a DeepFool step at ``x`` for the classes ``j`` with the
    highest logits other than ``y``, shape ``(k - 1, n, *x.shape[1:])``, taken as ``mode`` says (forward
    included)."""
    with torch.no_grad():
        clean = clf.logits(x)
    others = clean.masked_fill(torch.nn.functional.one_hot(y, clf.num_classes).bool(), -math.inf)
    others = others.topk(k - 1, dim=1).indices
    if mode == "replicated":
        xr = x.repeat(k - 1, *([1] * (x.dim() - 1))).requires_grad_(True)
        z = clf.logits(xr).view(k - 1, len(x), -1)
        picked = torch.stack([z[j].gather(1, others[:, j : j + 1])[:, 0] for j in range(k - 1)])  # (k - 1, n)
        f = picked - z.gather(2, y.expand(k - 1, -1)[..., None])[..., 0]
        (g,) = torch.autograd.grad(f.sum(), xr)
        return g.view(k - 1, *x.shape)
    xa = x.detach().requires_grad_(True)
    z = clf.logits(xa)
    f_all = z.gather(1, others) - z.gather(1, y[:, None])  # (n, k - 1)
    if mode == "batched":
        eye = torch.eye(k - 1, dtype=f_all.dtype)[:, None, :].expand(k - 1, len(x), k - 1)
        (g,) = torch.autograd.grad(f_all, xa, grad_outputs=eye, is_grads_batched=True)
        return g
    return torch.stack(
        [input_gradient(clf, f_all[:, j].sum(), xa, retain_graph=j < k - 2) for j in range(k - 1)]  # DeepFool's
    )


def time_median(fn: Callable[[], Any], repeats: int) -> float:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def gradient_modes(clf: Classifier, x: torch.Tensor, y: torch.Tensor, ks: list[int], repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in ks:
        loop = step_gradients(clf, x, y, k, "loop")
        row: dict[str, Any] = {}
        for mode in GRAD_MODES:
            try:
                diff = float((step_gradients(clf, x, y, k, mode) - loop).abs().max())
                row[mode] = {
                    "seconds": time_median(functools.partial(step_gradients, clf, x, y, k, mode), repeats),
                    "max_abs_diff": diff,
                }
            except RuntimeError as e:  # a module vmap cannot batch
                row[mode] = {"error": str(e)[:300]}
        loop_s = row["loop"]["seconds"]
        for mode in GRAD_MODES:
            if "seconds" in row[mode]:
                row[mode]["vs_loop"] = row[mode]["seconds"] / loop_s
        out[str(k)] = row
    return out


# -- per model -----------------------------------------------------------------------------------------------------


def bench(name: str, args: argparse.Namespace) -> dict[str, Any]:
    model = zoo.build(name, models_dir=args.models_dir)
    x, y = zs.pick_images(model, args.samples)
    clf = model.classifier()
    print(f"\n== {name} ({model.entry.kind}) on {len(y)} images", flush=True)
    zs.warm_up([model.module], x, y)
    out: dict[str, Any] = {"data": model.entry.data, "kind": model.entry.kind, "samples": len(y)}
    if "candidates" in args.parts:
        out["norms"] = {}
        for norm in NORMS:
            ref = run_deepfool(clf, x, y, norm, REFERENCE)
            runs = {str(REFERENCE): ref}
            for k in args.candidates:
                runs[str(k)] = run_deepfool(clf, x, y, norm, k)
            vs = {str(k): compare(ref, runs[str(k)]) for k in args.candidates}
            out["norms"][norm] = {"runs": runs, "vs_reference": vs}
            line = ", ".join(
                f"k={k}: median {fmt(vs[str(k)]['median_ratio'], 4)} q90 {fmt(vs[str(k)]['q90_ratio'], 4)} "
                f"{runs[str(k)]['seconds']:.1f} s"
                for k in args.candidates
            )
            print(f"  {norm}: k=10 found {ref['found']} in {ref['seconds']:.1f} s; {line}", flush=True)
    if "gradients" in args.parts:
        with torch.no_grad():
            correct = (clf.logits(x).argmax(dim=1) == y).nonzero().flatten()[: args.grad_samples]
        out["gradients"] = {
            "samples": len(correct),
            "repeats": args.grad_repeats,
            "per_k": gradient_modes(clf, x[correct], y[correct], args.grad_candidates, args.grad_repeats),
        }
        for k, row in out["gradients"]["per_k"].items():
            cells = ", ".join(
                f"{mode} {1000 * row[mode]['seconds']:.1f} ms" if "seconds" in row[mode] else f"{mode} failed"
                for mode in GRAD_MODES
            )
            print(f"  gradients, k={k}: {cells}", flush=True)
    return out


# -- summary and tables --------------------------------------------------------------------------------------------


def fmt(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "-"
    return "inf" if v == math.inf else f"{v:.{digits}f}"


def summary(models: dict[str, Any]) -> dict[str, Any]:
    """Per k: the worst median and 90%-quantile ratios over models and norms (and where), whether it qualifies;
    the smallest k that does; the total seconds and backward passes against the reference's."""
    per_k: dict[str, Any] = {}
    ks = sorted({int(k) for m in models.values() for n in m.get("norms", {}).values() for k in n["vs_reference"]})
    for k in ks:
        # ties (a ratio of exactly 1 on many models) go to the model with the most samples more than 1% farther
        worst_median: tuple[float, float, str] = (-math.inf, -math.inf, "")
        worst_q90: tuple[float, float, str] = (-math.inf, -math.inf, "")
        seconds = ref_seconds = 0.0
        backward = ref_backward = 0
        skipped = []
        for name, m in models.items():
            for norm, n in m.get("norms", {}).items():
                c = n["vs_reference"].get(str(k))
                if c is None:
                    continue
                seconds += n["runs"][str(k)]["seconds"]
                ref_seconds += n["runs"][str(REFERENCE)]["seconds"]
                backward += n["runs"][str(k)]["cost"]["backward"]
                ref_backward += n["runs"][str(REFERENCE)]["cost"]["backward"]
                if c["median_ratio"] is None:
                    skipped.append(f"{name} {norm}")
                    continue
                worst_median = max(worst_median, (c["median_ratio"], c["grew_1pct"], f"{name} {norm}"))
                worst_q90 = max(worst_q90, (c["q90_ratio"], c["grew_1pct"], f"{name} {norm}"))
        per_k[str(k)] = {
            "worst_median_ratio": worst_median[0],
            "worst_median_at": worst_median[2],
            "worst_q90_ratio": worst_q90[0],
            "worst_q90_at": worst_q90[2],
            "qualifies": worst_median[0] <= MEDIAN_BOUND and worst_q90[0] <= Q90_BOUND,
            "not_compared": skipped,
            "seconds_ratio": seconds / ref_seconds if ref_seconds else None,
            "backward_ratio": backward / ref_backward if ref_backward else None,
        }
    chosen = next((k for k in ks if per_k[str(k)]["qualifies"]), None)
    return {
        "rule": f"median ratio <= {MEDIAN_BOUND} and 90% quantile <= {Q90_BOUND} on every model and norm",
        "per_k": per_k,
        "smallest_qualifying_k": chosen,
    }


def candidates_table(results: dict[str, Any]) -> str:
    lines = [
        "| model | norm | found (k=10) | k | found | median ratio | 90% ratio | > 1% / > 5% | s (k=10 s) | backward "
        "vs k=10 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |",
    ]
    for name, m in results["models"].items():
        for norm, n in m.get("norms", {}).items():
            ref = n["runs"][str(REFERENCE)]
            for k, c in n["vs_reference"].items():
                run = n["runs"][k]
                grew = "-" if c["grew_1pct"] is None else f"{100 * c['grew_1pct']:.1f}% / {100 * c['grew_5pct']:.1f}%"
                lines.append(
                    f"| {name} | {norm} | {ref['found']} | {k} | {run['found']} | {fmt(c['median_ratio'], 4)} "
                    f"| {fmt(c['q90_ratio'], 4)} | {grew} | {run['seconds']:.1f} ({ref['seconds']:.1f}) "
                    f"| {fmt(c['backward_ratio'], 2)} |"
                )
    return "\n".join(lines)


def summary_table(s: dict[str, Any]) -> str:
    lines = [
        "| k | worst median ratio (where) | worst 90% ratio (where) | qualifies | seconds vs k=10 | backward vs k=10 |",
        "| ---: | --- | --- | --- | ---: | ---: |",
    ]
    for k, r in s["per_k"].items():
        lines.append(
            f"| {k} | {fmt(r['worst_median_ratio'], 4)} ({r['worst_median_at']}) | {fmt(r['worst_q90_ratio'], 4)} "
            f"({r['worst_q90_at']}) | {'yes' if r['qualifies'] else 'no'} | {fmt(r['seconds_ratio'], 2)} "
            f"| {fmt(r['backward_ratio'], 2)} |"
        )
    return "\n".join(lines)


def gradients_table(results: dict[str, Any]) -> str:
    lines = [
        "| model | images | k | loop ms | batched ms (vs loop) | replicated ms (vs loop) | largest difference |",
        "| --- | ---: | ---: | ---: | --- | --- | ---: |",
    ]
    for name, m in results["models"].items():
        g = m.get("gradients")
        if not g:
            continue
        for k, row in g["per_k"].items():
            cells = []
            for mode in ("batched", "replicated"):
                r = row[mode]
                cells.append(f"{1000 * r['seconds']:.1f} ({r['vs_loop']:.2f}x)" if "seconds" in r else "failed")
            diff = max(
                (row[m]["max_abs_diff"] for m in ("batched", "replicated") if "max_abs_diff" in row[m]), default=0
            )
            lines.append(
                f"| {name} | {g['samples']} | {k} | {1000 * row['loop']['seconds']:.1f} | {cells[0]} | {cells[1]} "
                f"| {diff:.1e} |"
            )
    return "\n".join(lines)


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--models",
        default="all",
        help="zoo names, or 'all', 'digits', 'fmnist' (comma-separated); '' reprints --out's tables",
    )
    p.add_argument("--samples", type=int, default=200, help="test images per model")
    p.add_argument("--parts", default="candidates,gradients", help="comma-separated: candidates, gradients")
    p.add_argument("--candidates", type=ints, default=list(CANDIDATES), help="the k compared with k=10")
    p.add_argument("--grad-candidates", type=ints, default=[5, 10], help="the k of the gradients part")
    p.add_argument("--grad-samples", type=int, default=128, help="images of the gradients part (one attack batch)")
    p.add_argument("--grad-repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--models-dir", type=Path, default=zoo.MODELS_DIR)
    p.add_argument("--out", type=Path, default=HERE / "results" / "deepfool_candidates.json")
    p.add_argument(
        "--fresh", action="store_true", help="overwrite --out (by default the models not run now keep their entries)"
    )
    p.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_MODELS}, 20 images, /tmp output")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.samples, args.grad_repeats = QUICK_MODELS, 20, 2
        if args.out == p.get_default("out"):
            args.out = Path("/tmp/deepfool_candidates-smoke.json")
    args.parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    names = zoo.select(args.models)
    missing = [n for n in names if zoo.cached_card(zoo.ZOO[n], args.models_dir) is None]
    if missing:
        print(f"not built, skipped: {', '.join(missing)} (build them with zoo.py --build)")
        names = [n for n in names if n not in missing]
    torch.set_num_threads(args.threads)
    config = {
        "attack": "DeepFool, defaults but candidates (steps 50, overshoot 0.02)",
        "reference_candidates": REFERENCE,
        "norms": list(NORMS),
        "images": "first N of np.random.default_rng(0).permutation of the model's test split (each entry's N)",
        "seed": 0,
        "rule": f"median ratio <= {MEDIAN_BOUND}, 90% quantile <= {Q90_BOUND}, every model and norm",
        "torch_threads": torch.get_num_threads(),
    }
    file = ZooResults("deepfool_candidates", config, args.out, fresh=args.fresh, names=names,
                      samples=args.samples, order=list(zoo.ZOO))  # fmt: skip
    results = file.data
    for name in names:
        file.add(name, bench(name, args))
        results["summary"] = summary(results["models"])
        file.write()  # partial results survive
    results["summary"] = summary(results["models"])
    file.write()
    if results["models"]:
        s = results["summary"]
        print("\n" + candidates_table(results) + "\n\n" + summary_table(s) + "\n\n" + gradients_table(results))
        print(f"\nsmallest k with {s['rule']}: {s['smallest_qualifying_k']}")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
