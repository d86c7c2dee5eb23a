"""The compute limit on every zoo model (issue 16): for ``quick`` and ``standard``, the forward and backward passes
each attack spent against its floor, and at which target rank APGD-T breaks what it breaks.

Threat model: white-box, untargeted, L-inf, eps 0.1 (``zoo.EPS``), inputs in [0, 1]; per model, the first N test
images of the seed-0 permutation that ``zoo_quick_vs_art.py`` and ``zoo_standard_vs_art.py`` use, seed 0.

**Passes against the floor** (parts ``quick`` and ``standard``). Each preset runs as an audit runs it
(``zoo_standard_vs_art.run_preset``: the pre-attack checks, their remedies, the chain through
``evaluate_robustness``, the minimum-norm pass included). Every attack's :class:`~modelsec.results.audit.AttackCost`
gives the samples it attacked (what the earlier attacks left), the forward and backward passes it spent and its
floor: what a perfect per-sample early stop of the same algorithm would spend, one evaluation for each step a
sample was still unbroken (``modelsec.attacks.cost``). The tables give spent / floor per attack and the totals per
preset and model. ``--standard-from`` takes ``standard``'s entries from ``zoo_standard_vs_art.py``'s results where
that run measured the same images in one round (seed 0): the same plan, images and seed spend the same passes.

**APGD-T's targets** (part ``ranks``). APGD-T (Croce & Hein 2020) aims in turn at the ``n_targets`` classes with
the highest clean logits other than the true one (``standard``: 9, every wrong class of a 10-class model, 2 random
starts per target), each target only on what the earlier targets left. :class:`RankedAPGDT` is that attack
unchanged (same parameters, same random draws) that records, per target rank r (1 = the highest wrong logit), the
samples it attacked, how many of them it broke and the passes it spent. The part runs the ``standard`` plan cut
after APGD-T (``--rank-samples`` images): the attacks before it are the full chain's, so what reaches APGD-T and
what it does are too. For every k, a ``standard`` with ``n_targets=k`` would run the first k ranks exactly as
here and lose the breaks of ranks k+1..9 (to DeepFool and Square, which run after it, unless they break them),
saving those ranks' passes. The summary gives, per model and over the zoo, the cumulative share of APGD-T's breaks
by rank, the breaks lost and the passes saved for each k, and two choices of k: the smallest that loses no break
over the zoo, and the smallest whose lost breaks, as a share of all the images attacked, have a 95%
Clopper-Pearson upper bound under 0.5% (one image in 200).

    PYTHONPATH=src .venv/bin/python benchmarks/zoo_cost.py --models digits --samples 60 --rank-samples 200
    PYTHONPATH=src .venv/bin/python benchmarks/zoo_cost.py --models all --parts standard \
        --standard-from benchmarks/results/zoo_standard.json
    PYTHONPATH=src .venv/bin/python benchmarks/zoo_cost.py --quick   # smoke: 2 digits models, 20 images
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import zoo  # benchmarks/zoo.py
import zoo_standard_vs_art as zs  # benchmarks/zoo_standard_vs_art.py: the audit's robustness step, timed
from common import ZooResults  # benchmarks/common.py

from modelsec.attacks.base import AttackBatch
from modelsec.attacks.evasion.apgd import APGDTargeted, AuxLoss
from modelsec.stats.metrics import clopper_pearson

HERE = Path(__file__).resolve().parent
PRESETS = ("quick", "standard")
QUICK_MODELS = "digits-mlp,digits-pgd-at"
LOST_SHARE_BOUND = 0.005  # the CI rule for k: lost breaks / images attacked, upper 95% bound below this


@dataclass
class RankLog:
    """Per target rank (index 0 = rank 1): samples attacked, broken, forward and backward passes spent."""

    attacked: list[int] = field(default_factory=list)
    broken: list[int] = field(default_factory=list)
    forward: list[int] = field(default_factory=list)
    backward: list[int] = field(default_factory=list)
    next_rank: int = 0

    def add(self, rank: int, attacked: int, broken: int, forward: int, backward: int) -> None:
        for column in (self.attacked, self.broken, self.forward, self.backward):
            while len(column) <= rank:
                column.append(0)
        self.attacked[rank] += attacked
        self.broken[rank] += broken
        self.forward[rank] += forward
        self.backward[rank] += backward

    def reset(self) -> None:
        self.attacked, self.broken, self.forward, self.backward, self.next_rank = [], [], [], [], 0

    def to_dict(self) -> dict[str, list[int]]:
        return {"attacked": self.attacked, "broken": self.broken, "forward": self.forward, "backward": self.backward}


LOG = RankLog()
"""Where :class:`RankedAPGDT` records (the benchmark runs one attack at a time; reset per preset run)."""


class RankedAPGDT(APGDTargeted):
    """APGD-T, unchanged, recording per target rank what it attacked, broke and spent into :data:`LOG`.
    ``APGDTargeted.run`` calls ``_restarts`` once per target, in rank order, on the samples still standing (and
    stops when none is), so the n-th call of a batch is rank n."""

    def run(self, batch: AttackBatch) -> torch.Tensor:
        LOG.next_rank = 0
        return super().run(batch)

    def _restarts(
        self, batch: AttackBatch, aux: torch.Tensor, loss_fn: AuxLoss, out: torch.Tensor, remaining: torch.Tensor
    ) -> torch.Tensor:
        clf = batch.classifier
        rank, LOG.next_rank = LOG.next_rank, LOG.next_rank + 1
        before, forward, backward = remaining.numel(), clf.queries, clf.gradient_queries
        left = super()._restarts(batch, aux, loss_fn, out, remaining)
        LOG.add(rank, before, before - left.numel(), clf.queries - forward, clf.gradient_queries - backward)
        return left


def ratio(spent: int, floor: int) -> float | None:
    return spent / floor if floor else None


def cost_rows(run: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per attack of the chain and per minimum-norm pass, with spent / floor ratios."""
    rows = []
    for entry, kind in [(e, "chain") for e in run["attacks"]] + [(m, "min-norm pass") for m in run["min_norm_pass"]]:
        c = entry["cost"]
        if c is None:
            continue
        rows.append(
            {
                "attack": entry["attack"],
                "part": kind,
                "seconds": entry["seconds"],
                **c,
                "forward_ratio": ratio(c["forward"], c["floor_forward"]),
                "backward_ratio": ratio(c["backward"], c["floor_backward"]),
            }
        )
    return rows


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("forward", "backward", "floor_forward", "floor_backward")
    t: dict[str, Any] = {k: sum(r[k] for r in rows) for k in keys}
    t["seconds"] = sum(r["seconds"] or 0.0 for r in rows)
    t["forward_ratio"] = ratio(t["forward"], t["floor_forward"])
    t["backward_ratio"] = ratio(t["backward"], t["floor_backward"])
    return t


