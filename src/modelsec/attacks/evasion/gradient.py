"""Iterative gradient-ascent attacks on the loss, written once (FGSM, BIM and PGD differ only in defaults).

Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial Attacks": projected gradient ascent on
the loss inside the eps-ball, from a random start, with restarts. Per-sample early stopping: a sample whose
current iterate is already misclassified is frozen there and costs no further forward or backward passes, and a
restart runs only on the samples that every earlier restart failed to break.

Cost (:mod:`modelsec.attacks.cost`, the gradient-step floor): a step evaluates the loss and its gradient together,
so the step that first sees a sample misclassified spends one backward pass the floor does not count; with
``steps`` steps and no sample broken, each sample costs ``steps + 1`` forward passes (the last scores the final
iterate) and ``steps`` backward passes (times ``eot_samples``), exactly the floor.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

from modelsec.attacks import cost
from modelsec.attacks.base import AttackBatch, EvasionAttack
from modelsec.attacks.gradients import loss_and_gradient
from modelsec.attacks.losses import LOSSES, attack_loss
from modelsec.core import progress
from modelsec.core.resume import resumable


@dataclass(frozen=True, kw_only=True)
class GradientAttack(EvasionAttack):
    """Shared hyper-parameters and loop.

    Args:
        steps: gradient steps per restart.
        rel_step_size: step size as a fraction of epsilon; None means 2.5 / steps (Madry et al. 2018).
        step_size: absolute step size (overrides ``rel_step_size``).
        random_start: start from a uniformly random point of the eps-ball.
        restarts: independent runs; each sample keeps the first run that breaks it.
        loss: "ce" (cross-entropy) or "margin" (Carlini-Wagner logit margin).
        early_stop: freeze samples as soon as they are misclassified.
        eot_samples: gradients averaged over this many passes (EoT, for randomised models).
    """

    steps: int = 20
    rel_step_size: float | None = None
    step_size: float | None = None
    random_start: bool = True
    restarts: int = 1
    loss: str = "ce"
    early_stop: bool = True
    eot_samples: int = 1

    def __post_init__(self) -> None:
        self.check_counts("steps", "restarts", "eot_samples")
        self.check_finite("step_size", "rel_step_size", optional=True)
        self.check_choice("loss", LOSSES)

    def run(self, batch: AttackBatch) -> torch.Tensor:
        x = batch.x
        eps = batch.threat.eps
        rel = self.rel_step_size if self.rel_step_size is not None else 2.5 / self.steps
        step = self.step_size if self.step_size is not None else rel * eps
        with progress.stage() as later, resumable("gradient.restarts") as frame:
            if frame.restored is None:
                best = x.clone()
                remaining = torch.arange(x.shape[0], device=x.device)  # samples no restart has broken yet
            else:
                saved = frame.restored_on(x.device)
                best, remaining = saved["best"], saved["remaining"]
            frame.capture(
                lambda: {"best": best, "remaining": remaining}, where=lambda r: f"restart {r + 1}/{self.restarts}"
            )
            for r in frame.steps(0, self.restarts):
                if remaining.numel() == 0:
                    break
                later.after = partial(_passes, self.restarts - r - 1, 2 * self.steps * self.eot_samples + 1)
                xa, broken = self._steps(batch, remaining, step)
                best[remaining] = xa
                remaining = remaining[~broken]
        return best

    def _steps(self, batch: AttackBatch, rows: torch.Tensor, step: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One run on the samples ``rows`` of the batch: the iterates and which samples were misclassified at
        some step."""
        classifier, ball = batch.classifier, batch.ball
        xs, ys = batch.x[rows], batch.y[rows]
        loss_fn = partial(attack_loss, kind=self.loss)
        with resumable("gradient.steps") as frame:
            if frame.restored is None:
                xa = ball.random_start(xs, batch.generator) if self.random_start else xs.clone()
                active = torch.arange(xs.shape[0], device=xs.device)
                broken = torch.zeros(xs.shape[0], dtype=torch.bool, device=xs.device)
                seen = broken.clone()  # misclassified at some iterate so far (for the floor; ``broken`` early-stops)
            else:
                saved = frame.restored_on(xs.device)
                xa, active, broken = saved["xa"], saved["active"], saved["broken"]
                seen = saved.get("seen", broken.clone())
            frame.capture(
                lambda: {"xa": xa, "active": active, "broken": broken, "seen": seen},
                where=lambda k: f"step {k + 1}/{self.steps}",
            )
            for k in frame.steps(0, self.steps):
                progress.standing(active.numel(), 2 * (self.steps - k) * self.eot_samples)  # the time left
                _, logits, grad = loss_and_gradient(
                    classifier, xa[active], ys[active], loss_fn, eot_samples=self.eot_samples
                )
                wrong = logits.argmax(dim=1) != ys[active]
                fresh = ~seen[active]
                cost.need(
                    forward=int(fresh.sum()) * self.eot_samples, backward=int((fresh & ~wrong).sum()) * self.eot_samples
                )
                seen[active[wrong]] = True
                if self.early_stop:
                    broken[active[wrong]] = True
                    keep = ~wrong
                else:
                    keep = torch.ones(active.shape[0], dtype=torch.bool, device=xs.device)
                active, grad = active[keep], grad[keep]
                if active.numel() == 0:
                    break
                xa[active] = ball.ascent_step(xs[active], xa[active], grad, step)
        if active.numel():
            cost.need(forward=int((~seen[active]).sum()))
            with torch.no_grad():
                broken[active] |= classifier.logits(xa[active]).argmax(dim=1) != ys[active]
        return xa, broken


def _passes(runs: int, each: int, standing: int) -> float:
    """Progress estimate: ``runs`` more runs of ``each`` passes on the ``standing`` samples."""
    return float(runs * each * standing)
