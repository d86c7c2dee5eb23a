"""Issue 6's acceptance numbers for the one-run privacy audit (Steinke, Nasr & Jagielski 2023), on Fashion-MNIST.

Parts (``--parts``, comma-separated):

- ``nonprivate``: the built-in ``small-cnn`` trained with ``standard`` (Adam, ``--epochs``, constant learning rate,
  no claim) on the members split plus the included half of ``--canaries`` mislabelled canaries (population records
  with a wrong label). Target: empirical epsilon >= 2. Also the audit's cost: the same training WITHOUT canaries is
  run once as the baseline, and the audit's whole time (training with canaries, scoring, bound) is compared with it.
  Target: <= 1.5x.
- ``dp``: ``dp-sgd`` at ``--target-epsilon`` 3 (delta 1e-5; Tramer & Boneh-style recipe: expected batch 2048, SGD
  momentum 0.9, clip 0.1, lr 4, ``--dp-epochs`` 40, on ``--dp-arch``) with the same canaries, over ``--seeds``
  seeds (canaries and training both seeded). Target: the bound stays <= the claimed epsilon for every seed (a bound
  above the claim is a bug). ``--dp-cost`` also times one DP run without canaries for the cost ratio.

Each audit writes ``dp_audit.json`` and ``dp_audit.html`` under ``--out-dir``; the summary goes to ``--out`` (JSON;
the parts run now replace theirs, the others are kept) and a Markdown table is printed, with each target met /
missed. The DP runs use ``--dp-arch`` (default ``dp-cnn``, Tramer & Boneh's tanh CNN), the non-private run
``--arch`` (default ``small-cnn``).

    .venv/bin/python benchmarks/dp_audit.py --parts nonprivate          # about 30 epochs of the small-cnn, twice
    .venv/bin/python benchmarks/dp_audit.py --parts dp                  # 5 DP-SGD runs of 40 epochs (hours)
    .venv/bin/python benchmarks/dp_audit.py --members 400 --canaries 60 --epochs 2 --dp-epochs 1 \\
        --dp-batch-size 64 --seeds 2 --dp-cost --out-dir /tmp/dpaudit --out /tmp/dpaudit/dp_audit.json   # smoke run
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from modelsec.audits.dp_audit import defense_trainer, run_dp_audit
from modelsec.core.progress import RichProgress
from modelsec.data import load_splits
from modelsec.data.dataset import Splits
from modelsec.defenses.training import training_set
from modelsec.results.dp_audit import DPAuditResult

HERE = Path(__file__).resolve().parent
TARGET_NONPRIVATE_EPSILON = 2.0
TARGET_COST_RATIO = 1.5


def baseline_seconds(defense: str, config: dict[str, Any], splits: Splits, members: int | None, arch: str) -> float:
    """One training run of the same configuration without canaries (what the audit is compared with)."""
    train_fn = defense_trainer(defense, config, arch=arch, test=splits.nonmembers)
    start = time.perf_counter()
    train_fn(training_set(splits, members))
    return time.perf_counter() - start


def audit(
    defense: str, config: dict[str, Any], splits: Splits, args: argparse.Namespace, seed: int, name: str, arch: str
) -> DPAuditResult:
    result, files = run_dp_audit(
        defense,
        data=splits,
        arch=arch,
        config=config,
        canaries=args.canaries,
        canary_kind="mislabelled",
        seed=seed,
        members=args.members,
        out_dir=args.out_dir / name,
        progress=RichProgress(quiet=args.quiet),
    )
    claim = "no claim" if result.claimed_epsilon is None else f"claimed {result.claimed_epsilon:.3f}"
    print(
        f"{name}: bound {result.lower_bound:.3f} ({claim}; {result.v}/{result.r} correct, k+={result.k_plus}, "
        f"k-={result.k_minus}), training {result.train_seconds:.1f} s, scoring {result.score_seconds:.2f} s, "
        f"bound {result.bound_seconds:.2f} s, test accuracy {result.training.get('test_accuracy')}; {files['report']}"
    )
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", default="nonprivate,dp", help="nonprivate, dp (comma-separated)")
    p.add_argument("--canaries", type=int, default=1000)
    p.add_argument("--members", type=int, default=None, help="train on the first N members (default: all 50,000)")
    p.add_argument("--arch", default="small-cnn", help="architecture of the non-private run")
    p.add_argument("--epochs", type=int, default=30, help="non-private epochs (Adam, lr --lr, batch 128)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--target-epsilon", type=float, default=3.0)
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--dp-epochs", type=int, default=40)
    p.add_argument("--dp-batch-size", type=int, default=2048)
    p.add_argument("--dp-lr", type=float, default=4.0)
    p.add_argument("--dp-clip", type=float, default=0.1)
    p.add_argument("--dp-arch", default="dp-cnn", help="architecture of the DP runs (Tramer & Boneh's tanh CNN)")
    p.add_argument("--seeds", type=int, default=5, help="DP runs, seeds 0..N-1")
    p.add_argument("--dp-cost", action="store_true", help="also time one DP run without canaries")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out-dir", type=Path, default=HERE / "results" / "dp_audit")
    p.add_argument("--out", type=Path, default=HERE / "results" / "dp_audit.json")
    args = p.parse_args()
    parts = {s.strip() for s in args.parts.split(",") if s.strip()}
    torch.set_num_threads(args.threads)
    splits = load_splits("fashion-mnist", seed=0)
    summary: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "machine": {"processor": platform.processor() or platform.machine(), "threads": args.threads},
    }
    rows: list[str] = []

    if "nonprivate" in parts:
        config = {"epochs": args.epochs, "lr": args.lr, "lr_schedule": "constant", "batch_size": 128, "seed": 0}
        result = audit("standard", config, splits, args, 0, "nonprivate", args.arch)
        plain = baseline_seconds("standard", config, splits, args.members, args.arch)
        ratio = result.audit_seconds / plain
        summary["nonprivate"] = {
            "date": datetime.date.today().isoformat(),
            "config": {"arch": args.arch, "members": args.members, "canaries": args.canaries, **config},
            "result": result.to_dict(),
            "baseline_seconds": plain,
            "cost_ratio": ratio,
        }
        rows.append(
            f"| non-private {args.arch}, {args.epochs} epochs | none | {result.lower_bound:.3f} | "
            f"{result.v}/{result.r} | {result.audit_seconds:.0f} s vs {plain:.0f} s = {ratio:.2f}x | "
            f"eps >= {TARGET_NONPRIVATE_EPSILON}: "
            f"{'met' if result.lower_bound >= TARGET_NONPRIVATE_EPSILON else '**missed**'}; "
            f"cost <= {TARGET_COST_RATIO}x: {'met' if ratio <= TARGET_COST_RATIO else '**missed**'} |"
        )

    if "dp" in parts:
        runs = []
        recipe = {
            "target_epsilon": args.target_epsilon,
            "delta": args.delta,
            "epochs": args.dp_epochs,
            "batch_size": args.dp_batch_size,
            "lr": args.dp_lr,
            "l2_norm_clip": args.dp_clip,
            "momentum": 0.9,
        }
        for seed in range(args.seeds):
            config = {**recipe, "seed": seed}
            result = audit("dp-sgd", config, splits, args, seed, f"dp-seed{seed}", args.dp_arch)
            runs.append(result.to_dict())
            cost = ""
            if args.dp_cost and seed == 0:
                plain = baseline_seconds("dp-sgd", config, splits, args.members, args.dp_arch)
                summary["dp_baseline_seconds"] = plain
                cost = f"{result.audit_seconds:.0f} s vs {plain:.0f} s = {result.audit_seconds / plain:.2f}x"
            claimed = result.claimed_epsilon or 0.0
            rows.append(
                f"| DP-SGD {args.dp_arch} seed {seed}, target eps {args.target_epsilon:g} | {claimed:.3f} | "
                f"{result.lower_bound:.3f} | {result.v}/{result.r} | {cost} | "
                f"bound <= claim: {'met' if result.passed else '**missed** (a bug)'} |"
            )
        summary["dp"] = runs
        summary["dp_run"] = {
            "date": datetime.date.today().isoformat(),
            "config": {"arch": args.dp_arch, "members": args.members, "canaries": args.canaries, **recipe},
            "seeds": args.seeds,
        }

    print()
    print("| run | claimed eps | empirical lower bound | correct / guesses | audit cost vs one training run | target |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # read only now (another process may have written the other part meanwhile): the parts run now replace theirs,
    # the others keep their results, each with its own date and configuration
    stored = json.loads(args.out.read_text(encoding="utf-8")) if args.out.exists() else {}
    summary = {**stored, **summary}
    args.out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
