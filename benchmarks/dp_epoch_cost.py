"""What one DP-SGD epoch costs against one non-private epoch of the same model, side by side in one run.

Issue 16's target: a DP epoch costs at most 1.5x a non-private epoch (issue 5's was 2.5x, with Opacus's ghost
clipping). The model is ``--arch``: the
built-in ``small-cnn`` (conv32-conv64-fc128, 421k parameters; default) or ``dp-cnn`` (the 26k-parameter tanh CNN
that ``defenses.py`` trains with DP-SGD), on the Fashion-MNIST members split of
``load_splits("fashion-mnist", seed=0)`` (the first ``--members`` records; all 50,000 by default), both runs from
the same seeded initialisation:

- non-private: shuffled batches of ``--batch-size``, cross-entropy, SGD (momentum 0.9); the plain loop, no modelsec
  machinery, so the ratio is against the physical baseline;
- DP: ``modelsec.defenses.dp_sgd.train_dp_sgd`` for one epoch (Poisson batches of expected size ``--batch-size``,
  per-example clipping to ``--clip``, noise ``--noise-multiplier``), once per ``--modes`` entry (``bk``:
  book-keeping clipping, one backward pass, the default path; ``ghost``: Opacus's ghost clipping, two backward
  passes; ``hooks``: Opacus's per-example gradients from hooks). Its epoch time is the training
  steps only (``history[0].seconds``); the run's total with the accountants (PRV per epoch, then PLD and RDP) is
  reported beside it;
- where a step's time goes (``--breakdown`` alternating repeats, 0 for none): the CPU milliseconds of each phase of
  one plain step and one book-keeping step on the same fixed batch of ``--batch-size`` records; and each
  convolution's norms and clipped sum by each way of forming them (``--kernels`` alternating repeats).

The runs alternate (plain, then each DP mode) ``--repeats`` times and the median of each is compared; each run's
test accuracy on the first ``--eval`` non-members is a sanity check that the epoch trained. The machine's load
average (1 minute) is recorded before and after every run, since other processes slow both sides unevenly. Results
go to ``--out`` (JSON, overwritten).

    .venv/bin/python benchmarks/dp_epoch_cost.py --repeats 3 --threads 2   # full scale: 50,000 records
    .venv/bin/python benchmarks/dp_epoch_cost.py --members 512 --batch-size 64 --eval 256   # smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from modelsec.core.progress import Advance, Progress
from modelsec.core.seeding import generator, seeded
from modelsec.data import load_splits
from modelsec.data.dataset import Dataset
from modelsec.defenses.dp_sgd import DPSGDConfig, train_dp_sgd
from modelsec.defenses.training import accuracy
from modelsec.models.zoo import build_architecture

HERE = Path(__file__).resolve().parent
TARGET_RATIO = 1.5


def build(arch: str, shape: tuple[int, ...], classes: int, seed: int) -> nn.Module:
    with seeded(seed):
        return build_architecture(arch, shape, classes)


class EpochClock(Progress):
    """Records the CPU seconds (this process, all threads) of each "DP epoch" task of ``train_dp_sgd``: the same
    span as its wall-clock ``history[i].seconds``."""

    def __init__(self) -> None:
        self.cpu: list[float] = []

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Advance]:
        start = time.process_time()
        yield lambda n: None
        if description.startswith("DP epoch"):
            self.cpu.append(time.process_time() - start)


def plain_epoch(module: nn.Module, train: Dataset, *, batch_size: int, lr: float, seed: int) -> tuple[float, float]:
    """One non-private epoch; returns its wall-clock and CPU seconds."""
    x, y = torch.from_numpy(train.x), torch.from_numpy(train.y)
    opt = torch.optim.SGD(module.parameters(), lr=lr, momentum=0.9)
    module.train()
    start, cpu = time.perf_counter(), time.process_time()
    order = torch.randperm(len(train), generator=generator(seed))
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        loss = functional.cross_entropy(module(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start, time.process_time() - cpu


def step_breakdown(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    clip: float,
    noise_multiplier: float,
    lr: float,
    repeats: int,
) -> dict[str, float]:
    """Median CPU milliseconds of each phase of one non-private step and one book-keeping DP-SGD step on the same
    batch ``(x, y)`` (fixed size, same model), alternating ``repeats`` times: the forward pass, the backward pass
    (plain) or the gradients at the layers' outputs (DP), each layer's norm rule, the clipped sums, Opacus's noisy
    optimizer step. The phases are those of :class:`~modelsec.defenses.dp_sgd.DPSGDStep` with ``grad_sample_mode="bk"``
    run by hand through the clipper's records."""
    from modelsec.defenses.dp_sgd import DPSGDStep
    from modelsec.defenses.per_sample_clipping import CLIP_EPSILON, RULES

    plain_opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    step = DPSGDStep(
        model,
        torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9),
        l2_norm_clip=clip,
        noise_multiplier=noise_multiplier,
        expected_batch_size=len(y),
        noise_generator=generator(0),
    )
    clipper = step.clipper
    assert clipper is not None
    times: dict[str, list[float]] = {}
    last = [0.0]

    def lap(name: str) -> None:
        now = time.process_time()
        times.setdefault(name, []).append(now - last[0])
        last[0] = now

    for _ in range(repeats):
        last[0] = time.process_time()
        loss = functional.cross_entropy(model(x), y)
        lap("plain: forward")
        plain_opt.zero_grad(set_to_none=True)
        loss.backward()
        lap("plain: backward")
        plain_opt.step()
        lap("plain: SGD step")
        step.dp_optimizer.zero_grad(set_to_none=True)
        with clipper.recording():
            per_example = functional.cross_entropy(model(x), y, reduction="none")
        lap("DP: forward (hooks record inputs)")
        records, clipper._records = clipper._records, []
        grads = torch.autograd.grad(per_example.sum(), [r.output for r in records])
        lap("DP: gradients at the layers' outputs")
        sq, finishes = torch.zeros(len(y)), []
        for r, g in zip(records, grads, strict=True):
            layer_sq, finish = RULES[type(r.module)][1](r.module, r.inputs, g, clipper._space)
            sq = sq + layer_sq
            finishes.append(finish)
            lap(f"DP: norms of {r.name} ({type(r.module).__name__})")
        factors = (clip / (sq.sqrt() + CLIP_EPSILON)).clamp(max=1.0)
        for finish in finishes:
            finish(factors)
        lap("DP: clipped sums")
        step.dp_optimizer.step()
        lap("DP: Opacus noise and SGD step")
    step.close()
    return {name: 1000 * statistics.median(v[1:] if len(v) > 1 else v) for name, v in times.items()}


