"""Standard (non-private, non-robust) supervised training of a classifier on the members split.

Seeded end to end: initialisation (under :func:`modelsec.core.seeding.seeded`) and batch order (an explicit
``torch.Generator``), so the same seed gives the same weights on the same CPU.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from modelsec.core.errors import ConfigError
from modelsec.core.options import (
    COUNT,
    SEED,
    SPLIT_SEED_LIMIT,
    OneOf,
    check_device,
    check_seed,
    check_writable_file,
)
from modelsec.core.progress import NullProgress, Progress
from modelsec.core.seeding import generator, hashed_seed
from modelsec.data.dataset import Dataset, Splits
from modelsec.models.base import eval_mode
from modelsec.models.card import ModelCard, TrainingHistory


@dataclass(frozen=True, kw_only=True)
class TrainingConfig:
    """Hyper-parameters of standard training (Adam, cross-entropy, shuffled mini-batches).

    Its fields, and those of every defense's config, follow the options convention of :mod:`modelsec.core.options`:
    each is a command-line option of ``modelsec train``, ``harden`` and ``audit-dp``.

    Args:
        epochs: passes over the training records (default 8).
        batch_size: records per mini-batch (default 128).
        lr: Adam's learning rate (default 1e-3).
        weight_decay: Adam's weight decay (default 0).
        lr_schedule: "cosine" (default) anneals the learning rate to 0 over all steps (Loshchilov & Hutter 2017),
            "constant" keeps it fixed.
        seed: seeds the initialisation, the batch order and any random choice of the training loss (default 0).
    """

    epochs: Annotated[int, COUNT] = 8
    batch_size: Annotated[int, COUNT] = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_schedule: Annotated[str, OneOf("cosine", "constant")] = "cosine"
    seed: Annotated[int, SEED] = 0

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
        check_seed(self.seed, "seed")


BatchLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
"""``batch_loss(module, x, y, generator) -> (loss, logits)``: the scalar loss of one mini-batch (what the optimizer
descends) and the logits the training accuracy counts. ``generator`` is the loop's own generator for any random
choice a loss makes (random starts of an inner attack), so a seeded run stays reproducible and resumable."""


def cross_entropy_loss(
    module: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard training's batch loss: the mean cross-entropy of the clean batch."""
    logits = module(x)
    return functional.cross_entropy(logits, y), logits


