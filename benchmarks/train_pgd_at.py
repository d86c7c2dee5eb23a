"""Train the PGD adversarially trained small-cnn that ``robustness_vs_art.py`` audits as its second model.

Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial Attacks": every mini-batch is replaced
by its PGD adversarial examples before the gradient step (min-max training). Threat model: L-inf, eps 0.1, inputs
in [0, 1]. The inner maximisation is PGD-7 with step 2.5 * eps / 7 from a uniformly random start in the ball.

Built from modelsec's own parts (the Fashion-MNIST members split, ``build_architecture("small-cnn")`` under
``seeded``, ``save_safetensors`` with the bundled model's metadata keys). The attack loop is written here rather
than reusing ``modelsec.attacks.evasion.PGD``, whose ``__call__`` also validates and re-classifies every batch:
right for an audit, wasted work inside a training loop.

Seeded end to end (initialisation, batch order, random starts): the same seed gives the same weights on the same
CPU build of torch. Each step costs 8 forward/backward passes (7 attack steps, 1 training step). With the
defaults this took 71 minutes on the shared 2-core machine of 2026-11-26 (load average 8-11, so most of it
waiting for a core); fewer ``--members`` or ``--epochs`` shorten it proportionally.

    .venv/bin/python benchmarks/train_pgd_at.py
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from modelsec.core.seeding import generator, seeded
from modelsec.data import load_splits
from modelsec.models.base import eval_mode
from modelsec.models.loading import bundled_model_path
from modelsec.models.torch import read_safetensors_metadata, save_safetensors
from modelsec.models.zoo import build_architecture

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "models" / "fmnist-pgd-at.safetensors"


def pgd_linf(
    module: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int,
    step_size: float,
    gen: torch.Generator,
) -> torch.Tensor:
    """Untargeted L-inf PGD on the cross-entropy from a random start; inputs stay in [0, 1]. Returns detached
    adversarial inputs (the module's parameters get no gradients)."""
    delta = (torch.rand(x.shape, generator=gen, dtype=x.dtype) * 2 - 1) * eps
    xa = (x + delta).clamp(0.0, 1.0)
    with eval_mode(module):
        for _ in range(steps):
            xa.requires_grad_(True)
            loss = functional.cross_entropy(module(xa), y)
            (grad,) = torch.autograd.grad(loss, xa)
            xa = xa.detach() + step_size * grad.sign()
            xa = torch.min(torch.max(xa, x - eps), x + eps).clamp(0.0, 1.0)
    return xa.detach()


@torch.no_grad()
def accuracy(module: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    with eval_mode(module):
        correct = sum(
            int((module(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
            for i in range(0, len(x), batch_size)
        )
    return correct / len(x)


def robust_accuracy(
    module: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int, seed: int, batch_size: int = 128
) -> float:
    """Accuracy under PGD-``steps`` (step 2.5 * eps / steps, one random start)."""
    gen = generator(seed)
    correct = 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        xa = pgd_linf(module, xb, yb, eps=eps, steps=steps, step_size=2.5 * eps / steps, gen=gen)
        with torch.no_grad(), eval_mode(module):
            correct += int((module(xa).argmax(1) == yb).sum())
    return correct / len(x)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--members", type=int, default=20_000, help="first N images of the members split")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=7, help="PGD steps of the inner maximisation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-samples", type=int, default=1000, help="test images for the final PGD-20 check")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    splits = load_splits("fashion-mnist", seed=0)
    train = splits.members.subset(np.arange(min(args.members, len(splits.members))))
    x, y = torch.from_numpy(train.x), torch.from_numpy(train.y)
    x_test, y_test = torch.from_numpy(splits.nonmembers.x), torch.from_numpy(splits.nonmembers.y)

    with seeded(args.seed):
        module = build_architecture("small-cnn", splits.input_shape, splits.num_classes)
    opt = torch.optim.Adam(module.parameters(), lr=args.lr)
    steps_per_epoch = -(-len(x) // args.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * steps_per_epoch)
    order_gen = generator(args.seed)
    attack_gen = generator(args.seed + 1)
    step_size = 2.5 * args.eps / args.steps
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    for epoch in range(args.epochs):
        module.train()
        order = torch.randperm(len(x), generator=order_gen)
        total_loss, correct = 0.0, 0
        for i in range(0, len(order), args.batch_size):
            idx = order[i : i + args.batch_size]
            xb, yb = x[idx], y[idx]
            xa = pgd_linf(module, xb, yb, eps=args.eps, steps=args.steps, step_size=step_size, gen=attack_gen)
            logits = module(xa)
            loss = functional.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            total_loss += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
        clean = accuracy(module, x_test, y_test)
        history.append(
            {
                "epoch": epoch + 1,
                "adv_train_loss": total_loss / len(x),
                "adv_train_accuracy": correct / len(x),
                "clean_test_accuracy": clean,
                "seconds": time.perf_counter() - start,
            }
        )
        print(
            f"epoch {epoch + 1}/{args.epochs}: adversarial loss {total_loss / len(x):.4f}, "
            f"adversarial train acc {correct / len(x):.4f}, clean test acc {clean:.4f} "
            f"({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    seconds = time.perf_counter() - start
    module.eval()

    # the benchmark's images: the first N of a seed-0 permutation of the 10k test set
    pick = torch.from_numpy(np.random.default_rng(0).permutation(len(x_test))[: args.eval_samples])
    clean = accuracy(module, x_test, y_test)
    robust = robust_accuracy(module, x_test[pick], y_test[pick], eps=args.eps, steps=20, seed=args.seed + 2)

    reference = read_safetensors_metadata(bundled_model_path())
    metadata = {
        "arch": "small-cnn",
        "input_shape": list(splits.input_shape),
        "num_classes": splits.num_classes,
        "bounds": list(splits.bounds),
        "class_names": list(splits.members.class_names) if splits.members.class_names else None,
        "data": {"source": splits.source, "split_seed": splits.seed, "members_used": len(train)},
    }
    if set(metadata) != set(reference):
        raise RuntimeError(f"metadata keys {sorted(metadata)} differ from the bundled model's {sorted(reference)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(module, args.out, metadata)
    training = {
        "method": "PGD adversarial training (Madry et al. 2018)",
        "eps": args.eps,
        "norm": "linf",
        "attack_steps": args.steps,
        "attack_step_size": step_size,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "optimizer": "Adam, cosine schedule",
        "seed": args.seed,
        "seconds": seconds,
        "history": history,
        "clean_test_accuracy": clean,
        "pgd20_robust_accuracy": robust,
        "pgd20_eval_samples": int(pick.numel()),
        "torch": torch.__version__,
    }
    sidecar = args.out.with_name(args.out.name + ".json")
    sidecar.write_text(json.dumps({**metadata, "training": training}, indent=2) + "\n", encoding="utf-8")
    print(f"saved {args.out} after {seconds:.0f} s of training")
    print(f"clean accuracy (10,000 test images): {clean:.4f}")
    print(f"PGD-20 robust accuracy at eps {args.eps} ({pick.numel()} test images): {robust:.4f}")


if __name__ == "__main__":
    main()
