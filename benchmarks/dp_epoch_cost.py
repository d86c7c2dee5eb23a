"""What one DP-SGD epoch costs against one non-private epoch of the same model, side by side in one run.

Issue 5's target: a DP epoch (ghost clipping) costs at most 2.5x a non-private epoch. The model is ``--arch``: the
built-in ``small-cnn`` (conv32-conv64-fc128, 421k parameters; default) or ``dp-cnn`` (the 26k-parameter tanh CNN
that ``defenses.py`` trains with DP-SGD), on the Fashion-MNIST members split of
``load_splits("fashion-mnist", seed=0)`` (the first ``--members`` records; all 50,000 by default), both runs from
the same seeded initialisation:

- non-private: shuffled batches of ``--batch-size``, cross-entropy, SGD (momentum 0.9); the plain loop, no modelsec
  machinery, so the ratio is against the physical baseline;
- DP: ``modelsec.defenses.dp_sgd.train_dp_sgd`` for one epoch (Poisson batches of expected size ``--batch-size``,
  per-example clipping to ``--clip``, noise ``--noise-multiplier``), once per ``--modes`` entry (``ghost``: Opacus
  ghost clipping, the default path; ``hooks``: per-example gradients from hooks). Its epoch time is the training
  steps only (``history[0].seconds``); the run's total with the accountants (PRV per epoch, then PLD and RDP) is
  reported beside it.

The runs alternate (plain, then each DP mode) ``--repeats`` times and the median of each is compared; each run's
test accuracy on the first ``--eval`` non-members is a sanity check that the epoch trained. Results go to
``--out`` (JSON, overwritten).

    .venv/bin/python benchmarks/dp_epoch_cost.py                      # full scale: 50,000 records
    .venv/bin/python benchmarks/dp_epoch_cost.py --members 512 --batch-size 64 --eval 256   # smoke run
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from modelsec.core.seeding import generator, seeded
from modelsec.data import load_splits
from modelsec.data.dataset import Dataset
from modelsec.defenses.dp_sgd import DPSGDConfig, train_dp_sgd
from modelsec.defenses.training import accuracy
from modelsec.models.zoo import build_architecture

HERE = Path(__file__).resolve().parent
TARGET_RATIO = 2.5


def build(arch: str, shape: tuple[int, ...], classes: int, seed: int) -> nn.Module:
    with seeded(seed):
        return build_architecture(arch, shape, classes)


def plain_epoch(module: nn.Module, train: Dataset, *, batch_size: int, lr: float, seed: int) -> float:
    """One non-private epoch; returns its seconds."""
    x, y = torch.from_numpy(train.x), torch.from_numpy(train.y)
    opt = torch.optim.SGD(module.parameters(), lr=lr, momentum=0.9)
    module.train()
    start = time.perf_counter()
    order = torch.randperm(len(train), generator=generator(seed))
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        loss = functional.cross_entropy(module(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="small-cnn", help="built-in architecture (small-cnn, dp-cnn)")
    p.add_argument("--members", type=int, default=None, help="training records (the first N members; all)")
    p.add_argument("--batch-size", type=int, default=256, help="batch size (DP: expected, Poisson)")
    p.add_argument("--noise-multiplier", type=float, default=1.1)
    p.add_argument("--clip", type=float, default=1.0, help="per-example L2 clipping bound")
    p.add_argument("--lr", type=float, default=0.1, help="SGD learning rate (momentum 0.9), both runs")
    p.add_argument("--modes", default="ghost", help="DP per-example gradient modes, comma-separated (ghost,hooks)")
    p.add_argument("--repeats", type=int, default=1, help="alternating repeats; medians are compared")
    p.add_argument("--eval", type=int, default=2000, help="non-members for the accuracy sanity check")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=HERE / "results" / "dp_epoch_cost.json")
    args = p.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]

    torch.set_num_threads(args.threads)
    splits = load_splits("fashion-mnist", seed=0)
    train = splits.members
    if args.members is not None:
        train = train.subset(np.arange(min(args.members, len(train))))
    test = splits.nonmembers.subset(np.arange(min(args.eval, len(splits.nonmembers))))
    shape, classes = splits.input_shape, splits.num_classes

    seconds: dict[str, list[float]] = {"plain": [], **{f"dp-{m}": [] for m in modes}}
    totals: dict[str, list[float]] = {f"dp-{m}": [] for m in modes}
    accuracies: dict[str, float] = {}
    reports: dict[str, dict[str, Any]] = {}
    for r in range(args.repeats):
        model = build(args.arch, shape, classes, args.seed)
        seconds["plain"].append(plain_epoch(model, train, batch_size=args.batch_size, lr=args.lr, seed=args.seed))
        accuracies["plain"] = accuracy(model, test, torch.device("cpu"))
        print(f"repeat {r + 1}: plain epoch {seconds['plain'][-1]:.2f} s, test acc {accuracies['plain']:.3f}")
        for mode in modes:
            model = build(args.arch, shape, classes, args.seed)
            config = DPSGDConfig(
                l2_norm_clip=args.clip,
                noise_multiplier=args.noise_multiplier,
                batch_size=args.batch_size,
                epochs=1,
                lr=args.lr,
                grad_sample_mode=mode,
                seed=args.seed,
            )
            report = train_dp_sgd(model, train, config)
            key = f"dp-{mode}"
            seconds[key].append(report.history[0].seconds)
            totals[key].append(report.seconds)
            accuracies[key] = accuracy(model, test, torch.device("cpu"))
            reports[key] = report.to_dict()
            print(
                f"repeat {r + 1}: DP epoch ({report.grad_sample_mode}) {seconds[key][-1]:.2f} s "
                f"(with accounting {report.seconds:.2f} s), test acc {accuracies[key]:.3f}, "
                f"epsilon {report.epsilon:.3f} at delta {report.delta:g} "
                f"({report.steps} steps, q={report.sample_rate:.5f})"
            )

    plain = statistics.median(seconds["plain"])
    rows = []
    print()
    print("| run | epoch s (median) | ratio to plain | with accounting s | test acc | target (<= 2.5x) |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| plain | {plain:.2f} | 1.00x | | {accuracies['plain']:.3f} | |")
    for mode in modes:
        key = f"dp-{mode}"
        dp = statistics.median(seconds[key])
        ratio = dp / plain
        met = ratio <= TARGET_RATIO
        rows.append({"mode": mode, "epoch_seconds": dp, "ratio": ratio, "target_met": met})
        total = statistics.median(totals[key])
        print(
            f"| DP {mode} | {dp:.2f} | {ratio:.2f}x | {total:.2f} | {accuracies[key]:.3f} | "
            f"{'met' if met else '**missed**'} |"
        )

    import opacus

    results = {
        "date": datetime.date.today().isoformat(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "records": len(train),
        "versions": {"torch": torch.__version__, "opacus": opacus.__version__, "python": platform.python_version()},
        "machine": {"processor": platform.processor() or platform.machine(), "threads": args.threads},
        "seconds": seconds,
        "seconds_with_accounting": totals,
        "test_accuracy": accuracies,
        "plain_epoch_seconds": plain,
        "dp": rows,
        "target_ratio": TARGET_RATIO,
        "reports": reports,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
