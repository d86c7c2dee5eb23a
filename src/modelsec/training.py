"""Standard (non-private, non-robust) supervised training of a classifier on the members split.

Seeded end to end: initialisation (under :func:`modelsec.seeding.seeded`) and batch order (an explicit
``torch.Generator``), so the same seed gives the same weights on the same CPU.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from modelsec.data.dataset import Dataset
from modelsec.errors import ConfigError
from modelsec.models.base import eval_mode
from modelsec.progress import NullProgress, Progress
from modelsec.seeding import generator


@dataclass(frozen=True, kw_only=True)
class TrainingConfig:
    """Hyper-parameters of standard training (Adam, cross-entropy, shuffled mini-batches).

    ``lr_schedule``: "cosine" anneals the learning rate to 0 over all steps (Loshchilov & Hutter 2017),
    "constant" keeps it fixed.
    """

    epochs: int = 8
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"learning rate must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight decay must be >= 0, got {self.weight_decay}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ConfigError(f"lr schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")


@dataclass
class TrainingHistory:
    config: dict[str, Any]
    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def accuracy(module: nn.Module, data: Dataset, device: torch.device, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``module`` on ``data`` (eval mode, the caller's mode restored)."""
    correct = 0
    with eval_mode(module):
        for i in range(0, len(data), batch_size):
            xb = torch.from_numpy(data.x[i : i + batch_size]).to(device)
            yb = torch.from_numpy(data.y[i : i + batch_size]).to(device)
            correct += int((module(xb).argmax(dim=1) == yb).sum())
    return correct / max(len(data), 1)


def train_classifier(
    module: nn.Module,
    train: Dataset,
    *,
    config: TrainingConfig,
    test: Dataset | None = None,
    device: str = "cpu",
    progress: Progress | None = None,
) -> TrainingHistory:
    """Train ``module`` in place on ``train``; report accuracy on ``test`` after each epoch if given."""
    progress = progress or NullProgress()
    dev = torch.device(device)
    module.to(dev)
    x = torch.from_numpy(train.x)
    y = torch.from_numpy(train.y)
    opt = torch.optim.Adam(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = -(-len(train) // config.batch_size)
    schedule = (
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs * steps_per_epoch)
        if config.lr_schedule == "cosine"
        else None
    )
    g = generator(config.seed)
    history = TrainingHistory(config=asdict(config))
    start = time.perf_counter()
    was_training = module.training
    for epoch in range(config.epochs):
        module.train()
        order = torch.randperm(len(train), generator=g)
        total_loss, correct = 0.0, 0
        with progress.task(f"epoch {epoch + 1}/{config.epochs}", total=len(train)) as advance:
            for i in range(0, len(order), config.batch_size):
                idx = order[i : i + config.batch_size]
                xb, yb = x[idx].to(dev), y[idx].to(dev)
                logits = module(xb)
                loss = functional.cross_entropy(logits, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if schedule is not None:
                    schedule.step()
                total_loss += float(loss.detach()) * len(idx)
                correct += int((logits.argmax(dim=1) == yb).sum())
                advance(len(idx))
        history.train_loss.append(total_loss / len(train))
        history.train_accuracy.append(correct / len(train))
        if test is not None:
            history.test_accuracy.append(accuracy(module, test, dev))
            progress.note(
                f"epoch {epoch + 1}: loss {history.train_loss[-1]:.4f}, "
                f"train acc {history.train_accuracy[-1]:.4f}, test acc {history.test_accuracy[-1]:.4f}"
            )
    module.train(was_training)
    history.seconds = time.perf_counter() - start
    return history


def train_and_save(
    *,
    data: str,
    arch: str | None,
    out: Path,
    config: TrainingConfig,
    split_seed: int = 0,
    members: int | None = None,
    data_dir: str | None = None,
    label_column: str = "label",
    bounds: tuple[float, float] | None = None,
    device: str = "cpu",
    overwrite: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train the architecture on the data's members split and save safetensors weights whose header records
    the architecture, input shape, classes, bounds and data split (so ``modelsec audit --model OUT`` needs no
    other flags), plus the same metadata with the training history as ``OUT.json``. Returns the metadata."""
    from modelsec.data import load_splits
    from modelsec.models.torch import save_safetensors
    from modelsec.models.zoo import build_architecture, default_architecture
    from modelsec.seeding import seeded

    sidecar = out.with_name(out.name + ".json")
    for path in (out, sidecar):
        if path.exists() and not overwrite:
            raise ConfigError(f"{path} exists; pass --overwrite to replace it")
    if members is not None and members < 1:
        raise ConfigError(f"--members must be >= 1, got {members}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is available")
    splits = load_splits(data, seed=split_seed, data_dir=data_dir, label_column=label_column, bounds=bounds)
    train = splits.members
    if members is not None:
        train = train.subset(torch.arange(min(members, len(train))).numpy())
    arch_name = arch or default_architecture(splits.input_shape)
    with seeded(config.seed):
        module = build_architecture(arch_name, splits.input_shape, splits.num_classes)
    history = train_classifier(module, train, config=config, test=splits.nonmembers, device=device, progress=progress)
    metadata: dict[str, Any] = {
        "arch": arch_name,
        "input_shape": list(splits.input_shape),
        "num_classes": splits.num_classes,
        "bounds": list(splits.bounds),
        "class_names": list(splits.members.class_names) if splits.members.class_names else None,
        "data": {"source": splits.source, "split_seed": splits.seed, "members_used": len(train)},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_safetensors(module.cpu(), tmp, metadata)
    tmp.replace(out)
    full = {**metadata, "training": history.to_dict(), "modelsec_version": _version()}
    sidecar.write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
    return full


def _version() -> str:
    from modelsec import __version__

    return __version__
