"""The evasion audit: clean accuracy, each attack at each epsilon, and the per-sample worst case.

Robust accuracy at an epsilon is the fraction of samples that every attack failed to break (AutoAttack's
per-sample worst case, Croce & Hein 2020). Epsilons are run in increasing order and an example that broke a
sample at a smaller epsilon also lies inside every larger ball, so that sample is not attacked again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from modelsec.attacks.base import EvasionAttack, ThreatModel
from modelsec.metrics import rate_with_ci
from modelsec.models.base import Classifier
from modelsec.progress import NullProgress, Progress
from modelsec.results import AttackRobustness, RobustnessResult, SanityFlag, eps_key


@dataclass
class RobustnessRun:
    """The typed result plus the per-sample arrays behind it."""

    result: RobustnessResult
    x: torch.Tensor
    y: torch.Tensor
    pred_clean: torch.Tensor
    x_adv: dict[float, torch.Tensor]  # eps -> worst-case adversarial inputs
    robust: dict[float, torch.Tensor]  # eps -> per-sample robust flags (worst case)
    pred_adv: dict[float, torch.Tensor]  # eps -> predictions on the worst-case adversarial inputs
    per_attack_robust: dict[tuple[str, float], torch.Tensor]

    def save_npz(self, path: str) -> None:
        """Write the clean inputs, labels and worst-case adversarial examples (no pickle)."""
        arrays: dict[str, np.ndarray] = {
            "x": self.x.numpy(),
            "y": self.y.numpy(),
            "pred_clean": self.pred_clean.numpy(),
            "eps": np.array(sorted(self.x_adv), dtype=np.float64),
        }
        for i, eps in enumerate(sorted(self.x_adv)):
            arrays[f"x_adv_{i}"] = self.x_adv[eps].numpy()
            arrays[f"robust_{i}"] = self.robust[eps].numpy()
            arrays[f"pred_adv_{i}"] = self.pred_adv[eps].numpy()
        np.savez_compressed(path, **arrays)  # type: ignore[arg-type]


def evaluate_robustness(
    classifier: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    attacks: list[EvasionAttack],
    eps: list[float],
    norm: str = "linf",
    generator: torch.Generator,
    progress: Progress | None = None,
) -> RobustnessRun:
    """Run every attack at every epsilon on ``(x, y)``; sanity checks are added by :mod:`modelsec.audits.sanity`."""
    progress = progress or NullProgress()
    eps_sorted = sorted({float(e) for e in eps})
    n = x.shape[0]
    pred_clean = classifier.predict(x)
    correct = (pred_clean == y).numpy()
    clean_acc, clean_ci = rate_with_ci(correct)

    entries: list[AttackRobustness] = []
    per_attack: dict[tuple[str, float], torch.Tensor] = {}
    worst_robust: dict[float, torch.Tensor] = {}
    worst_adv: dict[float, torch.Tensor] = {}
    carried_adv: dict[str, torch.Tensor] = {a.name: x.clone() for a in attacks}
    carried_robust: dict[str, torch.Tensor] = {a.name: pred_clean == y for a in attacks}
    for e in eps_sorted:
        threat = ThreatModel(norm=norm, eps=e)
        robust_all = pred_clean == y
        adv_all = x.clone()
        for attack in attacks:
            start = time.perf_counter()
            robust = carried_robust[attack.name].clone()
            adv = carried_adv[attack.name].clone()
            todo = robust.nonzero().flatten()
            if todo.numel():
                res = attack(classifier, x[todo], y[todo], threat, generator=generator, progress=progress)
                adv[todo] = res.x_adv
                robust[todo] = res.robust
            carried_robust[attack.name], carried_adv[attack.name] = robust, adv
            per_attack[(attack.name, e)] = robust
            rate, ci = rate_with_ci(robust.numpy())
            entries.append(
                AttackRobustness(
                    attack=attack.name,
                    norm=norm,
                    eps=e,
                    robust_accuracy=rate,
                    ci_low=ci.low,
                    ci_high=ci.high,
                    n=n,
                    seconds=time.perf_counter() - start,
                    params=attack.params(),
                )
            )
            newly_broken = robust_all & ~robust
            adv_all[newly_broken] = adv[newly_broken]
            keep = robust_all & robust
            adv_all[keep] = adv[keep]
            robust_all &= robust
        worst_robust[e] = robust_all
        worst_adv[e] = adv_all

    robust_accuracy: dict[str, float] = {}
    robust_ci = {}
    for e in eps_sorted:
        rate, ci = rate_with_ci(worst_robust[e].numpy())
        robust_accuracy[eps_key(e)] = rate
        robust_ci[eps_key(e)] = ci
    result = RobustnessResult(
        n=n,
        clean_accuracy=clean_acc,
        clean_ci=clean_ci,
        results=entries,
        robust_accuracy=robust_accuracy,
        robust_ci=robust_ci,
        flags=[],
        checks=[],
    )
    return RobustnessRun(
        result=result,
        x=x,
        y=y,
        pred_clean=pred_clean,
        x_adv=worst_adv,
        robust=worst_robust,
        pred_adv={e: classifier.predict(worst_adv[e]) for e in eps_sorted},
        per_attack_robust=per_attack,
    )


def with_checks(result: RobustnessResult, checks: list[str], flags: list[SanityFlag]) -> RobustnessResult:
    """A copy of ``result`` with the sanity checks that ran and the flags that fired."""
    from dataclasses import replace

    return replace(result, checks=checks, flags=flags)
