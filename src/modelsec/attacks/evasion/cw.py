"""The Carlini & Wagner L2 attack (Carlini & Wagner 2017, "Towards Evaluating the Robustness of Neural Networks").

Threat model: white-box (input gradients), untargeted, L2 only. A minimum-norm attack: it ignores eps and returns
the smallest adversarial point it found; the base class verifies that raw point (``EvasionResult.min_distance``)
and projects it onto the eps-ball for the fixed-eps result.

For each sample it minimises ``||x' - x||_2^2 + c * max(z_y(x') - max_{j != y} z_j(x'), -kappa)`` with Adam over
``w``, where ``x' = mid + half * tanh(w)`` maps any ``w`` into the classifier's bounds ``[mid - half, mid + half]``
(the change of variables of the paper: no clipping, no projection). A binary search over the constant ``c``, per
sample, looks for the smallest ``c`` that still gives an adversarial point: ``c`` grows tenfold while no run has
found one, and is bisected between the largest failing and the smallest succeeding ``c`` once one has. Every
iterate that is adversarial (logit margin below ``-kappa``) and closer than the sample's best so far becomes its
answer. Each ``c`` starts again from ``x`` with fresh Adam moments.

Defaults: the paper's 9 binary-search steps, Adam with learning rate 0.01 and ``kappa = 0``, but 100 Adam steps
instead of 10,000 (the paper's cost is impractical for an audit) and so a larger initial constant, ``c = 0.01``
instead of 0.001, so that fewer search steps go to growing ``c``. The paper's batch-level "abort early" is left
out, so that a sample's result does not depend on the other samples in its batch. More ``steps`` give smaller
distances. With few steps, input values on the bounds barely move: ``w`` starts deep in ``tanh``'s saturation and
Adam moves it by about ``lr`` a step (on Fashion-MNIST, where over half the pixels are 0, 100 steps leave them
untouched and DeepFool finds smaller L2 distances; 1,000 steps use them and beat DeepFool).

``lr_schedule="cosine"`` (not in the paper) anneals the learning rate to 0 within each run, so that the run
settles on the boundary instead of oscillating around it; a ``c`` then counts as large enough when the run *ends*
adversarial (with a constant rate, as in the paper, when any iterate is: a first step that overshoots a nearby
boundary then ends the search for ``c`` with that crude point). It pins distances on smooth, nearly linear models
(on the 200 points of the test suite's linear model, 150 steps x 6 constants come within 0.5% of the closed-form
distance everywhere; the defaults are more than 1% off on a third of them, up to 93%), but it moves less far in
the same number of steps, so with 100 steps it breaks fewer samples of an image model than the constant rate.

Cost (:mod:`modelsec.attacks.cost`): each Adam step costs one forward and one backward pass per sample it runs on.
By default every sample runs every step of every constant (the smallest distance is the answer). At a fixed eps
(``AttackBatch.stop_at_eps``, which the audit's chain sets when it does not need this run's distances) a sample
stops as soon as it has an adversarial point inside the ball, and later constants skip it: which samples break is
the same, since an adversarial point inside the ball stays the answer or gives way to a closer one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import torch
from torch.nn import functional

from modelsec.attacks import cost
from modelsec.attacks.base import AttackBatch, EvasionAttack
from modelsec.attacks.evasion.registry import EVASION_ATTACKS
from modelsec.attacks.gradients import input_gradient
from modelsec.core import progress
from modelsec.core.resume import resumable
from modelsec.models.base import Classifier

# Keeps atanh finite for inputs on the bounds (the paper's 0.999999).
_ATANH_LIMIT = 1 - 1e-6
LR_SCHEDULES = ("constant", "cosine")
# Adam's usual constants (those of the paper's code).
_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8
# The constant is bisected once an upper bound is known; until then it grows tenfold.
_GROWTH = 10.0


@EVASION_ATTACKS.register("cw-l2")
@dataclass(frozen=True, kw_only=True)
class CarliniWagnerL2(EvasionAttack):
    """Carlini & Wagner's L2 attack, batched; deterministic (it draws no random numbers).

    Args:
        steps: Adam steps for each value of the constant ``c``.
        binary_search_steps: values of ``c`` tried per sample (the cost is ``steps * binary_search_steps``
            forward and backward passes).
        initial_const: the first ``c``.
        lr: Adam's learning rate, in the tanh space (an input step is at most about ``lr * (high - low) / 2``).
        confidence: ``kappa``, the logit margin an adversarial point must have (0: any misclassification).
        lr_schedule: "constant" (the paper) or "cosine" (annealed within each run; see the module docstring).
    """

    name = "cw-l2"
    minimum_norm = True
    supported_norms = ("l2",)
    test_params: ClassVar[dict[str, Any]] = {"steps": 20, "binary_search_steps": 3}

    steps: int = 100
    binary_search_steps: int = 9
    initial_const: float = 1e-2
    lr: float = 0.01
    confidence: float = 0.0
    lr_schedule: str = "constant"

    def __post_init__(self) -> None:
        self.check_counts("steps", "binary_search_steps")
        self.check_finite("initial_const", "lr")
        self.check_finite("confidence", zero=True)
        self.check_choice("lr_schedule", LR_SCHEDULES)

    def run(self, batch: AttackBatch) -> torch.Tensor:
        classifier, x, y = batch.classifier, batch.x, batch.y
        low, high = classifier.bounds
        mid, half = (high + low) / 2, (high - low) / 2
        n = x.shape[0]
        w0 = torch.atanh(((x - mid) / half).clamp(-_ATANH_LIMIT, _ATANH_LIMIT))
        is_label = functional.one_hot(y, classifier.num_classes).bool()
        # at a fixed eps, a sample with an adversarial point inside the ball is done (squared distance, with slack)
        done_d2 = (batch.threat.eps * (1 + 1e-6)) ** 2 if batch.stop_at_eps else -math.inf
        # deterministic: no random draws, only the search to keep
        with progress.stage() as later, resumable("cw.constants") as frame:
            if frame.restored is None:
                const = torch.full((n,), self.initial_const, dtype=x.dtype, device=x.device)
                lower = torch.zeros_like(const)
                upper = torch.full_like(const, math.inf)
                best = x.clone()
                best_d2 = torch.full_like(const, math.inf)
            else:
                saved = frame.restored_on(x.device)
                const, lower, upper = saved["const"], saved["lower"], saved["upper"]
                best, best_d2 = saved["best"], saved["best_d2"]
            frame.capture(
                lambda: {
                    "const": const,
                    "lower": lower,
                    "upper": upper,
                    "best": best,
                    "best_d2": best_d2,
                },
                where=lambda b: f"constant {b + 1}/{self.binary_search_steps}",
            )
            for b in frame.steps(0, self.binary_search_steps):
                if not bool((best_d2 > done_d2).any()):
                    break
                later.after = partial(_later, (self.binary_search_steps - b - 1) * (2 * self.steps + 1))
                # the run keeps ``best`` and ``best_d2`` up to date in place (the frame above saves their values)
                enough = self._minimise(classifier, x, y, w0, mid, half, is_label, const, best, best_d2, done_d2)
                upper = torch.where(enough, torch.minimum(upper, const), upper)
                lower = torch.where(enough, lower, torch.maximum(lower, const))
                const = torch.where(torch.isfinite(upper), (lower + upper) / 2, const * _GROWTH)
        return best

    def _minimise(
        self,
        classifier: Classifier,
        x: torch.Tensor,
        y: torch.Tensor,
        w0: torch.Tensor,
        mid: float,
        half: float,
        is_label: torch.Tensor,
        const: torch.Tensor,
        best: torch.Tensor,
        best_d2: torch.Tensor,
        done_d2: float = -math.inf,
    ) -> torch.Tensor:
        """Adam on the objective for one constant per sample, from ``x``; updates ``best`` and ``best_d2`` in place
        and returns whether ``c`` was large enough (any adversarial iterate, or the final one when annealed). A
        sample whose ``best_d2`` is at most ``done_d2`` is done: it is not run (or no longer)."""
        with resumable("cw.steps") as frame:
            if frame.restored is None:
                w = w0.clone()
                m, v = torch.zeros_like(w0), torch.zeros_like(w0)  # Adam's moment estimates, reset for every c
                found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
                last = torch.zeros_like(found)  # the last iterate scored was adversarial
                live = (best_d2 > done_d2).nonzero().flatten()  # the samples still run
            else:
                saved = frame.restored_on(x.device)
                w, m, v, found = saved["w"], saved["m"], saved["v"], saved["found"]
                last = saved.get("last", torch.zeros_like(found))
                live = saved.get("live", torch.arange(x.shape[0], device=x.device))
                best.copy_(saved["best"])
                best_d2.copy_(saved["best_d2"])
            frame.capture(
                lambda: {
                    "w": w,
                    "m": m,
                    "v": v,
                    "found": found,
                    "last": last,
                    "live": live,
                    "best": best,
                    "best_d2": best_d2,
                },
                where=lambda step: f"step {step + 1}/{self.steps}",
            )
            for step in frame.steps(0, self.steps + 1):  # the last pass only scores the final iterate
                progress.standing(live.numel(), 2 * (self.steps - step) + 1)  # the time left: passes per step
                if live.numel() == 0:
                    break
                wl = w[live].detach().requires_grad_(step < self.steps)
                xa = mid + half * torch.tanh(wl)
                z = classifier.logits(xa)
                yl = y[live]
                margin = z.gather(1, yl[:, None]).squeeze(1) - z.masked_fill(is_label[live], -math.inf).amax(dim=1)
                d2 = (xa - x[live]).flatten(1).pow(2).sum(dim=1)
                with torch.no_grad():
                    adv = margin < -self.confidence
                    better = adv & (d2 < best_d2[live])
                    best[live[better]] = xa[better]
                    best_d2[live] = torch.where(better, d2, best_d2[live])
                    found[live[adv]] = True
                    last[live] = adv
                    running = best_d2[live] > done_d2  # not done by this step
                cost.need(forward=live.numel(), backward=int(running.sum()) if step < self.steps else 0)
                if step == self.steps:
                    break
                loss = d2 + const[live] * margin.clamp_min(-self.confidence)
                grad = input_gradient(classifier, loss.sum(), wl)
                ml, vl = m[live], v[live]
                w[live] = wl.detach() - self._adam_step(grad, ml, vl, step)
                m[live], v[live] = ml, vl
                live = live[running]
        # was c large enough? any adversarial iterate says so (the paper); an annealed run, the final one
        return last if self.lr_schedule == "cosine" else found

    def _adam_step(self, grad: torch.Tensor, m: torch.Tensor, v: torch.Tensor, step: int) -> torch.Tensor:
        """Adam's update (Kingma & Ba 2015, "Adam: A Method for Stochastic Optimization") for ``grad``, with
        the moments ``m`` and ``v`` updated in place; ``step`` counts from 0."""
        beta1, beta2 = _ADAM_BETAS
        m.mul_(beta1).add_(grad, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        lr = self.lr
        if self.lr_schedule == "cosine":
            lr *= (1 + math.cos(math.pi * step / self.steps)) / 2
        m_hat = m / (1 - beta1 ** (step + 1))
        v_hat = v / (1 - beta2 ** (step + 1))
        return lr * m_hat / (v_hat.sqrt() + _ADAM_EPS)


def _later(passes: int, standing: int) -> float:
    """Progress estimate: the later constants' ``passes`` per sample on the ``standing`` samples."""
    return float(passes * standing)
