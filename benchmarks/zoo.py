"""The benchmark model zoo (issue 16): Fashion-MNIST and digits classifiers of different kinds, so that every
robustness benchmark runs on many models and reports its worst ratio, not its best.

Each entry names its data set, architecture, training (a registered modelsec defense and its options), the members
it trains on and its seed. :func:`build` trains a model once and caches it under ``benchmarks/models/`` (not
committed) as ``zoo-<name>.safetensors`` with its card ``zoo-<name>.json`` (the entry, clean test accuracy,
training seconds and history, versions); a later call loads it, and retrains only when the entry changed.

The kinds, on both data sets unless said otherwise:

- ``mlp``: modelsec's ``mlp`` (256-128 ReLU), standard training;
- ``cnn``: modelsec's ``small-cnn`` (conv32-conv64-fc128), standard training;
- ``wide-bn``: a wider CNN with BatchNorm (conv64-BN-conv128-BN-fc256, local to this file);
- ``resnet``: a small residual net (He et al. 2016, "Deep Residual Learning for Image Recognition"; a 16-channel
  stem, three basic blocks of 16 / 32 / 64 channels, the last two stride 2, global average pooling; local);
- ``pgd-at``: small-cnn, PGD adversarial training (Madry et al. 2018), 7 steps at the benchmark's eps;
- ``trades``: small-cnn, TRADES (Zhang et al. 2019), beta 6, 10 steps;
- ``fgsm-rs``: small-cnn, FGSM with a random start (Wong, Rice & Kolter 2020, "Fast is better than free");
- ``distilled``: small-cnn, defensive distillation at T=100 (Papernot et al. 2016): gradient masking by a saturated
  softmax (Carlini & Wagner 2017);
- ``quantised``: small-cnn behind an input layer that rounds every pixel to 4 levels (a "thermometer/bit-depth"
  style input transformation, Xu, Evans & Qi 2018, "Feature Squeezing"): its input gradient is zero everywhere,
  so gradient attacks see nothing (Athalye, Carlini & Wagner 2018, "Obfuscated Gradients");
- ``n2000`` (Fashion-MNIST only; digits has about 900 members in all): small-cnn trained on 2,000 records for 30
  epochs, an overfit model.

Threat model of the zoo's benchmarks: white-box, untargeted, L-inf, inputs in [0, 1]; eps 0.1 on Fashion-MNIST (the
project's benchmarks' eps) and on digits (8x8 pixels in steps of 1/16, so eps 0.1 is 1.6 grey levels; there the
undefended digits models keep 50-60% robust accuracy under PGD-20 and the adversarially trained ones 72-78%, a middle
range where a weaker attack shows; at 0.2 ``quick`` leaves 0.2% of the MLP's and 4.7% of the CNN's test images, at
0.05 about 83%). Adversarial training uses that eps.

Sizes: digits models train on all 898 members (2-30 s each on one core). The Fashion-MNIST ones are as small as still
meaningful on the shared 2-core machine: the first 10,000 members, 4 epochs for the standard ones (small-cnn: about
84% clean accuracy) and 2 epochs for the adversarially trained ones (each PGD-AT step costs 8 passes, TRADES' 12);
their training seconds are in each card and printed by ``--list``. Distillation trains at lr 1e-2 (at the default
1e-3 the T=100 student of the digits reached 74% where the others reach 95%). Every digits model takes its inputs as
1x8x8 images, except the MLP (64 features).

    PYTHONPATH=src .venv/bin/python benchmarks/zoo.py --list
    PYTHONPATH=src nice -n 10 .venv/bin/python benchmarks/zoo.py --build digits-mlp,digits-cnn --threads 1
    PYTHONPATH=src nice -n 10 .venv/bin/python benchmarks/zoo.py --build all --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import modelsec
from modelsec.core.seeding import seeded
from modelsec.data import load_splits
from modelsec.data.dataset import Dataset, Splits
from modelsec.defenses import make_defense
from modelsec.models.base import Classifier, eval_mode
from modelsec.models.torch import load_state_dict_into, read_safetensors, save_safetensors
from modelsec.models.zoo import build_architecture

HERE = Path(__file__).resolve().parent
MODELS_DIR = HERE / "models"
EPS = {"fashion-mnist": 0.1, "digits": 0.1}
"""The L-inf eps of the zoo's benchmarks and of its adversarial training, per data set (see the module docstring)."""
DIGITS_IMAGE = (1, 8, 8)
QUANTISE_LEVELS = 4