def preset_entry(run: dict[str, Any], source: str, samples: int) -> dict[str, Any]:
    rows = cost_rows(run)
    return {
        "source": source,
        "samples": samples,
        "seconds": run["seconds"],
        "robust_accuracy": run["robust_accuracy"],
        "ci95": run["ci95"],
        "remedies": run.get("remedies", []),
        "attacks": rows,
        "total": totals(rows),
    }


def reused_standard(args: argparse.Namespace, name: str, samples: int) -> dict[str, Any] | None:
    """``standard``'s round on the same images with seed 0 from ``zoo_standard_vs_art.py``'s results, if any (the
    same plan, images and seed spend the same passes; its seconds are that run's, under that run's load)."""
    if args.standard_from is None or not args.standard_from.exists():
        return None
    m = json.loads(args.standard_from.read_text(encoding="utf-8")).get("models", {}).get(name)
    if m is None or m["samples"] != samples or len(m["modelsec"].get("seconds_all", [])) != 1:
        return None  # other images, or several rounds (the median round may not be seed 0's)
    run: dict[str, Any] = m["modelsec"]
    return run


def bench(name: str, args: argparse.Namespace) -> dict[str, Any]:
    model = zoo.build(name, models_dir=args.models_dir)
    x, y = zs.pick_images(model, args.samples)
    print(f"\n== {name} ({model.entry.kind}, eps {model.eps}) on {len(y)} images", flush=True)
    zs.warm_up([model.module], x, y)
    out: dict[str, Any] = {"data": model.entry.data, "kind": model.entry.kind, "eps": model.eps}
    for preset in PRESETS:
        if preset not in args.parts:
            continue
        reused = reused_standard(args, name, len(y)) if preset == "standard" else None
        if reused is not None:
            out[preset] = preset_entry(reused, f"zoo_standard_vs_art.py ({args.standard_from.name}), seed 0", len(y))
        else:
            out[preset] = preset_entry(zs.run_preset(model, x, y, preset=preset, seed=0)[0], "this run, seed 0", len(y))
        t = out[preset]["total"]
        print(
            f"  {preset}: {out[preset]['seconds']:.1f} s, robust {out[preset]['robust_accuracy']:.3f}; forward "
            f"{t['forward']} (floor {t['floor_forward']}), backward {t['backward']} (floor {t['floor_backward']})",
            flush=True,
        )
    if "ranks" in args.parts:
        xr, yr = zs.pick_images(model, args.rank_samples)
        LOG.reset()
        run, _ = zs.run_preset(
            model, xr, yr, preset="standard", seed=0, swap={APGDTargeted: RankedAPGDT}, cut_after="apgd-t"
        )
        out["apgd_t_ranks"] = {"samples": len(yr), "seconds": run["seconds"], **LOG.to_dict()}
        print(f"  APGD-T on {len(yr)} images: breaks by rank {LOG.broken} of {LOG.attacked[:1]} reaching it")
    return out


