"""The evasion-attack contract: a final ``__call__`` that no subclass can weaken.

After Foolbox 3's ``Attack.__call__``: subclasses implement only :meth:`EvasionAttack.run` (the algorithm, on one
:class:`AttackBatch`); the base class validates inputs, refuses a model or threat model the attack cannot handle
(:meth:`EvasionAttack.unsupported_reason`, the one place that decides), runs the algorithm batch by batch on the
samples that are still correctly classified (a misclassified sample needs no attack and costs nothing), projects the
output onto the threat model, clips it to the classifier's bounds, re-classifies it, and builds the result. An
example counts as adversarial only after that re-classification; a subclass's own idea of success is never used.

Resumable (:mod:`modelsec.core.resume`): the batch loop is a frame whose save points are the batch boundaries, and each
attack's own loops (restarts, targets, iterations) are frames inside it, so an audit's checkpoint can be written
inside a batch that takes hours on a big model and resumed there with the same result.

Cost (:mod:`modelsec.attacks.cost`): every result says what the call spent, forward and backward passes counted on
the classifier, beside the floor a perfect per-sample early stop would have spent (:class:`AttackCost`).

Progress (:mod:`modelsec.core.progress`): the call is one :meth:`~modelsec.core.progress.Progress.work` task over the
attacked samples, each batch a group; an attack's loops report the samples still standing and the passes each has
left (``progress.standing``, ``progress.stage``), so the time left on a terminal follows the survivors, and the task's
line ends with the samples still standing after the re-classification. Nothing is computed for it: the counts are
the loops' own, and with no display listening a report is one context-variable lookup.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar, final

import torch

from modelsec.attacks import cost
from modelsec.attacks.ball import Ball
from modelsec.attacks.losses import unsupported_loss_reason
from modelsec.attacks.norms import NORMS, Norm, clip_to_bounds
from modelsec.core.errors import ConfigError, DataError
from modelsec.core.progress import NullProgress, Progress
from modelsec.core.resume import resumable
from modelsec.models.base import Capability, Classifier
from modelsec.results.audit import AttackCost

# Slack for float32 round-off when checking that an output lies in the eps-ball and the bounds.
_TOL = 1e-6


@dataclass(frozen=True)
class ThreatModel:
    """What "adversarial" means: perturbations of ``norm`` at most ``eps`` (inputs stay in the model's bounds).
    Untargeted: success means any wrong label."""

    norm: str = "linf"
    eps: float = 0.1

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ConfigError(f"unknown norm {self.norm!r}; known: {', '.join(NORMS.names())}")
        if not (self.eps >= 0.0) or self.eps == float("inf"):
            raise ConfigError(f"epsilon must be a finite number >= 0, got {self.eps}")

    @property
    def norm_impl(self) -> Norm:
        return NORMS.get(self.norm)

    def ball(self, bounds: tuple[float, float]) -> Ball:
        """The allowed inputs around each clean input of a model whose inputs lie in ``bounds``."""
        return Ball(self.norm_impl, self.eps, bounds)


@dataclass(frozen=True)
class AttackBatch:
    """What :meth:`EvasionAttack.run` attacks: correctly classified inputs ``x`` and their labels ``y`` (on the
    classifier's device), the classifier, the threat model, and the generator every random draw comes from."""

    classifier: Classifier
    x: torch.Tensor
    y: torch.Tensor
    threat: ThreatModel
    generator: torch.Generator
    stop_at_eps: bool = False  # minimum-norm attacks: stop refining a sample once it is adversarial inside the ball

    @property
    def ball(self) -> Ball:
        """The threat model's ball inside the classifier's bounds."""
        return self.threat.ball(self.classifier.bounds)


@dataclass(frozen=True)
class EvasionResult:
    """Per-sample outcome of one attack at one threat model (all tensors on the CPU, first dim = samples).

    ``success`` is True where the re-classified ``x_adv`` is wrong, including samples that were misclassified
    to begin with (their ``x_adv`` is the clean input). ``robust`` is its complement. ``cost``: the passes spent
    against their floor (:mod:`modelsec.attacks.cost`).
    """

    attack: str
    threat: ThreatModel
    x_adv: torch.Tensor
    y: torch.Tensor
    pred_clean: torch.Tensor
    pred_adv: torch.Tensor
    success: torch.Tensor
    distance: torch.Tensor
    queries: int
    seconds: float
    params: dict[str, Any]
    min_distance: torch.Tensor | None = None  # minimum-norm attacks: verified distance, inf where none found
    cost: AttackCost | None = None

    @property
    def robust(self) -> torch.Tensor:
        return ~self.success

    @property
    def robust_accuracy(self) -> float:
        return float(self.robust.float().mean()) if len(self.robust) else float("nan")


@dataclass(frozen=True, kw_only=True)
class EvasionAttack(abc.ABC):
    """Base of every evasion attack. Subclasses are frozen keyword-only dataclasses of hyper-parameters
    (validated in ``__post_init__``) and implement :meth:`run`."""

    name: ClassVar[str]
    requires: ClassVar[Capability] = Capability.GRADIENTS
    supported_norms: ClassVar[tuple[str, ...]] = ("linf", "l2")
    # A minimum-norm attack returns the smallest adversarial perturbation it finds, whatever eps is; the base
    # class then also verifies the unprojected candidate and reports its distance (``min_distance``).
    minimum_norm: ClassVar[bool] = False
    test_params: ClassVar[dict[str, Any]] = {}  # small settings for the conformance tests

    def params(self) -> dict[str, Any]:
        """The hyper-parameters, as given (for reports and configs)."""
        return dataclasses.asdict(self)

    @property
    def label(self) -> str:
        """The name in reports: the registered name, plus the loss when it differs from the attack's default
        (``apgd-dlr``)."""
        for f in dataclasses.fields(self):
            if f.name == "loss" and getattr(self, "loss") != f.default:  # noqa: B009
                return f"{self.name}-{getattr(self, 'loss')}"  # noqa: B009
        return self.name

    def unsupported_reason(self, classifier: Classifier, threat: ThreatModel) -> str | None:
        """Why this attack cannot run on ``classifier`` within ``threat`` (``None``: it can): the norm, the access
        it needs (:attr:`requires`), and for an attack with a ``loss`` hyper-parameter what that loss needs (DLR:
        3 classes). The one place that decides: :meth:`__call__` refuses with it and an audit's plan skips the
        attack with it. An attack with further needs extends it."""
        if threat.norm not in self.supported_norms:
            return f"does not support the {threat.norm} norm"
        if classifier.capability < self.requires:
            return f"needs {self.requires.name.lower()}; the model offers only {classifier.capability.name.lower()}"
        for field_name in ("loss", "restart_loss"):
            loss = getattr(self, field_name, None)
            reason = unsupported_loss_reason(loss, classifier.num_classes) if isinstance(loss, str) else None
            if reason is not None:
                return reason
        return None

    # -- validation of the hyper-parameters, for the subclasses' ``__post_init__`` ---------------------------------

    def invalid(self, message: str) -> ConfigError:
        """A :class:`ConfigError` about this attack's hyper-parameters (prefixed with its name)."""
        return ConfigError(f"{self.name}: {message}")

    def check_counts(self, *fields: str, least: int = 1) -> None:
        """Each of the integer hyper-parameters ``fields`` (steps, restarts, ...) must be at least ``least``."""
        for f in fields:
            if getattr(self, f) < least:
                raise self.invalid(f"{f} must be >= {least}, got {getattr(self, f)}")

    def check_finite(self, *fields: str, zero: bool = False, optional: bool = False) -> None:
        """Each of the float hyper-parameters ``fields`` must be a finite number > 0 (>= 0 with ``zero``; or
        ``None`` with ``optional``)."""
        for f in fields:
            value = getattr(self, f)
            if optional and value is None:
                continue
            if not (value >= 0.0 if zero else value > 0.0) or math.isinf(value):
                raise self.invalid(f"{f} must be a finite number {'>=' if zero else '>'} 0, got {value}")

    def check_choice(self, field: str, choices: tuple[str, ...]) -> None:
        """The hyper-parameter ``field`` must be one of ``choices``."""
        if getattr(self, field) not in choices:
            raise self.invalid(f"{field} must be one of {choices}, got {getattr(self, field)!r}")

    @abc.abstractmethod
    def run(self, batch: AttackBatch) -> torch.Tensor:
        """Return candidate adversarial inputs for one batch of correctly classified samples (on the
        classifier's device). Need not be projected or clipped: the base class does both."""

    @final
    def __call__(
        self,
        classifier: Classifier,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: ThreatModel,
        *,
        generator: torch.Generator,
        progress: Progress | None = None,
        stop_at_eps: bool = False,
        pred_clean: torch.Tensor | None = None,
    ) -> EvasionResult:
        """Attack ``x`` (labels ``y``) within ``threat``; every returned example is verified by the base class.

        ``stop_at_eps`` (minimum-norm attacks that refine their distances: C&W, HopSkipJump): stop working on a
        sample once it has an adversarial point inside the ball, as a fixed-eps evaluation needs; the default
        refines every sample to the end of the budget, so that ``min_distance`` is the smallest distance found.

        ``pred_clean``: the classifier's clean predictions of ``x`` when the caller already has them (the audit's
        chain attacks only samples it has seen correctly classified), saving a forward pass over ``x``; by default
        the attack predicts them itself. Every adversarial example is re-classified either way."""
        progress = progress or NullProgress()
        self._check(classifier, x, y, threat)
        x = x.detach().to(torch.float32).cpu()
        y = y.detach().to(torch.int64).cpu()
        start = time.perf_counter()
        bs = classifier.batch_size
        norm, ball = threat.norm_impl, threat.ball(classifier.bounds)
        floor = cost.Floor()
        shown = contextlib.ExitStack()  # the progress task, open until the outputs are re-classified
        with shown, resumable("attack.batches") as frame, cost.recording(floor):  # resumable at every batch
            if frame.restored is None:
                queries_before, gradients_before = classifier.queries, classifier.gradient_queries
                if pred_clean is None:
                    cost.need(forward=len(x) * classifier.votes)  # the clean prediction
                    pred_clean = classifier.predict(x)
                elif pred_clean.shape != y.shape:
                    raise ValueError(f"pred_clean has shape {tuple(pred_clean.shape)}, expected {tuple(y.shape)}")
                pred_clean = pred_clean.detach().to(torch.int64).cpu()
                x_adv = x.clone()
                min_distance = torch.where(pred_clean == y, torch.inf, 0.0) if self.minimum_norm else None
            else:
                saved = frame.restored
                queries_before, pred_clean = int(saved["queries_before"]), saved["pred_clean"]
                x_adv, min_distance = saved["x_adv"], saved["min_distance"]
                # the backward passes are not a tracked value: what was spent before the checkpoint is in it
                gradients_before = classifier.gradient_queries - int(saved.get("gradients_spent", 0))
                floor.forward, floor.backward = (int(v) for v in saved.get("floor", (0, 0)))
            todo = (pred_clean == y).nonzero().flatten()
            batches = -(-len(todo) // bs)
            frame.capture(
                lambda: {
                    "queries_before": queries_before,
                    "pred_clean": pred_clean,
                    "x_adv": x_adv,
                    "min_distance": min_distance,
                    "gradients_spent": classifier.gradient_queries - gradients_before,
                    "floor": [floor.forward, floor.backward],
                },
                where=lambda b: f"batch {b + 1}/{batches}",
            )
            # the time left: the passes still to spend on the samples standing, at the rate observed so far
            work = shown.enter_context(
                progress.work(
                    f"{self.name} {threat.norm} eps={threat.eps:g}",
                    total=len(todo),
                    spent=lambda: classifier.queries + classifier.gradient_queries,
                )
            )
            if frame.restored is not None:  # the batches done before the checkpoint
                work.advance(min(len(todo), bs * int(frame.restored["position"])))
            for b in frame.steps(0, batches):
                idx = todo[b * bs : (b + 1) * bs]
                with work.group(len(idx)):  # the attack reports its samples standing (progress.standing)
                    xb = x[idx].to(classifier.device)
                    yb = y[idx].to(classifier.device)
                    if threat.eps > 0 or self.minimum_norm:
                        cand = self.run(AttackBatch(classifier, xb, yb, threat, generator, stop_at_eps)).detach()
                        cand = torch.where(torch.isfinite(cand), cand, xb)
                        if min_distance is not None:
                            raw = clip_to_bounds(cand, classifier.bounds)
                            fooled = classifier.predict(raw).to(yb.device) != yb
                            cost.need(forward=len(idx) * classifier.votes)
                            dist = norm.distance(xb, raw).cpu()
                            min_distance[idx] = torch.where(fooled.cpu(), dist, torch.inf)
                        x_adv[idx] = ball.project(xb, cand).cpu()
            pred_adv = classifier.predict(x_adv)
            work.finish(int((pred_adv[todo] == y[todo]).sum()))
        floor.forward += len(x) * classifier.votes  # the re-classification
        distance = norm.distance(x, x_adv)
        self._verify(x_adv, distance, threat, classifier.bounds)
        return EvasionResult(
            attack=self.label,
            threat=threat,
            x_adv=x_adv,
            y=y,
            pred_clean=pred_clean,
            pred_adv=pred_adv,
            success=pred_adv != y,
            distance=distance,
            queries=classifier.queries - queries_before,
            seconds=time.perf_counter() - start,
            params=self.params(),
            min_distance=min_distance,
            cost=AttackCost(
                attacked=len(todo),
                forward=classifier.queries - queries_before,
                backward=classifier.gradient_queries - gradients_before,
                floor_forward=floor.forward,
                floor_backward=floor.backward,
            ),
        )

    def _check(self, classifier: Classifier, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel) -> None:
        reason = self.unsupported_reason(classifier, threat)
        if reason is not None:
            raise ConfigError(f"{self.label}: {reason}")
        classifier.check_inputs(x)
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise DataError(f"labels of shape {tuple(y.shape)} do not match {x.shape[0]} inputs")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= classifier.num_classes):
            raise DataError(f"labels must lie in [0, {classifier.num_classes}), got [{int(y.min())}, {int(y.max())}]")
        if not torch.isfinite(x).all():
            raise DataError("inputs contain NaN or Inf")
        lo, hi = classifier.bounds
        if len(x) and (float(x.min()) < lo - _TOL or float(x.max()) > hi + _TOL):
            raise DataError(
                f"inputs lie in [{float(x.min()):g}, {float(x.max()):g}], outside the model's bounds [{lo:g}, {hi:g}]"
            )

    @staticmethod
    def _verify(x_adv: torch.Tensor, distance: torch.Tensor, threat: ThreatModel, bounds: tuple[float, float]) -> None:
        # Invariants of the contract: a failure here is a bug in modelsec, not a user error.
        if len(distance) and float(distance.max()) > threat.eps * (1 + 1e-5) + _TOL:
            raise AssertionError(
                f"adversarial example outside the threat model: {float(distance.max())} > {threat.eps}"
            )
        if len(x_adv) and (float(x_adv.min()) < bounds[0] - _TOL or float(x_adv.max()) > bounds[1] + _TOL):
            raise AssertionError("adversarial example outside the input bounds")
