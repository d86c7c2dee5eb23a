"""The quick preset's first attack against plain PGD on the bundled model (modelsec only, no peer).

Same 1000 Fashion-MNIST test images as robustness_vs_art.py (first 1000 of a seed-0 permutation), L-inf eps 0.1,
one torch thread. Prints robust accuracy and seconds per attack configuration.

    .venv/bin/python benchmarks/quick_vs_pgd.py
"""

from __future__ import annotations

import time

import numpy as np
import torch

from modelsec.attacks.base import EvasionAttack, ThreatModel
from modelsec.attacks.evasion import APGD, PGD
from modelsec.core.seeding import generator
from modelsec.data import load_splits
from modelsec.models import load_model


def main() -> None:
    torch.set_num_threads(1)
    clf = load_model(None).classifier
    splits = load_splits("fashion-mnist")
    idx = np.random.default_rng(0).permutation(len(splits.nonmembers))[:1000]
    x = torch.from_numpy(splits.nonmembers.x[idx])
    y = torch.from_numpy(splits.nonmembers.y[idx])
    configs: list[EvasionAttack] = [
        PGD(steps=10),
        PGD(steps=20),
        PGD(steps=20, restarts=3),
        APGD(steps=20),
        APGD(steps=20, restarts=3),
        APGD(steps=50, restarts=2),
    ]
    print("| attack | params | robust accuracy | seconds |")
    print("| --- | --- | --- | --- |")
    for attack in configs:
        start = time.perf_counter()
        res = attack(clf, x, y, ThreatModel("linf", 0.1), generator=generator(0))
        steps, restarts = attack.params()["steps"], attack.params()["restarts"]
        print(f"| {attack.label} | {steps} steps x {restarts} | {res.robust_accuracy:.1%} | "
              f"{time.perf_counter() - start:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
