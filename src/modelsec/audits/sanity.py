"""Sanity checks on a robustness evaluation, reported beside the numbers and able to change the verdict.

After Carlini et al. 2019, "On Evaluating Adversarial Robustness", and AutoAttack's runtime checks
(Croce & Hein 2020). Each check returns a :class:`SanityFlag` when it fires, ``None`` otherwise.
"""

from __future__ import annotations

import torch

from modelsec.attacks.base import ThreatModel
from modelsec.attacks.evasion.pgd import PGD
from modelsec.audits.robustness import RobustnessRun
from modelsec.models.base import Classifier
from modelsec.results import SanityFlag

CHECKS = (
    "probability-outputs",
    "randomness",
    "zero-gradients",
    "single-step-beats-iterative",
    "large-eps-not-broken",
)


def check_probability_outputs(classifier: Classifier, x: torch.Tensor) -> SanityFlag | None:
    """The model's outputs look like probabilities (in [0, 1], rows summing to 1) rather than logits:
    cross-entropy on them saturates and gradient attacks weaken."""
    out = classifier.predict_logits(x)
    if bool(((out >= 0) & (out <= 1)).all()) and bool(torch.allclose(out.sum(1), torch.ones(len(out)), atol=1e-3)):
        return SanityFlag(
            "probability-outputs",
            "the model outputs probabilities, not logits; gradient attacks on a softmax output are weak "
            "(remove the final softmax, or use a margin loss)",
        )
    return None


def check_randomness(classifier: Classifier, x: torch.Tensor) -> SanityFlag | None:
    """Two forward passes on the same inputs disagree: a randomised model needs EoT (Athalye et al. 2018)."""
    a, b = classifier.predict_logits(x), classifier.predict_logits(x)
    if not torch.allclose(a, b, rtol=1e-5, atol=1e-6):
        return SanityFlag(
            "randomness",
            "repeated forward passes give different outputs; a randomised defense needs expectation over "
            "transformation (EoT) to be evaluated",
        )
    return None


def check_zero_gradients(classifier: Classifier, x: torch.Tensor, y: torch.Tensor) -> SanityFlag | None:
    """More than 1% of samples have an all-zero input gradient: gradient masking or saturation."""
    xb, yb = x[:500].to(classifier.device), y[:500].to(classifier.device)
    grad = classifier.input_gradient(xb, yb)
    zero = (grad.flatten(1).abs().amax(dim=1) == 0).float().mean().item()
    if zero > 0.01:
        return SanityFlag(
            "zero-gradients",
            f"{zero:.1%} of samples have an all-zero input gradient: gradients are masked or the loss "
            "saturates; black-box attacks and a margin loss are needed",
        )
    return None


def check_single_step_beats_iterative(run: RobustnessRun, single: str, iterative: str) -> SanityFlag | None:
    """A single-step attack breaks samples that the iterative one does not (more than 1% of them)."""
    for (name, eps), robust_single in run.per_attack_robust.items():
        if name != single or (iterative, eps) not in run.per_attack_robust:
            continue
        robust_iter = run.per_attack_robust[(iterative, eps)]
        extra = int((~robust_single & robust_iter).sum())
        if extra > max(1, 0.01 * len(robust_iter)):
            return SanityFlag(
                "single-step-beats-iterative",
                f"{single} breaks {extra} samples that {iterative} does not at eps={eps:g}; the iterative "
                "attack is not converging (gradient masking, or too few steps)",
            )
    return None


def check_large_eps(
    classifier: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str,
    generator: torch.Generator,
    samples: int = 100,
) -> SanityFlag | None:
    """At a huge epsilon (half the input range) robust accuracy must be near 0; if PGD cannot get there,
    its gradients are not informative."""
    lo, hi = classifier.bounds
    eps = 0.5 * (hi - lo) if norm == "linf" else 0.5 * (hi - lo) * float(torch.tensor(x[0].numel()).sqrt())
    threat = ThreatModel(norm=norm, eps=eps)
    res = PGD(steps=20, restarts=1)(classifier, x[:samples], y[:samples], threat, generator=generator)
    if res.robust_accuracy > 0.05:
        return SanityFlag(
            "large-eps-not-broken",
            f"PGD leaves {res.robust_accuracy:.1%} of samples robust at eps={eps:g} (half the input range); "
            "at that size any input can be changed into another class, so the gradients mislead the attack",
        )
    return None


def run_checks(
    classifier: Classifier,
    run: RobustnessRun,
    norm: str,
    generator: torch.Generator,
) -> tuple[list[str], list[SanityFlag]]:
    """Run every check; return the names of the checks run and the flags that fired."""
    x, y = run.x, run.y
    flags = [
        check_probability_outputs(classifier, x[:200]),
        check_randomness(classifier, x[:200]),
        check_zero_gradients(classifier, x, y),
        check_single_step_beats_iterative(run, "fgsm", "pgd"),
        check_large_eps(classifier, x, y, norm, generator),
    ]
    return list(CHECKS), [f for f in flags if f is not None]