# -- architectures local to the benchmark ---------------------------------------------------------------------------


class QuantiseInputs(nn.Module):
    """Rounds every input in [0, 1] to the nearest of ``levels`` evenly spaced values. ``torch.round`` has a zero
    derivative, so the model's input gradient is zero everywhere (obfuscated gradients, Athalye et al. 2018)."""

    def __init__(self, levels: int) -> None:
        super().__init__()
        if levels < 2:
            raise ValueError(f"levels must be >= 2, got {levels}")
        self.levels = levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = self.levels - 1
        return torch.round(x.clamp(0.0, 1.0) * steps) / steps

    def extra_repr(self) -> str:
        return f"levels={self.levels}"


def wide_bn_cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """conv64-BN-pool, conv128-BN-pool, fc256: small-cnn at twice the width, with BatchNorm (about 4x its
    multiply-adds at 28x28)."""
    c, h, w = input_shape
    return nn.Sequential(
        nn.Conv2d(c, 64, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 128, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(128),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(128 * (h // 4) * (w // 4), 256),
        nn.BatchNorm1d(256),
        nn.ReLU(),
        nn.Linear(256, num_classes),
    )


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 conv-BN, when the shape changes) shortcut, ReLU after the
    sum (He et al. 2016)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def small_resnet(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A 7-layer residual net: 3x3 stem of 16 channels, basic blocks of 16, 32 (stride 2) and 64 (stride 2)
    channels, global average pooling, a linear layer (about 2x small-cnn's multiply-adds at 28x28)."""
    c = input_shape[0]
    return nn.Sequential(
        nn.Conv2d(c, 16, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        BasicBlock(16, 16, 1),
        BasicBlock(16, 32, 2),
        BasicBlock(32, 64, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, num_classes),
    )


LOCAL_ARCHITECTURES = {"wide-bn-cnn": wide_bn_cnn, "small-resnet": small_resnet}


def make_module(arch: str, input_shape: tuple[int, ...], num_classes: int, quantise_levels: int | None) -> nn.Module:
    """A freshly initialised module of ``arch`` (a local architecture or a modelsec one), behind input rounding to
    ``quantise_levels`` levels if given. Initialised from torch's global generator: call under ``seeded``."""
    local = LOCAL_ARCHITECTURES.get(arch)
    module = local(input_shape, num_classes) if local else build_architecture(arch, input_shape, num_classes)
    if quantise_levels is not None:
        module = nn.Sequential(QuantiseInputs(quantise_levels), module)
    return module


# -- the registry --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZooEntry:
    """One zoo model: how it is built. ``defense`` and ``config`` go to :func:`modelsec.defenses.make_defense`;
    ``members``: the first N records of the members split (None: all); ``images``: digits as 1x8x8 images."""

    name: str
    data: str
    arch: str
    kind: str
    defense: str = "standard"
    config: dict[str, Any] = field(default_factory=dict)
    members: int | None = None
    quantise_levels: int | None = None
    seed: int = 0

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """The shape the model takes, when it differs from the data set's own (digits as images)."""
        if self.data == "digits" and self.arch != "mlp":
            return DIGITS_IMAGE
        return None

    def spec(self) -> dict[str, Any]:
        """Everything that determines the trained weights (with the library's version: a change in training code
        shows in the card, though it does not by itself invalidate the cache)."""
        return dataclasses.asdict(self)

    def spec_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.spec(), sort_keys=True).encode()).hexdigest()[:16]


def _entries() -> dict[str, ZooEntry]:
    out: list[ZooEntry] = []
    for data, prefix in (("digits", "digits"), ("fashion-mnist", "fmnist")):
        digits = data == "digits"
        eps = EPS[data]
        # digits: all ~900 members, and enough epochs for a few hundred steps; Fashion-MNIST: small but meaningful
        members = None if digits else 10_000
        std = {"epochs": 30 if digits else 4, "batch_size": 64 if digits else 128}
        adv = {"epochs": 30 if digits else 2, "batch_size": 64 if digits else 128, "eps": eps}
        out += [
            ZooEntry(f"{prefix}-mlp", data, "mlp", "MLP", config=std, members=members),
            ZooEntry(f"{prefix}-cnn", data, "small-cnn", "small CNN", config=std, members=members),
            ZooEntry(f"{prefix}-wide-bn", data, "wide-bn-cnn", "wider CNN with BatchNorm", config=std, members=members),
            ZooEntry(f"{prefix}-resnet", data, "small-resnet", "residual net", config=std, members=members),
            ZooEntry(f"{prefix}-pgd-at", data, "small-cnn", "PGD-AT", "pgd-at", adv, members),
            ZooEntry(f"{prefix}-trades", data, "small-cnn", "TRADES", "trades", adv, members),
            ZooEntry(f"{prefix}-fgsm-rs", data, "small-cnn", "FGSM-RS", "fgsm-rs", adv, members),
            ZooEntry(
                f"{prefix}-distilled",
                data,
                "small-cnn",
                "defensive distillation (T=100)",
                "distillation",
                {**std, "lr": 1e-2, "temperature": 100.0},  # at 1e-3 the T=100 student lags (74% on digits)
                members,
            ),
            ZooEntry(
                f"{prefix}-quantised",
                data,
                "small-cnn",
                f"input quantised to {QUANTISE_LEVELS} levels",
                config=std,
                members=members,
                quantise_levels=QUANTISE_LEVELS,
            ),
        ]
    out.append(
        ZooEntry(
            "fmnist-n2000",
            "fashion-mnist",
            "small-cnn",
            "trained on 2,000 records",
            config={"epochs": 30},
            members=2000,
        )
    )
    return {e.name: e for e in out}


ZOO: dict[str, ZooEntry] = _entries()


# -- building and loading ------------------------------------------------------------------------------------------


@dataclass
class ZooModel:
    """A built zoo model: its module (eval mode), the data (test images in the model's input shape) and its card."""

    entry: ZooEntry
    module: nn.Module
    splits: Splits
    card: dict[str, Any]

    @property
    def eps(self) -> float:
        return EPS[self.entry.data]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.splits.input_shape

    def classifier(self) -> Classifier:
        """The module as a modelsec white-box classifier (inputs in [0, 1])."""
        return Classifier(
            self.module,
            input_shape=self.input_shape,
            num_classes=self.splits.num_classes,
            bounds=self.splits.bounds,
            name=self.entry.name,
        )

    def test_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The test images (the non-members split), in the model's input shape."""
        test = self.splits.nonmembers
        return torch.from_numpy(test.x), torch.from_numpy(test.y)


def _reshaped(ds: Dataset, shape: tuple[int, ...] | None) -> Dataset:
    if shape is None:
        return ds
    return dataclasses.replace(ds, x=np.ascontiguousarray(ds.x.reshape(len(ds), *shape)))


def load_data(entry: ZooEntry) -> Splits:
    """The entry's data splits (seed 0, as every benchmark), inputs in the model's shape."""
    splits = load_splits(entry.data, seed=0)
    shape = entry.input_shape
    if shape is None:
        return splits
    return dataclasses.replace(
        splits,
        members=_reshaped(splits.members, shape),
        nonmembers=_reshaped(splits.nonmembers, shape),
        population=_reshaped(splits.population, shape),
        test=None if splits.test is None else _reshaped(splits.test, shape),
    )


def paths(name: str, models_dir: Path = MODELS_DIR) -> tuple[Path, Path]:
    """The weights file and the card of zoo model ``name``."""
    return models_dir / f"zoo-{name}.safetensors", models_dir / f"zoo-{name}.json"


@torch.no_grad()
def accuracy(module: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    with eval_mode(module):
        correct = sum(
            int((module(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
            for i in range(0, len(x), batch_size)
        )
    return correct / len(x)


def train(entry: ZooEntry, splits: Splits, weights: Path, card_path: Path) -> dict[str, Any]:
    """Train the entry's model, save its weights and card; returns the card."""
    train_set = splits.members
    if entry.members is not None:
        train_set = train_set.subset(np.arange(min(entry.members, len(train_set))))
    with seeded(entry.seed):
        module = make_module(entry.arch, splits.input_shape, splits.num_classes, entry.quantise_levels)
    defense = make_defense(entry.defense, {**entry.config, "seed": entry.seed})
    start = time.perf_counter()
    history = defense.fit(module, train_set, test=splits.nonmembers)
    seconds = time.perf_counter() - start
    module.eval()
    x, y = torch.from_numpy(splits.nonmembers.x), torch.from_numpy(splits.nonmembers.y)
    card = {
        "name": entry.name,
        "entry": entry.spec(),
        "spec_hash": entry.spec_hash(),
        "members_used": len(train_set),
        "input_shape": list(splits.input_shape),
        "eps": EPS[entry.data],
        "clean_accuracy": accuracy(module, x, y),
        "test_records": len(y),
        "training_seconds": seconds,
        "torch_threads": torch.get_num_threads(),
        "history": history.to_dict(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {"modelsec": modelsec.__version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    weights.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(module, weights, {"zoo": entry.name, "spec_hash": entry.spec_hash()})
    card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return card


def cached_card(entry: ZooEntry, models_dir: Path = MODELS_DIR) -> dict[str, Any] | None:
    """The card of the cached model, when its weights exist and were trained from this same entry."""
    weights, card_path = paths(entry.name, models_dir)
    if not (weights.exists() and card_path.exists()):
        return None
    card: dict[str, Any] = json.loads(card_path.read_text(encoding="utf-8"))
    return card if card.get("spec_hash") == entry.spec_hash() else None


def build(name: str, *, models_dir: Path = MODELS_DIR, retrain: bool = False) -> ZooModel:
    """Zoo model ``name``: loaded from ``models_dir`` when it was built from the same entry, else trained (and
    cached). Raises ``KeyError`` for an unknown name."""
    entry = ZOO[name]
    splits = load_data(entry)
    weights, card_path = paths(name, models_dir)
    card = None if retrain else cached_card(entry, models_dir)
    if card is None:
        card = train(entry, splits, weights, card_path)
    with seeded(entry.seed):
        module = make_module(entry.arch, splits.input_shape, splits.num_classes, entry.quantise_levels)
    state, _ = read_safetensors(weights)
    load_state_dict_into(module, state, str(weights))
    module.eval()
    return ZooModel(entry, module, splits, card)


def select(names: str) -> list[str]:
    """Zoo names from a comma-separated list; ``all``, ``digits`` and ``fmnist`` select groups."""
    out: list[str] = []
    for part in (p.strip() for p in names.split(",")):
        if not part:
            continue
        if part == "all":
            out += list(ZOO)
        elif part in ("digits", "fmnist"):
            out += [n for n in ZOO if n.startswith(part + "-")]
        elif part in ZOO:
            out.append(part)
        else:
            raise SystemExit(f"unknown zoo model {part!r}; known: all, digits, fmnist, {', '.join(ZOO)}")
    return list(dict.fromkeys(out))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--list", action="store_true", help="list the zoo: each entry and, when built, its card's numbers")
    p.add_argument("--build", metavar="NAMES", help="build (train or load) these: names, 'digits', 'fmnist' or 'all'")
    p.add_argument("--retrain", action="store_true", help="train again even when a cached model fits the entry")
    p.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.build:
        for name in select(args.build):
            cached = None if args.retrain else cached_card(ZOO[name], args.models_dir)
            print(f"{name}: {'loading' if cached else 'training'} ...", flush=True)
            model = build(name, models_dir=args.models_dir, retrain=args.retrain)
            c = model.card
            print(
                f"{name}: clean accuracy {c['clean_accuracy']:.3f} on {c['test_records']} test records, "
                f"trained in {c['training_seconds']:.0f} s on {c['members_used']} members",
                flush=True,
            )
    if args.list or not args.build:
        print("| model | data | kind | training | members | clean accuracy | training s |")
        print("| --- | --- | --- | --- | ---: | ---: | ---: |")
        for name, e in ZOO.items():
            c = cached_card(e, args.models_dir)
            acc = f"{c['clean_accuracy']:.3f}" if c else "not built"
            secs = f"{c['training_seconds']:.0f}" if c else "-"
            members = c["members_used"] if c else (e.members or "all")
            training = e.defense + "".join(f", {k} {v}" for k, v in e.config.items())
            print(f"| {name} | {e.data} | {e.kind} | {training} | {members} | {acc} | {secs} |")


if __name__ == "__main__":
    main()
