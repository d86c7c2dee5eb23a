"""Loss gradients for white-box attacks, with expectation over transformation (EoT) for randomised models.

EoT (Athalye, Engstrom, Ilyas & Kwok 2018, "Synthesizing Robust Adversarial Examples"; Athalye, Carlini & Wagner
2018): when the model is random (noise, random transforms in ``forward``), a single gradient is a noisy sample;
averaging the gradient of ``eot_samples`` forward/backward passes estimates the gradient of the expected loss.
Every gradient attack computes its gradients here, so EoT (and BPDA, which the Classifier applies to declared
non-differentiable preprocessing) reach every one of them.

Every input gradient an attack takes goes through :func:`input_gradient`, which counts the backward passes on the
classifier (``Classifier.gradient_queries``: one per input row, each EoT sample counted), so that an audit can say
what each attack spent (:mod:`modelsec.attacks.cost`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from modelsec.core.resume import replaying
from modelsec.models.base import Classifier

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def input_gradient(
    classifier: Classifier, output: torch.Tensor, inputs: torch.Tensor, *, retain_graph: bool = False
) -> torch.Tensor:
    """The gradient of the scalar ``output`` with respect to ``inputs`` (one row per sample, a leaf that requires
    gradients), counting ``len(inputs)`` backward passes on ``classifier``."""
    (grad,) = torch.autograd.grad(output, inputs, retain_graph=retain_graph)
    if not replaying():  # redone on the way back into a checkpoint: counted before it
        classifier.gradient_queries += int(inputs.shape[0])
    return grad


def loss_and_gradient(
    classifier: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    *,
    eot_samples: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample loss ``(n,)``, logits ``(n, k)`` and the gradient of the summed loss with respect to ``x``,
    each averaged over ``eot_samples`` passes (all detached)."""
    if eot_samples < 1:
        raise ValueError(f"eot_samples must be >= 1, got {eot_samples}")
    grad_sum = torch.zeros_like(x)
    loss_sum = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    logits_sum: torch.Tensor | None = None
    for _ in range(eot_samples):
        xg = x.detach().requires_grad_(True)
        logits = classifier.logits(xg)
        loss = loss_fn(logits, y)
        grad = input_gradient(classifier, loss.sum(), xg)
        grad_sum += grad.detach()
        loss_sum += loss.detach()
        logits_sum = logits.detach() if logits_sum is None else logits_sum + logits.detach()
    assert logits_sum is not None
    return loss_sum / eot_samples, logits_sum / eot_samples, grad_sum / eot_samples


def loss_only(
    classifier: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    *,
    eot_samples: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample loss ``(n,)`` and logits ``(n, k)`` as :func:`loss_and_gradient` computes them (the same
    average over ``eot_samples`` passes), without a backward pass: for an iterate whose gradient is never used."""
    if eot_samples < 1:
        raise ValueError(f"eot_samples must be >= 1, got {eot_samples}")
    loss_sum = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    logits_sum: torch.Tensor | None = None
    with torch.no_grad():
        for _ in range(eot_samples):
            logits = classifier.logits(x)
            loss_sum += loss_fn(logits, y)
            logits_sum = logits if logits_sum is None else logits_sum + logits
    assert logits_sum is not None
    return loss_sum / eot_samples, logits_sum / eot_samples
