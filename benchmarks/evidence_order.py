"""Order by evidence (issue 16): the `standard` chain on an input-quantised CNN, black-box attacks last (the order
before issue 16) against black-box attacks first (what the zero-gradients check now orders), side by side in one
run.

The model is the bundled Fashion-MNIST CNN with its inputs rounded to 8 levels inside ``forward`` (every input
gradient is zero, the symptom issue 16 measured: APGD-T and DeepFool spent 823 of 1035 s on zero gradients before
Square broke every survivor). Both orders get the same plan (the `standard` preset with the zero-gradients remedy:
HopSkipJump added), the same samples (the first ``--samples`` of a seed-0 permutation of the test set), L-inf
``--eps``, the same seed, one torch thread; the rounds alternate the two orders. Each row reports the chain's wall
time, the post-attack checks' (which with black-box first include the white-box probe), robust accuracy with its
95% Clopper-Pearson interval, and per attack the samples it attacked and its seconds.

    PYTHONPATH=src .venv/bin/python benchmarks/evidence_order.py --samples 100 --rounds 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import stopwatch
from torch import nn

from modelsec.audits.presets import build_attacks, preset_specs
from modelsec.audits.robustness import attack_labels, evaluate_robustness
from modelsec.audits.sanity import Remedies, apply_remedies, post_checks, pre_checks
from modelsec.core.seeding import generator
from modelsec.data import load_splits
from modelsec.models import Classifier, load_model
from modelsec.results.audit import eps_key
from modelsec.stats.metrics import rate_with_ci

RESULTS = Path(__file__).parent / "results" / "evidence_order.json"


class Quantised(nn.Module):
    """Rounds the inputs to ``levels`` levels inside ``forward``: the input gradient is zero almost everywhere."""

    def __init__(self, net: nn.Module, levels: int = 8) -> None:
        super().__init__()
        self.net, self.steps = net, levels - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.round(x * self.steps) / self.steps)


def run_order(
    clf: Classifier, x: torch.Tensor, y: torch.Tensor, remedies: Remedies, eps: float, seed: int
) -> dict[str, Any]:
    """The standard chain under ``remedies``, then the post-attack checks, timed apart."""
    attacks, skipped = build_attacks(apply_remedies(list(preset_specs("standard")), remedies), clf, "linf")
    labels = attack_labels(attacks)
    gen = generator(seed)
    with stopwatch() as chain:
        run = evaluate_robustness(clf, x, y, attacks=attacks, eps=[eps], generator=gen)
    with stopwatch() as checks:
        flags = post_checks(clf, run, attacks, labels, "linf", gen)
    standing = [int((run.pred_clean == y).sum())] + [int(run.per_attack_robust[(lb, eps)].sum()) for lb in labels]
    rate, ci = rate_with_ci(run.robust[eps].numpy())
    assert rate == run.result.robust_accuracy[eps_key(eps)]
    return {
        "order": "black-box first" if remedies.black_box_first else "black-box last",
        "chain_seconds": chain["seconds"],
        "checks_seconds": checks["seconds"],
        "robust_accuracy": rate,
        "ci": [ci.low, ci.high],
        "flags": sorted(f.check for f in flags),
        "skipped": [s.attack for s in skipped],
        "attacks": [
            {"attack": e.attack, "samples": standing[i], "seconds": e.seconds} for i, e in enumerate(run.result.results)
        ],
    }


def row(r: dict[str, Any], base: dict[str, Any]) -> str:
    total = r["chain_seconds"] + r["checks_seconds"]
    base_total = base["chain_seconds"] + base["checks_seconds"]
    per_attack = ", ".join(f"{a['attack']} {a['samples']} / {a['seconds']:.0f} s" for a in r["attacks"])
    return (
        f"| {r['order']} | {r['chain_seconds']:.0f} | {r['checks_seconds']:.0f} | {total / base_total:.2f}x | "
        f"{r['robust_accuracy']:.1%} [{r['ci'][0]:.1%}, {r['ci'][1]:.1%}] | {', '.join(r['flags'])} | {per_attack} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    bundled = load_model(None).classifier
    clf = Classifier(
        Quantised(bundled.module), input_shape=bundled.input_shape, num_classes=bundled.num_classes,
        bounds=bundled.bounds,
    )  # fmt: skip
    splits = load_splits("fashion-mnist")
    idx = np.random.default_rng(0).permutation(len(splits.nonmembers))[: args.samples]
    x, y = torch.from_numpy(splits.nonmembers.x[idx]), torch.from_numpy(splits.nonmembers.y[idx])
    with stopwatch() as pre:
        flags, remedies = pre_checks(clf, x, y)
    zero = next((f for f in flags if f.check == "zero-gradients"), None)
    print(f"pre-checks ({pre['seconds']:.1f} s): {[f.check for f in flags]}; {zero.message if zero else ''}")
    new = remedies
    old = dataclasses.replace(remedies, black_box_first=False)
    results: list[dict[str, Any]] = []
    for r in range(args.rounds):
        for remedy in (old, new) if r % 2 == 0 else (new, old):
            res = run_order(clf, x, y, remedy, args.eps, args.seed)
            res["round"] = r
            results.append(res)
            print(json.dumps(res), flush=True)
    load = os.getloadavg()
    print(
        f"\n{args.samples} Fashion-MNIST test images, bundled CNN with inputs quantised to 8 levels, standard, "
        f"L-inf eps {args.eps:g}, seed {args.seed}, 1 torch thread, load average {load[0]:.1f} at the end\n"
    )
    print("| order | chain s | checks s | total vs black-box last | robust accuracy [95% CI] | flags | per attack: "
          "samples attacked / seconds |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in range(args.rounds):
        pair = {res["order"]: res for res in results if res["round"] == r}
        base = pair["black-box last"]
        for order in ("black-box last", "black-box first"):
            print(row(pair[order], base))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"samples": args.samples, "eps": args.eps, "seed": args.seed, "load": load, "runs": results}
    args.out.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
