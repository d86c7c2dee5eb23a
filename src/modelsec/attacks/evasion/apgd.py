"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks"): APGD-CE / APGD-DLR and the targeted APGD-T, the gradient attacks of AutoAttack.

Threat model: white-box (input gradients), L-inf or L2 ball of radius eps inside the input bounds. Success is
untargeted (any wrong label) for both attacks; APGD-T only *searches* with targeted losses.

APGD is PGD without a step size to tune. It starts with step ``2 * eps`` and a momentum of ``0.75``, and at the
checkpoints ``w_j = ceil(p_j * steps)`` (``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03,
0.06)``) it halves the step of a sample and moves it back to the best point it has seen when

1. fewer than ``rho * (w_j - w_{j-1})`` of the steps since the last checkpoint increased its loss, or
2. its step was not halved at the last checkpoint and its best loss has not improved since then.

Every sample keeps its own step size and its highest-loss point, which is what it returns when it is never
misclassified. Gradients come from :func:`~modelsec.attacks.gradients.loss_and_gradient` (EoT with
``eot_samples > 1``). With ``early_stop`` a sample is frozen at the first iterate that is misclassified and costs
no further passes; each restart (and, for APGD-T, each target) runs only on the samples still standing.
Differences from the reference code: the random start is the norm's uniform draw from the ball, and the momentum
restarts together with the step halving.

What untargeted APGD does not guarantee, even on a linear model: the margin and DLR losses are maxima over the
wrong classes, so the ascent follows whichever class leads where it starts. From a random start on which a class
other than the closest one leads, it can stop at that class's vertex of the ball, a local maximum where the
closest class's direction has zero gradient, and miss a point well inside the ball (tests/test_apgd.py shows it
and checks that every such miss is of this kind). Restarts make it rarer; APGD-T, which tries every likely target
in turn, is exact on linear models, which is why the standard preset runs it after APGD-CE and APGD-DLR.