@dataclass
class TrainingState:
    """Everything :func:`train_classifier` needs to continue a run exactly where it stopped: the model, the
    optimizer and its learning-rate schedule, the two generators (batch order; the batch loss's random choices),
    the history and the number of epochs completed. ``extra`` holds a caller's own state (a defense's best weights),
    saved and restored with the rest.

    :meth:`state_dict` holds only tensors and plain Python values, so a checkpoint of it loads with
    ``torch.load(weights_only=True)``.
    """

    module: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    order_generator: torch.Generator
    batch_generator: torch.Generator
    history: TrainingHistory
    epoch: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "model": {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "order_generator": self.order_generator.get_state(),
            "batch_generator": self.batch_generator.get_state(),
            "history": self.history.to_dict(),
            "extra": self.extra,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if (self.scheduler is None) != (state["scheduler"] is None):
            raise ValueError("the checkpoint's learning-rate schedule differs from this run's")
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.order_generator.set_state(state["order_generator"])
        self.batch_generator.set_state(state["batch_generator"])
        self.history = TrainingHistory.from_dict(state["history"])
        self.epoch = int(state["epoch"])
        self.extra = dict(state.get("extra") or {})


EpochHook = Callable[[TrainingState], "str | None"]
"""Called with the loop's state at the start or the end of each epoch; an end-of-epoch hook returns a reason to
stop training now (recorded as ``history.stop_reason``), or ``None`` to go on."""


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


def batch_seed(seed: int) -> int:
    """The seed of the batch loss's generator, derived from the run's seed and apart from the batch-order one."""
    return hashed_seed("modelsec", "batch-loss", int(seed))


def train_classifier(
    module: nn.Module,
    train: Dataset,
    *,
    config: TrainingConfig,
    test: Dataset | None = None,
    device: str = "cpu",
    progress: Progress | None = None,
    batch_loss: BatchLoss | None = None,
    on_epoch_start: Callable[[TrainingState], None] | None = None,
    on_epoch_end: EpochHook | None = None,
    resume: Mapping[str, Any] | None = None,
) -> TrainingHistory:
    """Train ``module`` in place on ``train``; report accuracy on ``test`` after each epoch if given.

    Adam, shuffled mini-batches, the schedule of ``config``. The override points make the same loop train with a
    defense: ``batch_loss`` (default: cross-entropy of the clean batch), ``on_epoch_start`` / ``on_epoch_end``
    hooks (the end hook may stop training and save a checkpoint of the state it is given), and ``resume``, a
    :meth:`TrainingState.state_dict` to continue from. With none of them this is standard training, unchanged.
    """
    progress = progress or NullProgress()
    loss_fn = batch_loss or cross_entropy_loss
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
    state = TrainingState(
        module=module,
        optimizer=opt,
        scheduler=schedule,
        order_generator=generator(config.seed),
        batch_generator=generator(batch_seed(config.seed)),
        history=TrainingHistory(config=asdict(config)),
    )
    if resume is not None:
        state.load_state_dict(resume)
        module.to(dev)
    history = state.history
    start = time.perf_counter() - history.seconds
    was_training = module.training
    for epoch in range(state.epoch, config.epochs):
        if history.stop_reason is not None:
            break
        if on_epoch_start is not None:
            on_epoch_start(state)
        module.train()
        order = torch.randperm(len(train), generator=state.order_generator)
        total_loss, correct = 0.0, 0
        with progress.task(f"epoch {epoch + 1}/{config.epochs}", total=len(train)) as advance:
            for i in range(0, len(order), config.batch_size):
                idx = order[i : i + config.batch_size]
                xb, yb = x[idx].to(dev), y[idx].to(dev)
                loss, logits = loss_fn(module, xb, yb, state.batch_generator)
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
        state.epoch = epoch + 1
        history.seconds = time.perf_counter() - start
        if on_epoch_end is not None:
            reason = on_epoch_end(state)
            if reason is not None:
                history.stop_reason = reason
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
    """``modelsec train``: :func:`modelsec.defenses.harden` with the ``standard`` defense and ``config``'s knobs,
    recorded as plain training. Saves safetensors weights whose header records the architecture, input shape,
    classes, bounds, data split and recipe (so ``modelsec audit --model OUT`` needs no other flags), plus the same
    with the training history as ``OUT.json`` (:meth:`~modelsec.models.card.ModelCard.as_plain_training`: no
    defense, no run record, no checkpoint). Returns what ``OUT.json`` holds."""
    from modelsec.defenses.harden import train_and_record
    from modelsec.defenses.standard import Standard, StandardConfig

    card = train_and_record(
        Standard(StandardConfig(**asdict(config))),
        data=data,
        arch=arch,
        out=out,
        split_seed=split_seed,
        members=members,
        data_dir=data_dir,
        label_column=label_column,
        bounds=bounds,
        device=device,
        progress=progress,
        overwrite=overwrite,
        plain=True,
    )
    return card.to_provenance()


def output_paths(out: Path) -> tuple[Path, Path]:
    """The weights file and the provenance JSON beside it (``OUT.json``)."""
    return out, out.with_name(out.name + ".json")


def check_outputs(out: Path, *, overwrite: bool) -> None:
    """Refuse to replace an existing weights file or its JSON unless ``overwrite``, and an output that cannot be
    written (checked now, before any training)."""
    for path in output_paths(out):
        if path.exists() and not overwrite:
            raise ConfigError(f"{path} exists; pass --overwrite to replace it")
    check_writable_file(out)


def check_run_options(*, members: int | None, device: str, split_seed: int = 0) -> None:
    """User errors in the options every training command shares, raised before any data is loaded."""
    if members is not None and members < 1:
        raise ConfigError(f"--members must be >= 1, got {members}")
    check_seed(split_seed, "--split-seed", limit=SPLIT_SEED_LIMIT)
    check_device(device)


def training_set(splits: Splits, members: int | None) -> Dataset:
    """The members split, or its first ``members`` records."""
    train = splits.members
    if members is not None:
        train = train.subset(np.arange(min(members, len(train))))
    return train


def save_model(module: nn.Module, out: Path, card: ModelCard) -> None:
    """Write ``module``'s weights as safetensors with the card's header (atomically: a temporary file renamed into
    place) and the card's provenance as ``OUT.json`` (:class:`~modelsec.models.card.ModelCard`)."""
    from modelsec.models.torch import save_safetensors

    weights = output_paths(out)[0]
    weights.parent.mkdir(parents=True, exist_ok=True)
    tmp = weights.with_name(weights.name + ".tmp")
    save_safetensors(module.cpu(), tmp, card.to_header())
    tmp.replace(weights)
    write_provenance(out, card)


def write_provenance(out: Path, card: ModelCard) -> None:
    """Write the card's provenance as ``OUT.json`` (atomically)."""
    sidecar = output_paths(out)[1]
    tmp_json = sidecar.with_name(sidecar.name + ".tmp")
    tmp_json.write_text(json.dumps(card.to_provenance(), indent=2) + "\n", encoding="utf-8")
    tmp_json.replace(sidecar)
