"""HopSkipJump (Chen, Jordan & Wainwright 2020, "HopSkipJumpAttack: A Query-Efficient Decision-Based Attack").

Threat model: decision-based black box (predicted labels only), untargeted, L2 or L-inf. A minimum-norm attack: it
looks for the adversarial point closest to the input and returns the best one found; the attack base then reports
that distance (``min_distance``) and projects the point into the eps-ball for the fixed-eps verdict.

Each sample starts from a random adversarial point (uniform noise in the bounds, at most ``init_trials`` draws),
moved by a binary search on the segment to the input until it sits just on the adversarial side of the boundary.
Then, for ``t = 1 .. iterations``:

1. estimate the direction of the boundary's normal at the current point by Monte Carlo: ``num_evals`` random unit
   directions (Gaussian for L2, uniform in the cube for L-inf) at radius ``delta``, each labelled +1 when the
   perturbed point is adversarial and -1 otherwise, averaged with the mean label subtracted as a baseline;
   ``num_evals = min(init_num_evals * sqrt(t), max_num_evals)``;
2. step along it (the normalised estimate for L2, its sign for L-inf) by ``dist / sqrt(t)``, halving the step until
   the point is adversarial (geometric step-size search);
3. binary search back towards the input (on the segment for L2, on the L-inf radius for L-inf) to tolerance
   ``theta = gamma / d^(3/2)`` (L2) or ``gamma / d^2`` (L-inf).

``delta`` is a tenth of the input range in the first iteration and ``sqrt(d) * theta * dist`` (L2), ``d * theta *
dist`` (L-inf) afterwards. All samples of a batch advance together; every query goes only to the samples that need
it (a converged binary search or a successful step stops querying its sample).

Cost (:mod:`modelsec.attacks.cost`): every label query counts as a forward pass. By default every sample runs every
iteration (the smallest distance is the answer). At a fixed eps (``AttackBatch.stop_at_eps``, which the audit's
chain sets when it does not need this run's distances) a sample whose best point lies inside the ball is done and
is not queried again; its random directions are still drawn, so the other samples see the same random numbers and
follow the same path as without the stop (the generator's state after the attack differs only when every sample
is done before the last iteration).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from modelsec.attacks import cost
from modelsec.attacks.base import AttackBatch, EvasionAttack
from modelsec.attacks.evasion.registry import EVASION_ATTACKS
from modelsec.attacks.norms import clip_to_bounds, per_sample
from modelsec.core.resume import resumable
from modelsec.models.base import Capability, Classifier

# Random directions drawn at once, in floats (num_evals x input size x samples): bounds the memory of one chunk.
_CHUNK_ELEMENTS = 1 << 23
# Binary-search tolerance (on the blend factor) when pulling the random starting point towards the input.
_INIT_TOLERANCE = 1e-3
# Guard on bisection steps: float32 cannot halve an interval more often than this usefully.
_MAX_BISECTIONS = 64


def _interpolate(x: torch.Tensor, x_adv: torch.Tensor, alpha: torch.Tensor, linf: bool) -> torch.Tensor:
    """The point ``alpha`` of the way from ``x`` to ``x_adv``: the blend ``(1 - alpha) x + alpha x_adv`` (L2), or
    ``x_adv`` clipped to the L-inf ball of radius ``alpha`` around ``x`` (L-inf)."""
    a = per_sample(alpha, x)
    if linf:
        return x + torch.minimum(torch.maximum(x_adv - x, -a), a)
    return (1 - a) * x + a * x_adv


@EVASION_ATTACKS.register("hopskipjump")
@dataclass(frozen=True, kw_only=True)
class HopSkipJump(EvasionAttack):
    """HopSkipJump, untargeted, L2 or L-inf.

    Args:
        iterations: gradient-estimation / step / binary-search rounds.
        init_num_evals: Monte Carlo queries of the first gradient estimate (grows as ``sqrt(t)``).
        max_num_evals: cap on the queries of one gradient estimate (the paper uses 10,000; 1,000 is faster and
            costs little on small inputs).
        init_trials: uniform-noise draws tried per sample to find an adversarial starting point; a sample with
            none is returned unchanged (robust, ``min_distance`` inf).
        gamma: scale of the binary-search tolerance ``theta`` and so of the probing radius ``delta``.
        max_halvings: halvings of the step before the step search gives up and keeps the current point.
    """

    name = "hopskipjump"
    requires = Capability.LABELS
    supported_norms = ("l2", "linf")
    minimum_norm = True
    test_params: ClassVar[dict[str, Any]] = {"iterations": 5, "max_num_evals": 100}

    iterations: int = 40
    init_num_evals: int = 100
    max_num_evals: int = 1000
    init_trials: int = 100
    gamma: float = 1.0
    max_halvings: int = 20

    def __post_init__(self) -> None:
        self.check_counts("iterations", "init_num_evals", "max_num_evals", "init_trials")
        self.check_counts("max_halvings", least=0)
        if self.max_num_evals < self.init_num_evals:
            raise self.invalid(
                f"max_num_evals ({self.max_num_evals}) must be >= init_num_evals ({self.init_num_evals})"
            )
        self.check_finite("gamma")

    def num_evals(self, t: int) -> int:
        """Monte Carlo queries of the gradient estimate at iteration ``t`` (1-based).

        >>> [HopSkipJump().num_evals(t) for t in (1, 2, 4, 100, 101)]
        [100, 141, 200, 1000, 1000]
        """
        return min(int(self.init_num_evals * math.sqrt(t)), self.max_num_evals)

    def run(self, batch: AttackBatch) -> torch.Tensor:
        classifier, x, y, threat, generator = batch.classifier, batch.x, batch.y, batch.threat, batch.generator
        linf = threat.norm == "linf"
        norm = threat.norm_impl
        lo, hi = classifier.bounds
        d = x[0].numel()
        theta = self.gamma / (d**2 if linf else d**1.5)
        probe_scale = d * theta if linf else math.sqrt(d) * theta  # probing radius per unit of distance

        out = x.clone()
        done_dist = threat.eps if batch.stop_at_eps else -math.inf  # a best point this close: the sample is done
        with resumable("hopskipjump.iterations") as frame:
            if frame.restored is None:
                start, found = self._random_start(classifier, x, y, generator)
                idx = torch.arange(x.shape[0], device=x.device).masked_select(found)
                if idx.numel() == 0:
                    return out
                xs, ys = x.index_select(0, idx), y.index_select(0, idx)
                ones = torch.ones(idx.numel(), device=x.device)
                xa = self._binary_search(
                    classifier, xs, ys, start.index_select(0, idx), ones, ones * _INIT_TOLERANCE, linf=False
                )
                xa = self._boundary(classifier, xs, ys, xa, theta, linf)
                dist = norm.distance(xs, xa)
                best, best_dist = xa.clone(), dist.clone()
            else:
                saved = frame.restored_on(x.device)
                idx, xa, dist, best, best_dist = (saved[k] for k in ("idx", "xa", "dist", "best", "best_dist"))
                xs, ys = x.index_select(0, idx), y.index_select(0, idx)
            frame.capture(
                lambda: {"idx": idx, "xa": xa, "dist": dist, "best": best, "best_dist": best_dist},
                where=lambda t: f"iteration {t}/{self.iterations}",
            )
            for t in frame.steps(1, self.iterations + 1):
                live = (best_dist > done_dist).nonzero().flatten()
                if live.numel() == 0:
                    break
                delta = probe_scale * dist if t > 1 else torch.full_like(dist, 0.1 * (hi - lo))
                grad = self._estimate_gradient(classifier, xa, ys, delta, self.num_evals(t), linf, generator, live)
                xl, yl, xsl = xa.index_select(0, live), ys.index_select(0, live), xs.index_select(0, live)
                update = norm.ascent_direction(grad.index_select(0, live))  # sign (L-inf) or unit L2 direction
                moved = self._step(classifier, xl, yl, update, dist.index_select(0, live) / math.sqrt(t))
                xl = self._boundary(classifier, xsl, yl, moved, theta, linf)
                dl = norm.distance(xsl, xl)
                better = dl < best_dist.index_select(0, live)
                xa, dist = xa.index_copy(0, live, xl), dist.index_copy(0, live, dl)
                best = best.index_copy(0, live, torch.where(per_sample(better, xl), xl, best.index_select(0, live)))
                best_dist = best_dist.index_copy(0, live, torch.where(better, dl, best_dist.index_select(0, live)))
        return out.index_copy_(0, idx, best)

    @staticmethod
    def _adversarial(classifier: Classifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The label oracle: True where ``x`` is misclassified (one query per row)."""
        if x.shape[0] == 0:
            return torch.zeros(0, dtype=torch.bool, device=y.device)
        cost.need(forward=x.shape[0] * classifier.votes)  # every query is for a sample not yet done
        return classifier.predict(x).to(y.device) != y

    def _random_start(
        self, classifier: Classifier, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Uniform noise in the bounds until it is adversarial, at most ``init_trials`` draws per sample."""
        lo, hi = classifier.bounds
        start = x.clone()
        found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        todo = torch.arange(x.shape[0], device=x.device)
        for _ in range(self.init_trials):
            if todo.numel() == 0:
                break
            noise = lo + (hi - lo) * torch.rand((todo.numel(), *x.shape[1:]), generator=generator, dtype=x.dtype)
            noise = noise.to(x.device)
            adv = self._adversarial(classifier, noise, y.index_select(0, todo))
            kept = torch.where(per_sample(adv, noise), noise, start.index_select(0, todo))
            start.index_copy_(0, todo, kept)
            found.index_copy_(0, todo, adv)
            todo = todo.masked_select(~adv)
        return start, found

    def _binary_search(
        self,
        classifier: Classifier,
        x: torch.Tensor,
        y: torch.Tensor,
        x_adv: torch.Tensor,
        high: torch.Tensor,
        tolerance: torch.Tensor,
        *,
        linf: bool,
    ) -> torch.Tensor:
        """Bisect ``alpha`` in ``[0, high]`` (see :func:`_interpolate`) per sample until the interval is at most
        ``tolerance``; return the point at the adversarial end. ``x_adv`` must be adversarial at ``alpha = high``."""
        low = torch.zeros_like(high)
        high = high.clone()
        todo = (high - low > tolerance).nonzero().flatten()
        for _ in range(_MAX_BISECTIONS):
            if todo.numel() == 0:
                break
            lo, hi = low.index_select(0, todo), high.index_select(0, todo)
            mid = (lo + hi) / 2
            probe = _interpolate(x.index_select(0, todo), x_adv.index_select(0, todo), mid, linf)
            adv = self._adversarial(classifier, probe, y.index_select(0, todo))
            hi, lo = torch.where(adv, mid, hi), torch.where(adv, lo, mid)
            high.index_copy_(0, todo, hi)
            low.index_copy_(0, todo, lo)
            todo = todo.masked_select(hi - lo > tolerance.index_select(0, todo))
        return _interpolate(x, x_adv, high, linf)

    def _boundary(
        self, classifier: Classifier, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, theta: float, linf: bool
    ) -> torch.Tensor:
        """The paper's binary search to the boundary: on the blend factor to tolerance theta (L2), or on the L-inf
        radius to tolerance ``min(theta * dist, theta)`` (L-inf)."""
        if linf:
            high = (x_adv - x).flatten(1).abs().amax(dim=1)
            tolerance = torch.clamp(high * theta, max=theta)
        else:
            high = torch.ones(x.shape[0], device=x.device)
            tolerance = torch.full_like(high, theta)
        return self._binary_search(classifier, x, y, x_adv, high, tolerance, linf=linf)

    def _estimate_gradient(
        self,
        classifier: Classifier,
        x_b: torch.Tensor,
        y: torch.Tensor,
        delta: torch.Tensor,
        num_evals: int,
        linf: bool,
        generator: torch.Generator,
        rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Monte Carlo estimate of the direction towards the adversarial side at boundary points ``x_b``, for the
        ``rows`` given (default: all; the others' directions are drawn but not queried, and their estimate is 0)."""
        lo, hi = classifier.bounds
        m, shape, d = x_b.shape[0], x_b.shape[1:], x_b[0].numel()
        chunk = max(1, _CHUNK_ELEMENTS // (num_evals * d))
        out = torch.zeros_like(x_b)
        probed = torch.ones(m, dtype=torch.bool, device=x_b.device)
        if rows is not None:
            probed = torch.zeros_like(probed).index_fill_(0, rows, True)
        for i in range(0, m, chunk):
            xb = x_b[i : i + chunk]
            k = xb.shape[0]
            if linf:
                rv = torch.rand((k, num_evals, d), generator=generator, dtype=x_b.dtype) * 2 - 1
            else:
                rv = torch.randn((k, num_evals, d), generator=generator, dtype=x_b.dtype)
            sel = probed[i : i + k].nonzero().flatten()  # the rows of this chunk to probe
            if sel.numel() == 0:
                continue
            rv, xb = rv.to(x_b.device).index_select(0, sel), xb.index_select(0, sel)
            k = sel.numel()
            rv = rv / rv.norm(dim=2, keepdim=True).clamp_min(1e-12)
            rv = rv.view(k, num_evals, *shape)
            dl = delta[i : i + chunk].index_select(0, sel)
            dl = dl.clamp_min(1e-12).view(k, 1, *([1] * len(shape)))
            probes = clip_to_bounds(xb[:, None] + dl * rv, (lo, hi))
            rv = (probes - xb[:, None]) / dl  # the directions actually probed, after clipping
            labels = y[i : i + chunk].index_select(0, sel).repeat_interleave(num_evals)
            adv = self._adversarial(classifier, probes.reshape(k * num_evals, *shape), labels).view(k, num_evals)
            f = adv.to(x_b.dtype) * 2 - 1
            mean = f.mean(dim=1, keepdim=True)
            f = torch.where(mean.abs() == 1, f, f - mean)  # baseline unless every probe agreed
            out[i + sel] = (f.view(k, num_evals, *([1] * len(shape))) * rv).mean(dim=1)
        return out

    def _step(
        self, classifier: Classifier, x_b: torch.Tensor, y: torch.Tensor, update: torch.Tensor, size: torch.Tensor
    ) -> torch.Tensor:
        """Geometric step-size search: move ``size`` along ``update``, halving until adversarial; a sample that
        is still not adversarial after ``max_halvings`` halvings stays where it is."""
        out = x_b.clone()
        size = size.clone()
        todo = torch.arange(x_b.shape[0], device=x_b.device)
        for _ in range(self.max_halvings + 1):
            if todo.numel() == 0:
                break
            cur = x_b.index_select(0, todo)
            step = per_sample(size.index_select(0, todo), x_b) * update.index_select(0, todo)
            trial = clip_to_bounds(cur + step, classifier.bounds)
            adv = self._adversarial(classifier, trial, y.index_select(0, todo))
            out.index_copy_(0, todo, torch.where(per_sample(adv, trial), trial, cur))
            todo = todo.masked_select(~adv)
            size = size / 2  # only the samples still searching use it again
        return out