def rank_summary(models: dict[str, Any]) -> dict[str, Any]:
    """Per model and over the zoo: APGD-T's breaks by rank, their cumulative share, and for each k the breaks
    lost and the passes saved by stopping after rank k; the two choices of k."""
    per_model: dict[str, Any] = {}
    zoo_broken: list[int] = []
    zoo_passes: list[int] = []
    images = 0
    for name, m in models.items():
        ranks = m.get("apgd_t_ranks")
        if not ranks:
            continue
        images += ranks["samples"]
        broken = ranks["broken"]
        passes = [f + b for f, b in zip(ranks["forward"], ranks["backward"], strict=True)]
        total = sum(broken)
        per_model[name] = {
            "reached_apgd_t": ranks["attacked"][0] if ranks["attacked"] else 0,  # 0: nothing reached APGD-T
            "broken": broken,
            "cumulative_share": [sum(broken[: k + 1]) / total if total else None for k in range(len(broken))],
            "passes_by_rank": passes,
        }
        for series, values in ((zoo_broken, broken), (zoo_passes, passes)):
            while len(series) < len(values):
                series.append(0)
            for i, v in enumerate(values):
                series[i] += v
    total = sum(zoo_broken)
    all_passes = sum(zoo_passes)
    per_k = []
    for k in range(1, len(zoo_broken) + 1):
        lost = sum(zoo_broken[k:])
        per_k.append(
            {
                "k": k,
                "breaks_kept_share": sum(zoo_broken[:k]) / total if total else None,
                "breaks_lost": lost,
                "lost_share_of_images_ci95_high": clopper_pearson(lost, images).high if images else None,
                "passes_saved": sum(zoo_passes[k:]),
                "passes_saved_share": sum(zoo_passes[k:]) / all_passes if all_passes else None,
            }
        )
    no_loss = next((r["k"] for r in per_k if r["breaks_lost"] == 0), None)
    within_ci = next((r["k"] for r in per_k if (r["lost_share_of_images_ci95_high"] or 1.0) < LOST_SHARE_BOUND), None)
    return {
        "images": images,
        "breaks_by_rank": zoo_broken,
        "passes_by_rank": zoo_passes,
        "per_k": per_k,
        "k_no_break_lost": no_loss,
        "k_within_ci": within_ci,
        "ci_rule": f"upper 95% Clopper-Pearson bound of breaks lost / images attacked below {LOST_SHARE_BOUND:g}",
        "per_model": per_model,
    }


def fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}"


def cost_table(results: dict[str, Any]) -> str:
    lines = [
        "| model | preset | images | s | robust | forward (floor) | backward (floor) | fwd / floor | bwd / floor "
        "| worst attack (bwd or fwd / floor) |",
        "| --- | --- | ---: | ---: | ---: | --- | --- | ---: | ---: | --- |",
    ]
    for name, m in results["models"].items():
        for preset in PRESETS:
            if preset not in m:
                continue
            p = m[preset]
            t = p["total"]
            worst = max(
                p["attacks"],
                key=lambda r: (r["backward_ratio"] if r["backward"] else r["forward_ratio"]) or 0.0,
                default=None,
            )
            w = "-"
            if worst is not None:
                r = worst["backward_ratio"] if worst["backward"] else worst["forward_ratio"]
                w = f"{worst['attack']}{' (min-norm)' if worst['part'] != 'chain' else ''} {fmt_ratio(r)}"
            lines.append(
                f"| {name} | {preset} | {p['samples']} | {p['seconds']:.1f} | {100 * p['robust_accuracy']:.1f}% "
                f"| {t['forward']} ({t['floor_forward']}) | {t['backward']} ({t['floor_backward']}) "
                f"| {fmt_ratio(t['forward_ratio'])} | {fmt_ratio(t['backward_ratio'])} | {w} |"
            )
    return "\n".join(lines)