def conv_paths(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, repeats: int) -> dict[str, dict[str, float]]:
    """Median CPU milliseconds of each convolution's norm rule and clipped sum on the batch ``(x, y)``, by way of
    forming its per-example gradients: patches and a batched product (``bmm``), torch's weight-gradient kernel with
    one group per example (``weight kernel``), or the ghost norm and a scaled batched weight gradient (``ghost``);
    the three alternate ``repeats`` times on the same recorded pass."""
    import modelsec.defenses.per_sample_clipping as psc

    ways = {"bmm": (0, "auto"), "weight kernel": (1 << 30, "auto"), "ghost": (psc.BMM_MIN_PATCH, "ghost")}
    clippers = {way: psc.BookKeepingClipper(model, max_grad_norm=1.0, norm_method=m) for way, (_, m) in ways.items()}
    times: dict[str, dict[str, list[float]]] = {}
    default = psc.BMM_MIN_PATCH
    try:
        for _ in range(repeats):
            for way, (threshold, _) in ways.items():
                psc.BMM_MIN_PATCH = threshold
                clipper = clippers[way]
                with clipper.recording():
                    loss = functional.cross_entropy(model(x), y, reduction="none")
                records, clipper._records = clipper._records, []
                grads = torch.autograd.grad(loss.sum(), [r.output for r in records])
                for r, g in zip(records, grads, strict=True):
                    if not isinstance(r.module, nn.Conv1d | nn.Conv2d):
                        continue
                    start = time.process_time()
                    _, finish = psc.RULES[type(r.module)][1](r.module, r.inputs, g, clipper._space)
                    finish(torch.full((len(y),), 0.5))
                    times.setdefault(f"{r.name} ({r.module})", {}).setdefault(way, []).append(
                        time.process_time() - start
                    )
    finally:
        psc.BMM_MIN_PATCH = default
        for clipper in clippers.values():
            clipper.close()
    return {layer: {way: 1000 * statistics.median(v) for way, v in by.items()} for layer, by in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="small-cnn", help="built-in architecture (small-cnn, dp-cnn)")
    p.add_argument("--members", type=int, default=None, help="training records (the first N members; all)")
    p.add_argument("--batch-size", type=int, default=256, help="batch size (DP: expected, Poisson)")
    p.add_argument("--noise-multiplier", type=float, default=1.1)
    p.add_argument("--clip", type=float, default=1.0, help="per-example L2 clipping bound")
    p.add_argument("--lr", type=float, default=0.1, help="SGD learning rate (momentum 0.9), both runs")
    p.add_argument(
        "--modes", default="bk,ghost", help="DP per-example clipping modes, comma-separated (bk, ghost, hooks)"
    )
    p.add_argument("--repeats", type=int, default=1, help="alternating repeats; medians are compared")
    p.add_argument("--eval", type=int, default=2000, help="non-members for the accuracy sanity check")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=HERE / "results" / "dp_epoch_cost.json")
    p.add_argument(
        "--breakdown",
        type=int,
        default=20,
        help="alternating repeats of the per-phase timing of one plain and one bk step on a fixed batch (0: none)",
    )
    p.add_argument(
        "--kernels",
        type=int,
        default=10,
        help="alternating repeats of each convolution's per-example norms by each way (bmm, weight kernel, ghost)",
    )
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
    cpu_seconds: dict[str, list[float]] = {key: [] for key in seconds}
    totals: dict[str, list[float]] = {f"dp-{m}": [] for m in modes}
    accuracies: dict[str, float] = {}
    reports: dict[str, dict[str, Any]] = {}
    loads: list[float] = [os.getloadavg()[0]]
    for r in range(args.repeats):
        model = build(args.arch, shape, classes, args.seed)
        wall, cpu = plain_epoch(model, train, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
        seconds["plain"].append(wall)
        cpu_seconds["plain"].append(cpu)
        accuracies["plain"] = accuracy(model, test, torch.device("cpu"))
        loads.append(os.getloadavg()[0])
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
            clock = EpochClock()
            report = train_dp_sgd(model, train, config, progress=clock)
            key = f"dp-{mode}"
            seconds[key].append(report.history[0].seconds)
            cpu_seconds[key].append(clock.cpu[0])
            totals[key].append(report.seconds)
            accuracies[key] = accuracy(model, test, torch.device("cpu"))
            reports[key] = report.to_dict()
            loads.append(os.getloadavg()[0])
            print(
                f"repeat {r + 1}: DP epoch ({report.grad_sample_mode}) {seconds[key][-1]:.2f} s "
                f"(with accounting {report.seconds:.2f} s), test acc {accuracies[key]:.3f}, "
                f"epsilon {report.epsilon:.3f} at delta {report.delta:g} "
                f"({report.steps} steps, q={report.sample_rate:.5f})"
            )

    plain = statistics.median(seconds["plain"])
    plain_cpu = statistics.median(cpu_seconds["plain"])
    rows = []
    print()
    print(f"load average (1 min) during the runs: {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} CPUs")
    print(
        f"| run | epoch s (median) | ratio to plain | CPU s (median) | CPU ratio | with accounting s | test acc | "
        f"target (<= {TARGET_RATIO}x) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| plain | {plain:.2f} | 1.00x | {plain_cpu:.2f} | 1.00x | | {accuracies['plain']:.3f} | |")
    for mode in modes:
        key = f"dp-{mode}"
        dp = statistics.median(seconds[key])
        ratio = dp / plain
        dp_cpu = statistics.median(cpu_seconds[key])
        met = ratio <= TARGET_RATIO
        rows.append(
            {
                "mode": mode,
                "epoch_seconds": dp,
                "ratio": ratio,
                "cpu_seconds": dp_cpu,
                "cpu_ratio": dp_cpu / plain_cpu,
                "target_met": met,
            }
        )
        total = statistics.median(totals[key])
        print(
            f"| DP {mode} | {dp:.2f} | {ratio:.2f}x | {dp_cpu:.2f} | {dp_cpu / plain_cpu:.2f}x | {total:.2f} | "
            f"{accuracies[key]:.3f} | {'met' if met else '**missed**'} |"
        )

    breakdown: dict[str, float] = {}
    if args.breakdown:
        idx = torch.arange(min(args.batch_size, len(train)))
        x_batch, y_batch = torch.from_numpy(train.x)[idx], torch.from_numpy(train.y)[idx]
        breakdown = step_breakdown(
            build(args.arch, shape, classes, args.seed),
            x_batch,
            y_batch,
            clip=args.clip,
            noise_multiplier=args.noise_multiplier,
            lr=args.lr,
            repeats=args.breakdown,
        )
        plain_ms = sum(v for k, v in breakdown.items() if k.startswith("plain"))
        dp_ms = sum(v for k, v in breakdown.items() if k.startswith("DP"))
        print(f"\none step, batch {len(idx)}, median CPU ms over {args.breakdown} alternating repeats:")
        for name, ms in breakdown.items():
            print(f"  {name}: {ms:.2f}")
        print(f"  plain step {plain_ms:.2f}, DP step {dp_ms:.2f}: {dp_ms / plain_ms:.2f}x")

    kernels: dict[str, dict[str, float]] = {}
    if args.kernels:
        idx = torch.arange(min(args.batch_size, len(train)))
        kernels = conv_paths(
            build(args.arch, shape, classes, args.seed),
            torch.from_numpy(train.x)[idx],
            torch.from_numpy(train.y)[idx],
            repeats=args.kernels,
        )
        print(
            f"\neach convolution's norms and clipped sum, batch {len(idx)}, median CPU ms over {args.kernels} repeats:"
        )
        for layer, by in kernels.items():
            print(f"  {layer}: " + ", ".join(f"{way} {ms:.2f}" for way, ms in by.items()))

    import opacus

    results = {
        "date": datetime.date.today().isoformat(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "records": len(train),
        "versions": {"torch": torch.__version__, "opacus": opacus.__version__, "python": platform.python_version()},
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "threads": args.threads,
            "cpus": os.cpu_count(),
            "load_average_1min": loads,
        },
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "seconds_with_accounting": totals,
        "test_accuracy": accuracies,
        "plain_epoch_seconds": plain,
        "dp": rows,
        "target_ratio": TARGET_RATIO,
        "reports": reports,
        "step_breakdown_cpu_ms": breakdown,
        "conv_norms_cpu_ms": kernels,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