Cost (:mod:`modelsec.attacks.cost`, the gradient-step floor): a run of ``steps`` steps on a sample never broken costs
``steps + 1`` forward and ``steps`` backward passes (times ``eot_samples``: the start and every step; the last
iterate's gradient would never be used, so it is not taken); the evaluation that first sees a sample misclassified
spends one backward pass over the floor. APGD-T's targets cost one forward pass. On a deterministic model a sample
whose gradient is zero where it stands, with no momentum and no better point to go back to, is at a fixed point of
the iteration (``sign(0) = 0``): it stops there, which changes no output and spares every later pass (an
input-quantised model's samples cost one pass a run instead of ``steps + 1``).

``restart_loss`` (APGD): the loss of the restarts after the first run. The ``quick`` preset ascends the margin loss
first (stronger on adversarially trained and distilled models) and cross-entropy in its restarts (stronger on
undefended ones, where the restarts run: zoo measurements in :mod:`modelsec.audits.presets`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import torch
from torch.nn import functional

from modelsec.attacks import cost
from modelsec.attacks.ball import Ball
from modelsec.attacks.base import AttackBatch, EvasionAttack
from modelsec.attacks.evasion.registry import EVASION_ATTACKS
from modelsec.attacks.gradients import loss_and_gradient, loss_only
from modelsec.attacks.losses import LOSSES, attack_loss, logit_margin, targeted_dlr_loss
from modelsec.attacks.norms import Norm, per_sample
from modelsec.core import progress
from modelsec.core.resume import resumable
from modelsec.models.base import Classifier

# Per-sample loss of logits (n, k) given the auxiliary labels of the same n samples (true labels, or true and
# target labels side by side for the targeted loss).
AuxLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

MOMENTUM = 0.75  # alpha of the paper: weight of the new gradient step against the previous move
INITIAL_STEP = 2.0  # the initial step size, as a multiple of eps


def checkpoints(steps: int) -> list[int]:
    """The iterations ``w_0 = 0 < w_1 < ... <= steps`` at which APGD may halve its step (duplicates, which
    occur for small ``steps``, merged).

    >>> checkpoints(100)
    [0, 22, 41, 57, 70, 80, 87, 93, 99]
    >>> checkpoints(10)
    [0, 3, 5, 6, 7, 8, 9, 10]
    """
    p = [0.0, 0.22]
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - 0.03, 0.06)
        if nxt > 1.0 + 1e-9:
            break
        p.append(nxt)
    # round before ceil so that float noise (0.22 * 100 = 22.000000000000004) does not add an iteration
    return sorted({math.ceil(round(pj * steps, 6)) for pj in p})


def halve_step(
    increases: torch.Tensor,
    window: int,
    rho: float,
    halved_before: torch.Tensor,
    loss_best: torch.Tensor,
    loss_best_before: torch.Tensor,
) -> torch.Tensor:
    """Which samples halve their step at a checkpoint (and restart from their best point): condition 1, fewer
    than ``rho * window`` of the ``window`` steps since the last checkpoint increased the loss, or condition 2,
    the step was not halved at the last checkpoint and the best loss has not improved since.

    >>> halve_step(torch.tensor([2, 9, 9]), 10, 0.75, torch.tensor([False, False, True]),
    ...            torch.tensor([1.0, 1.0, 1.0]), torch.tensor([0.5, 1.0, 1.0])).tolist()
    [True, True, False]
    """
    too_few_increases = increases.double() < rho * window
    stalled = ~halved_before & (loss_best <= loss_best_before)
    return too_few_increases | stalled


@dataclass
class _Iterates:
    """The state of one APGD run, one row per sample still being attacked (rows of the batch in ``row``)."""

    row: torch.Tensor  # (m,) row of each sample in the batch the run started with
    center: torch.Tensor  # clean inputs
    y: torch.Tensor  # true labels (success is judged against them)
    aux: torch.Tensor  # labels handed to the loss
    x: torch.Tensor  # current iterate x(k)
    x_prev: torch.Tensor  # previous iterate x(k - 1), for the momentum term
    loss: torch.Tensor  # f(x(k))
    grad: torch.Tensor  # gradient of f at x(k)
    x_best: torch.Tensor  # highest-loss point so far
    loss_best: torch.Tensor
    grad_best: torch.Tensor
    step: torch.Tensor  # (m,) step size eta
    increases: torch.Tensor  # (m,) steps since the last checkpoint that increased the loss
    loss_best_at_check: torch.Tensor  # best loss at the last checkpoint
    halved_at_check: torch.Tensor  # (m,) bool: the step was halved at the last checkpoint

    def select(self, keep: torch.Tensor) -> _Iterates:
        return _Iterates(**{f.name: getattr(self, f.name)[keep] for f in dataclasses.fields(self)})


def _drop_fixed_points(s: _Iterates, found: torch.Tensor) -> _Iterates:
    """Drop the samples at a fixed point of the APGD iteration: a zero gradient (no step: ``sign(0) = 0``), no
    momentum (``x == x_prev``) and nothing better to go back to (``x == x_best``). On a deterministic model every
    later step evaluates the same point again, so stopping them changes no output and saves every later pass:
    what an input-quantised or otherwise gradient-masked model gets (Athalye, Carlini & Wagner 2018). Their best
    point goes to ``found``."""
    flat = s.x.flatten(1)
    fixed = (
        (s.grad.flatten(1) == 0).all(dim=1)
        & (flat == s.x_prev.flatten(1)).all(dim=1)
        & (flat == s.x_best.flatten(1)).all(dim=1)
    )
    if not bool(fixed.any()):
        return s
    found[s.row[fixed]] = s.x_best[fixed]
    return s.select(~fixed)


def apgd_run(
    classifier: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    aux: torch.Tensor,
    loss_fn: AuxLoss,
    x_init: torch.Tensor,
    *,
    norm: Norm,
    eps: float,
    steps: int,
    rho: float,
    eot_samples: int,
    early_stop: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One APGD run (Algorithm 1 of Croce & Hein 2020) from ``x_init`` on a batch ``x`` with true labels ``y``.

    Ascends ``loss_fn(logits, aux)``. Returns ``(x_out, fooled, closest)``: for each sample the last misclassified
    iterate seen (``fooled`` True) or else its highest-loss iterate, whether one was misclassified, and the highest
    logit margin ``max_{j != y} z_j - z_y`` of any iterate evaluated (how close the run came to breaking it,
    whatever loss it ascended).
    """
    ball = Ball(norm, eps, classifier.bounds)
    n = x.shape[0]
    # a deterministic model's zero gradient is the same at the same point: such a sample can never move again
    stationary_stop = early_stop and eot_samples == 1 and classifier.votes == 1
    found = x_init.clone()
    fooled_any = torch.zeros(n, dtype=torch.bool, device=x.device)
    closest = torch.full((n,), -torch.inf, dtype=x.dtype, device=x.device)  # best logit margin seen, per row
    if n == 0:
        return found, fooled_any, closest

    def evaluate(
        row: torch.Tensor, labels: torch.Tensor, aux_: torch.Tensor, point: torch.Tensor, with_gradient: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fresh = ~fooled_any[row]  # not seen misclassified before: the floor counts its evaluation
        if with_gradient:
            loss, logits, grad = loss_and_gradient(classifier, point, aux_, loss_fn, eot_samples=eot_samples)
        else:  # the last iterate: its gradient would never be used
            loss, logits = loss_only(classifier, point, aux_, loss_fn, eot_samples=eot_samples)
            grad = torch.zeros_like(point)
        wrong = logits.argmax(dim=1) != labels
        closest[row] = torch.maximum(closest[row], logit_margin(logits, labels))
        backward = int((fresh & ~wrong).sum()) * eot_samples if with_gradient else 0
        cost.need(forward=int(fresh.sum()) * eot_samples, backward=backward)
        found[row[wrong]] = point[wrong]
        fooled_any[row[wrong]] = True
        return loss, grad, wrong

    with resumable("apgd.steps") as frame:
        if frame.restored is None:
            progress.standing(n, (steps + 1) * 2 * eot_samples)  # the time left: samples standing x passes left
            rows = torch.arange(n, device=x.device)
            x0 = ball.project(x, x_init)
            loss, grad, wrong = evaluate(rows, y, aux, x0)
            s = _Iterates(
                row=rows,
                center=x,
                y=y,
                aux=aux,
                x=x0,
                x_prev=x0,
                loss=loss,
                grad=grad,
                x_best=x0,
                loss_best=loss,
                grad_best=grad,
                step=torch.full((n,), INITIAL_STEP * eps, dtype=x.dtype, device=x.device),
                increases=torch.zeros(n, dtype=torch.int64, device=x.device),
                loss_best_at_check=loss,
                halved_at_check=torch.zeros(n, dtype=torch.bool, device=x.device),
            )
            if early_stop:
                s = s.select(~wrong)
        else:
            saved = frame.restored_on(x.device)
            found.copy_(saved["found"])
            fooled_any.copy_(saved["fooled_any"])
            s = _Iterates(**saved["iterates"])
        frame.capture(
            lambda: {
                "found": found,
                "fooled_any": fooled_any,
                "iterates": {f.name: getattr(s, f.name) for f in dataclasses.fields(s)},
            },
            where=lambda k: f"step {k + 1}/{steps}",
        )
        checks = checkpoints(steps)
        for k in frame.steps(0, steps):
            if stationary_stop:
                s = _drop_fixed_points(s, found)
            progress.standing(s.row.numel(), (steps - k) * 2 * eot_samples)  # none left once all broke
            if s.row.numel() == 0:
                break
            z = ball.ascent_step(s.center, s.x, s.grad, s.step)
            a = 1.0 if k == 0 else MOMENTUM  # the first step has no previous move
            nxt = ball.project(s.center, s.x + a * (z - s.x) + (1 - a) * (s.x - s.x_prev))
            loss, grad, wrong = evaluate(s.row, s.y, s.aux, nxt, with_gradient=k + 1 < steps)
            s.increases += (loss > s.loss).long()
            s.x_prev, s.x, s.loss, s.grad = s.x, nxt, loss, grad
            better = loss > s.loss_best
            s.x_best = torch.where(per_sample(better, nxt), nxt, s.x_best)
            s.grad_best = torch.where(per_sample(better, grad), grad, s.grad_best)
            s.loss_best = torch.where(better, loss, s.loss_best)
            if k + 1 in checks:
                j = checks.index(k + 1)
                window = checks[j] - checks[j - 1]
                halve = halve_step(s.increases, window, rho, s.halved_at_check, s.loss_best, s.loss_best_at_check)
                s.step = torch.where(halve, s.step / 2, s.step)
                back = per_sample(halve, s.x)
                s.x = torch.where(back, s.x_best, s.x)
                s.x_prev = torch.where(back, s.x_best, s.x_prev)  # the momentum restarts at the best point
                s.grad = torch.where(back, s.grad_best, s.grad)
                s.loss = torch.where(halve, s.loss_best, s.loss)
                s.halved_at_check = halve
                s.loss_best_at_check = s.loss_best.clone()
                s.increases = torch.zeros_like(s.increases)
            if early_stop:
                s = s.select(~wrong)
    out = found.clone()  # rows never fooled are still in s, or hold their fixed point (_drop_fixed_points)
    out[s.row] = s.x_best
    return torch.where(per_sample(fooled_any, out), found, out), fooled_any, closest


@dataclass(frozen=True, kw_only=True)
class _AutoPGD(EvasionAttack):
    """Hyper-parameters and the restart loop shared by :class:`APGD` and :class:`APGDTargeted`.

    Args:
        steps: iterations per run (100 in the paper).
        restarts: runs from fresh random starts; each runs only on the samples no earlier run broke.
        restart_budget: when set, the restarts after the first run together attack at most this fraction of
            the first run's samples: with ``n`` samples attacked first, the budget pays for ``floor(budget * n)``
            sample-restarts, and each restart goes to the samples still standing that came closest to breaking
            (the highest logit margin ``max_{j != y} z_j - z_y`` any earlier run reached), as many as the budget
            still pays for. Restarts then go where they pay off: every hard sample of an undefended model, the
            near misses of a robust one (the ``quick`` preset uses 0.25).
        rho: condition 1 halves the step when fewer than this fraction of the steps since the last checkpoint
            increased the loss (0.75).
        eot_samples: gradients averaged over this many passes (EoT, for randomised models).
        random_start: start from a uniformly random point of the eps-ball (else from the clean input).
        early_stop: freeze samples as soon as they are misclassified.
    """

    test_params: ClassVar[dict[str, Any]] = {"steps": 10}

    steps: int = 100
    restarts: int = 1
    restart_budget: float | None = None
    rho: float = 0.75
    eot_samples: int = 1
    random_start: bool = True
    early_stop: bool = True

    def __post_init__(self) -> None:
        self.check_counts("steps", "restarts", "eot_samples")
        if self.restart_budget is not None and not self.restart_budget >= 0:
            raise self.invalid(f"restart_budget must be >= 0 or None, got {self.restart_budget}")
        if not (0.0 < self.rho <= 1.0):
            raise self.invalid(f"rho must lie in (0, 1], got {self.rho}")

    def _restarts(
        self,
        batch: AttackBatch,
        aux: torch.Tensor,
        loss_fn: AuxLoss,
        out: torch.Tensor,
        remaining: torch.Tensor,
        restart_loss_fn: AuxLoss | None = None,
    ) -> torch.Tensor:
        """Run ``restarts`` APGD runs on the rows ``remaining`` of the batch (auxiliary labels ``aux`` for the
        loss), writing their outputs into ``out``; return the rows that are still not broken."""
        x, threat, norm = batch.x, batch.threat, batch.threat.norm_impl
        with progress.stage() as later, resumable("apgd.restarts") as frame:
            if frame.restored is None:
                attacked, spent = max(remaining.numel(), 1), 0.0
                closest = torch.full((x.shape[0],), -torch.inf, dtype=x.dtype, device=x.device)
            else:
                saved = frame.restored_on(x.device)
                attacked, spent, remaining = int(saved["attacked"]), float(saved["spent"]), saved["remaining"]
                out.copy_(saved["out"])
                closest = saved.get("closest", torch.full((x.shape[0],), -torch.inf, dtype=x.dtype, device=x.device))
            frame.capture(
                lambda: {"attacked": attacked, "spent": spent, "remaining": remaining, "out": out, "closest": closest},
                where=lambda r: f"restart {r + 1}/{self.restarts}",
            )
            for r in frame.steps(0, self.restarts):
                if remaining.numel() == 0:
                    break
                chosen = remaining
                if r > 0 and self.restart_budget is not None:  # the closest samples the budget pays for
                    affordable = math.floor((self.restart_budget - spent) * attacked + 1e-9)
                    if affordable <= 0:
                        break
                    if affordable < remaining.numel():
                        order = torch.argsort(closest[remaining], descending=True, stable=True)
                        chosen = remaining[order[:affordable]].sort().values
                share = chosen.numel() / attacked if r > 0 else 0.0  # this restart's cost, in first runs
                later.after = partial(self._later_runs, self.restarts - r - 1, spent + share, attacked)
                xs = x[chosen]
                x_init = norm.random_start(xs, threat.eps, batch.generator) if self.random_start else xs
                x_out, fooled, near = apgd_run(
                    batch.classifier,
                    xs,
                    batch.y[chosen],
                    aux[chosen],
                    restart_loss_fn if r > 0 and restart_loss_fn is not None else loss_fn,
                    x_init,
                    norm=norm,
                    eps=threat.eps,
                    steps=self.steps,
                    rho=self.rho,
                    eot_samples=self.eot_samples,
                    early_stop=self.early_stop,
                )
                out[chosen] = x_out
                closest[chosen] = near
                spent += share  # after the run: a checkpoint inside it saves what was spent before it
                broken = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
                broken[chosen[fooled]] = True
                remaining = remaining[~broken[remaining]]
        return remaining

    def _later_runs(self, runs: int, spent: float | None, attacked: int, standing: int) -> float:
        """Progress estimate: the passes that up to ``runs`` more runs would spend on the ``standing`` samples
        (of the ``attacked``) that the current run leaves; within ``restart_budget`` (the sample-restarts it still
        pays for) when ``spent`` (the part of it used) is given."""
        sample_runs = max(runs, 0) * standing
        if self.restart_budget is not None and spent is not None:
            sample_runs = min(sample_runs, max(math.floor((self.restart_budget - spent) * attacked + 1e-9), 0))
        return sample_runs * (self.steps + 1) * 2 * self.eot_samples


@EVASION_ATTACKS.register("apgd")
@dataclass(frozen=True, kw_only=True)
class APGD(_AutoPGD):
    """Untargeted APGD: ``APGD()`` is APGD-CE of AutoAttack, ``APGD(loss="dlr")`` APGD-DLR.

    Defaults: 100 steps, one run from a random start, cross-entropy loss, rho = 0.75, early stopping.

    Args:
        loss: "ce" (cross-entropy), "dlr" (difference of logits ratio; needs >= 3 classes) or "margin".
        restart_loss: the loss of every run after the first (None: ``loss``).
        steps, restarts, restart_budget, rho, eot_samples, random_start, early_stop: as in :class:`_AutoPGD`.
    """

    name = "apgd"
    loss: str = "ce"
    restart_loss: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_choice("loss", LOSSES)
        if self.restart_loss is not None:
            self.check_choice("restart_loss", LOSSES)

    def run(self, batch: AttackBatch) -> torch.Tensor:
        out = batch.x.clone()
        loss_fn = partial(attack_loss, kind=self.loss)
        restart_fn = None if self.restart_loss is None else partial(attack_loss, kind=self.restart_loss)
        all_rows = torch.arange(batch.x.shape[0], device=batch.x.device)
        self._restarts(batch, batch.y, loss_fn, out, all_rows, restart_fn)
        return out


def _targeted_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Targeted DLR of ``labels = [true, target]`` columns; with fewer than 4 classes (where DLR is undefined)
    the targeted logit margin ``z_t - z_y``."""
    y, target = labels[:, 0], labels[:, 1]
    if logits.shape[1] >= 4:
        return targeted_dlr_loss(logits, y, target)
    return logits.gather(1, target[:, None]).squeeze(1) - logits.gather(1, y[:, None]).squeeze(1)


@EVASION_ATTACKS.register("apgd-t")
@dataclass(frozen=True, kw_only=True)
class APGDTargeted(_AutoPGD):
    """APGD-T: APGD on the targeted DLR loss, aimed in turn at the ``n_targets`` classes with the highest clean
    logits other than the true one; each target runs only on the samples every earlier target left standing.
    Success is still untargeted (any wrong label). On models with fewer than 4 classes, where the targeted DLR
    is undefined, the targeted logit margin ``z_t - z_y`` replaces it.

    Defaults: 9 targets (at most ``num_classes - 1``), 100 steps and one run per target, rho = 0.75.

    Args:
        n_targets: how many target classes to try.
        steps, restarts, rho, eot_samples, random_start, early_stop: as in :class:`_AutoPGD` (``restarts`` runs
            per target).
    """

    name = "apgd-t"
    test_params: ClassVar[dict[str, Any]] = {"steps": 10, "n_targets": 3}
    n_targets: int = 9

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_counts("n_targets")

    def run(self, batch: AttackBatch) -> torch.Tensor:
        classifier, x, y = batch.classifier, batch.x, batch.y
        out = x.clone()
        n_targets = min(self.n_targets, classifier.num_classes - 1)
        with torch.no_grad():
            clean = classifier.logits(x)
        cost.need(forward=x.shape[0])
        others = clean.masked_fill(functional.one_hot(y, classifier.num_classes).bool(), float("-inf"))
        targets = others.topk(n_targets, dim=1).indices.to(y.device)
        # progress estimate: a later target runs its first restart and those within the budget on what is left
        runs = self.restarts if self.restart_budget is None else 1 + min(self.restarts - 1, int(self.restart_budget))
        with progress.stage() as later, resumable("apgd-t.targets") as frame:
            if frame.restored is None:
                remaining = torch.arange(x.shape[0], device=x.device)
            else:
                saved = frame.restored_on(x.device)
                remaining = saved["remaining"]
                out.copy_(saved["out"])
            frame.capture(lambda: {"remaining": remaining, "out": out}, where=lambda t: f"target {t + 1}/{n_targets}")
            for t in frame.steps(0, n_targets):
                if remaining.numel() == 0:
                    break
                later.after = partial(self._later_runs, (n_targets - t - 1) * runs, None, 1)
                labels = torch.stack([y, targets[:, t]], dim=1)
                remaining = self._restarts(batch, labels, _targeted_loss, out, remaining)
        return out
