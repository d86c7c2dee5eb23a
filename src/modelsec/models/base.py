"""The one model interface every attack and audit uses: :class:`Classifier`.

A Classifier maps inputs inside declared ``bounds`` (for example pixels in ``[0, 1]``) to logits over
``num_classes`` classes. It owns the device, eval mode and preprocessing, declares what it offers an attacker
(:class:`Capability`: white-box gradients, scores only, or labels only), and counts queries so black-box budgets
and reports stay honest. Nothing outside this class hard-codes a value range.
"""

from __future__ import annotations

import contextlib
import copy
import enum
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from modelsec.core.errors import DataError
from modelsec.results.audit import ONE_PASS_PREDICTION
from modelsec.stats.numerics import stable_cross_entropy


class Capability(enum.IntEnum):
    """What the model exposes, from least to most. An attack needing more than the model offers is skipped."""

    LABELS = 1  # decision-based: only the predicted label
    SCORES = 2  # score-based: logits / probabilities
    GRADIENTS = 3  # white-box: gradients of the logits with respect to the input


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode for the block and restore each one's own ``training`` flag afterwards
    (only the flags that were set are touched: an attack's thousands of forward passes on a model already in eval
    mode pay no attribute writes)."""
    training = [m for m in module.modules() if m.training]
    for m in training:  # set the flags directly: exported graphs refuse .eval() but are fixed anyway
        m.training = False
    try:
        yield module
    finally:
        for m in training:
            m.training = True


@contextlib.contextmanager
def frozen_parameters(module: nn.Module) -> Iterator[nn.Module]:
    """Stop the module's parameters from requiring gradients for the block, then restore each one's flag.

    A forward pass recorded with trainable parameters makes the backward pass compute (and the forward pass save
    what it needs for) every weight gradient, even when only the input gradient is asked for: on the small CNN
    this costs about a quarter of an attack step on the CPU. Without gradient recording (``torch.no_grad``) there
    is nothing to stop, and nothing is touched."""
    if not torch.is_grad_enabled():
        yield module
        return
    trainable = [p for p in module.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p in trainable:
            p.requires_grad_(True)


class Classifier:
    """A PyTorch classifier seen as a security target.

    Args:
        module: maps a float tensor of shape ``(n, *input_shape)`` to logits ``(n, num_classes)``.
        input_shape: the shape of one input, without the batch dimension.
        num_classes: number of classes.
        bounds: the valid input range ``(low, high)``; attacks clip to it.
        capability: what the model exposes (white-box by default for a local module).
        device: where the module runs ("cpu" or "cuda").
        batch_size: the batch size of batched inference and of attacks (default: 128 on the CPU, where it ran about
            15% faster than 256 for attacks on the small CNN, its activations staying in cache; 1024 on a GPU).
        name: a human-readable name for reports.
        preprocess: an input transformation applied before ``module`` (for example a defense's quantisation).
        preprocess_differentiable: declare ``False`` when ``preprocess`` has no useful gradient; gradients then
            pass through it as the identity (BPDA, Athalye, Carlini & Wagner 2018, "Obfuscated Gradients Give a
            False Sense of Security"), while the forward pass still applies it.
        votes: forward passes behind each prediction of :meth:`predict`. 1 (the default): the argmax of one pass.
            More, for a randomised model: the majority vote over that many passes, as randomized smoothing
            predicts (Cohen, Rosenfeld & Kolter 2019, "Certified Adversarial Robustness via Randomized
            Smoothing"); ties go to the class with the highest mean probability. Clean accuracy, the attacks'
            re-classification of every adversarial example and the membership attacks that use labels all
            go through :meth:`predict`, so they share this one definition. The audit sets it (see
            :meth:`with_votes`) when its randomness check fires.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        input_shape: tuple[int, ...],
        num_classes: int,
        bounds: tuple[float, float] = (0.0, 1.0),
        capability: Capability = Capability.GRADIENTS,
        device: str | torch.device = "cpu",
        batch_size: int | None = None,
        name: str = "model",
        preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
        preprocess_differentiable: bool = True,
        votes: int = 1,
    ) -> None:
        if bounds[0] >= bounds[1]:
            raise DataError(f"bounds must satisfy low < high, got {bounds}")
        if num_classes < 2:
            raise DataError(f"a classifier needs at least 2 classes, got {num_classes}")
        self.device = torch.device(device)
        self.module = module.to(self.device)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_classes = int(num_classes)
        self.bounds = (float(bounds[0]), float(bounds[1]))
        self.capability = capability
        if batch_size is None:
            batch_size = 128 if self.device.type == "cpu" else 1024
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        if votes < 1:
            raise DataError(f"votes must be >= 1, got {votes}")
        self.votes = int(votes)
        self.name = name
        self.preprocess = preprocess
        self.preprocess_differentiable = preprocess_differentiable
        self.queries = 0  # number of inputs sent through the model (forward passes)
        self.gradient_queries = 0  # inputs whose input gradient was computed (backward passes; EoT counts each)

    @property
    def uses_bpda(self) -> bool:
        """True when gradients pass straight through a declared non-differentiable preprocessing step."""
        if self.preprocess is None:
            return False
        # a composed preprocessing (modelsec.models.normalization) says whether a step inside it does
        return not self.preprocess_differentiable or bool(getattr(self.preprocess, "uses_bpda", False))

    @property
    def prediction_rule(self) -> str:
        """How :meth:`predict` turns forward passes into a label, in words (recorded in audit results)."""
        if self.votes == 1:
            return ONE_PASS_PREDICTION
        return f"majority vote over {self.votes} forward passes (ties: the highest mean probability)"

    def with_votes(self, votes: int) -> Classifier:
        """A copy of this classifier (the same module, its own query count) that predicts by majority vote over
        ``votes`` forward passes."""
        if votes < 1:
            raise DataError(f"votes must be >= 1, got {votes}")
        out = copy.copy(self)
        out.votes = int(votes)
        return out

    @contextlib.contextmanager
    def voting(self, votes: int) -> Iterator[Classifier]:
        """This classifier predicting by majority vote over ``votes`` passes for the block, then as before (the
        audit uses it, so that its query count and the caller's classifier stay one object)."""
        if votes < 1:
            raise DataError(f"votes must be >= 1, got {votes}")
        before = self.votes
        self.votes = int(votes)
        try:
            yield self
        finally:
            self.votes = before

    def __repr__(self) -> str:
        return (
            f"Classifier(name={self.name!r}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes}, bounds={self.bounds}, capability={self.capability.name})"
        )

    # -- inference ---------------------------------------------------------------------------------

    def check_inputs(self, x: torch.Tensor) -> None:
        """Raise :class:`DataError` when ``x`` does not have the declared per-input shape."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise DataError(
                f"inputs of shape {tuple(x.shape[1:])} do not match the model's input shape "
                f"{self.input_shape}; check that --data matches the model"
            )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of one batch, differentiable with respect to ``x`` only: the module runs in eval mode with its
        parameters frozen (the target is fixed; no weight gradients are built), and the caller's flags are
        restored afterwards."""
        self.check_inputs(x)
        self.queries += int(x.shape[0])
        x = x.to(self.device, dtype=torch.float32)
        if self.preprocess is not None:
            xp = self.preprocess(x)
            x = xp if self.preprocess_differentiable else x + (xp - x).detach()  # BPDA: identity backward
        with eval_mode(self.module), frozen_parameters(self.module):
            out = self.module(x)
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] != self.num_classes:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise DataError(f"the model returned {shape}; expected logits of shape (n, {self.num_classes})")
        return out

    @torch.no_grad()
    def predict_logits(self, x: torch.Tensor | np.ndarray, batch_size: int | None = None) -> torch.Tensor:
        """Logits for any number of inputs, in batches, without gradients; returned on the CPU."""
        xt = torch.as_tensor(x, dtype=torch.float32)
        bs = batch_size or self.batch_size
        outs = [self.logits(xt[i : i + bs]).float().cpu() for i in range(0, xt.shape[0], bs)]
        if not outs:
            return torch.empty(0, self.num_classes)
        return torch.cat(outs)

    def predict(self, x: torch.Tensor | np.ndarray, batch_size: int | None = None) -> torch.Tensor:
        """Predicted labels (int64, CPU): the argmax of one forward pass, or with ``votes`` > 1 the majority vote
        over that many passes, ties broken by the highest mean probability (see :attr:`prediction_rule`)."""
        if self.votes == 1:
            return self.predict_logits(x, batch_size).argmax(dim=1)
        xt = torch.as_tensor(x, dtype=torch.float32)
        counts = torch.zeros(xt.shape[0], self.num_classes, dtype=torch.float64)
        probabilities = torch.zeros_like(counts)
        for _ in range(self.votes):
            logits = self.predict_logits(xt, batch_size).double()
            counts += nn.functional.one_hot(logits.argmax(dim=1), self.num_classes)
            probabilities += logits.softmax(dim=1)
        # summed probabilities lie in [0, votes]: scaled below 1 they only decide between equal counts
        return (counts + probabilities / (self.votes + 1)).argmax(dim=1)

    def loss_per_sample(self, x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Cross-entropy of every sample (float64, distinct even for saturated models: see ``stable_cross_entropy``)."""
        return stable_cross_entropy(self.predict_logits(x), torch.as_tensor(y, dtype=torch.int64))

    def input_gradient(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Gradient of the summed cross-entropy with respect to ``x`` (one batch)."""
        xg = x.detach().clone().to(self.device).requires_grad_(True)
        loss = nn.functional.cross_entropy(self.logits(xg), y.to(self.device), reduction="sum")
        (grad,) = torch.autograd.grad(loss, xg)
        self.gradient_queries += int(xg.shape[0])
        return grad.detach()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.module.parameters())