def rank_table(summary: dict[str, Any]) -> str:
    n = len(summary["breaks_by_rank"])
    head = " / ".join(str(r) for r in range(1, n + 1))
    lines = [
        f"| model | reached APGD-T | breaks | cumulative share (%) by rank {head} |",
        "| --- | ---: | ---: | --- |",
    ]
    for name, m in summary["per_model"].items():
        shares = " / ".join("-" if s is None else f"{100 * s:.0f}" for s in m["cumulative_share"])
        lines.append(f"| {name} | {m['reached_apgd_t']} | {sum(m['broken'])} | {shares} |")
    lines += ["", "| k | breaks kept | breaks lost | lost / images, 95% upper | APGD-T passes saved |"]
    lines.append("| ---: | ---: | ---: | ---: | ---: |")
    for r in summary["per_k"]:
        kept = "-" if r["breaks_kept_share"] is None else f"{100 * r['breaks_kept_share']:.1f}%"
        saved = "-" if r["passes_saved_share"] is None else f"{100 * r['passes_saved_share']:.1f}%"
        lines.append(
            f"| {r['k']} | {kept} | {r['breaks_lost']} | {100 * r['lost_share_of_images_ci95_high']:.2f}% "
            f"| {r['passes_saved']} ({saved}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="all", help="zoo names, or 'all', 'digits', 'fmnist' (comma-separated)")
    p.add_argument("--samples", type=int, default=100, help="test images per model (digits has 449)")
    p.add_argument(
        "--parts", default="quick,standard,ranks", help="comma-separated: quick, standard (the passes), ranks (APGD-T)"
    )
    p.add_argument("--rank-samples", type=int, default=None, help="images for the ranks part (default --samples)")
    p.add_argument(
        "--standard-from",
        type=Path,
        default=None,
        help="take standard's passes from this zoo_standard_vs_art.py result where it ran one round (seed 0) on the "
        "same images, instead of running standard again",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--models-dir", type=Path, default=zoo.MODELS_DIR)
    p.add_argument("--out", type=Path, default=HERE / "results" / "zoo_cost.json")
    p.add_argument(
        "--fresh",
        action="store_true",
        help="overwrite --out (by default the models and parts not run now keep their entries)",
    )
    p.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_MODELS}, 20 images, /tmp output")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.samples = QUICK_MODELS, 20
        if args.out == p.get_default("out"):
            args.out = Path("/tmp/zoo_cost-smoke.json")
    args.parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    if args.rank_samples is None:
        args.rank_samples = args.samples
    names = zoo.select(args.models)
    missing = [n for n in names if zoo.cached_card(zoo.ZOO[n], args.models_dir) is None]
    if missing:
        print(f"not built, skipped: {', '.join(missing)} (build them with zoo.py --build)")
        names = [n for n in names if n not in missing]
    torch.set_num_threads(args.threads)
    config = {
        "presets": list(PRESETS),
        "norm": "linf",
        "eps": zoo.EPS,
        "images": "first N of np.random.default_rng(0).permutation of the model's test split (each entry's N)",
        "seed": 0,
        "apgd_t_ranks": "the standard plan up to and including APGD-T (what reaches it is the full chain's)",
        "torch_threads": torch.get_num_threads(),
    }
    file = ZooResults("zoo_cost", config, args.out, fresh=args.fresh, names=names, samples=args.samples,
                      order=list(zoo.ZOO))  # fmt: skip
    results = file.data
    for name in names:
        file.add(name, bench(name, args))
        results["apgd_t_ranks"] = rank_summary(results["models"])
        file.write()  # partial results survive
    if results["models"]:
        s = results["apgd_t_ranks"]
        print("\n" + cost_table(results) + "\n\n" + rank_table(s))
        print(
            f"\nAPGD-T's k: {s['k_no_break_lost']} loses no break over these models; {s['k_within_ci']} keeps the "
            f"lost breaks within the CI rule ({s['ci_rule']})"
        )
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
