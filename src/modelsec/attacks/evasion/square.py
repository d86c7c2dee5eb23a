"""The Square attack (Andriushchenko, Croce, Flammarion & Hein 2020, "Square Attack: a query-efficient black-box
adversarial attack via random search").

Threat model: score-based black box (logits only, no gradients), untargeted, L-inf or L2 ball of radius eps inside
the input bounds. Random search on the margin loss ``z_y - max_{j != y} z_j`` (to minimise): each step changes the
current perturbation inside one randomly placed square window (two for L2), queries the model once and keeps the
change only if the loss went down. The window covers a fraction ``p`` of the pixels; ``p`` starts at ``p_init`` and
is halved along the paper's piecewise schedule, stated for 10,000 queries and rescaled to ``max_queries``.

- L-inf: start from vertical stripes of +-eps (one random sign per channel and column); a step sets a window of
  each channel to one random value of +-eps, so every iterate is a vertex of the eps-ball.
- L2: start from a grid of pseudo-Gaussian bumps of random sign, scaled to norm eps; a step moves the energy of a
  second window (and the unused budget) into the first one as a pair of opposite-signed bumps, keeping norm eps.

Images are ``(C, H, W)``; any other input shape is seen as a ``(1, 1, d)`` strip whose "squares" are contiguous
windows of features (``(H, W)`` inputs as one channel). A sample is frozen as soon as it is misclassified and is not
queried again; each restart spends at most ``max_queries`` queries on each sample it runs on. Every query is
thus for a sample not yet broken: the attack spends exactly its floor (:mod:`modelsec.attacks.cost`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import torch

from modelsec.attacks import cost
from modelsec.attacks.base import AttackBatch, EvasionAttack
from modelsec.attacks.evasion.registry import EVASION_ATTACKS
from modelsec.attacks.losses import attack_loss
from modelsec.attacks.norms import clip_to_bounds, per_sample
from modelsec.core import progress
from modelsec.core.resume import resumable
from modelsec.models.base import Capability, Classifier

# The paper's schedule: p is halved after each of these iterations of a 10,000-query run.
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
# How often a step that would leave an input unchanged is redrawn before the query is spent anyway.
_REDRAWS = 10


def square_fraction(p_init: float, iteration: int, max_queries: int) -> float:
    """The fraction of the input a window covers at ``iteration`` (0-based) of a ``max_queries`` run.

    >>> [square_fraction(0.8, i, 10_000) for i in (0, 10, 11, 51, 9000)]
    [0.8, 0.8, 0.4, 0.2, 0.0015625]
    >>> square_fraction(0.8, 2, 100)  # the schedule is rescaled to the budget: iteration 2 of 100 ~ 200 of 10,000
    0.2
    """
    scaled = int(iteration / max_queries * 10_000)
    return p_init / 2 ** sum(scaled > h for h in _HALVINGS)


def image_shape(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """How the attack lays out one input: ``(C, H, W)``; non-image inputs become one channel and one row.

    >>> image_shape((3, 32, 32)), image_shape((28, 28)), image_shape((8,)), image_shape((2, 3, 4, 5))
    ((3, 32, 32), (1, 28, 28), (1, 1, 8), (1, 1, 120))
    """
    if len(input_shape) == 3:
        c, h, w = input_shape
        return c, h, w
    if len(input_shape) == 2:
        return 1, input_shape[0], input_shape[1]
    return 1, 1, math.prod(input_shape)


def window_size(p: float, height: int, width: int) -> tuple[int, int]:
    """Window ``(rows, cols)`` covering about a fraction ``p`` of an ``height x width`` input: a square of side
    ``round(sqrt(p * H * W))`` (at most one less than the shorter side, as in the paper), or a run of ``round(p * W)``
    features when the input is a single row."""
    if height == 1:
        return 1, min(max(round(p * width), 1), max(width - 1, 1))
    side = min(max(round(math.sqrt(p * height * width)), 1), max(min(height, width) - 1, 1))
    return side, side


def pseudo_gaussian(rows: int, cols: int) -> torch.Tensor:
    """The bump ``eta`` of the paper (centred here for even sizes too): concentric rectangular rings whose value
    grows towards the centre, ring ``m`` (counted from the centre) holding ``sum_{k=0}^{n-m} 1 / (n + 1 - k)^2``.
    Shape ``(rows, cols)``.

    >>> pseudo_gaussian(1, 3)
    tensor([[0.2500, 1.2500, 0.2500]])
    """
    r = (2 * torch.arange(rows) - (rows - 1)).abs()  # twice the distance to the centre row (integers)
    c = (2 * torch.arange(cols) - (cols - 1)).abs()
    ring = torch.maximum(r[:, None], c[None, :]) // 2
    n = int(ring.max())
    values = torch.tensor([1.0 / (n + 1 - k) ** 2 for k in range(n + 1)], dtype=torch.float64).cumsum(0)
    return values.index_select(0, (n - ring).flatten()).view(rows, cols).float()


def split_bump(rows: int, cols: int) -> torch.Tensor:
    """The L2 update's shape: the window split in two halves (along the rows, or along the features of a single
    row) holding ``+eta`` and ``-eta``, normalised to unit L2 norm."""
    out = torch.zeros(rows, cols)
    if rows == 1:
        half = cols // 2
        if half:
            out[:, :half] = pseudo_gaussian(1, half)
        out[:, half:] = -pseudo_gaussian(1, cols - half)
    else:
        half = rows // 2
        if half:
            out[:half] = pseudo_gaussian(half, cols)
        out[half:] = -pseudo_gaussian(rows - half, cols)
    return out / out.norm()


def _place(
    template: torch.Tensor, pos_h: torch.Tensor, pos_w: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Put sample ``i``'s window ``template[i]`` (shape ``(n, rows, cols)``) at ``(pos_h[i], pos_w[i])`` of an
    ``height x width`` zero image: the placed values and the window mask, both ``(n, 1, H, W)``.

    Masks and ``gather`` rather than advanced indexing, which is many times slower on a busy CPU (the attack's loop
    runs thousands of tiny steps).
    """
    n, rows, cols = template.shape
    dev = template.device
    r = torch.arange(height, device=dev)[None, :] - pos_h[:, None]  # (n, H): row inside the window
    c = torch.arange(width, device=dev)[None, :] - pos_w[:, None]  # (n, W)
    mask = (((r >= 0) & (r < rows))[:, :, None] & ((c >= 0) & (c < cols))[:, None, :]).view(n, 1, height, width)
    flat = r.clamp(0, rows - 1)[:, :, None] * cols + c.clamp(0, cols - 1)[:, None, :]
    values = template.reshape(n, rows * cols).gather(1, flat.view(n, height * width)).view(n, 1, height, width)
    return values * mask, mask


def _window_mask(
    pos_h: torch.Tensor, pos_w: torch.Tensor, rows: int, cols: int, height: int, width: int
) -> torch.Tensor:
    """The mask ``(n, 1, H, W)`` of sample ``i``'s ``rows x cols`` window at ``(pos_h[i], pos_w[i])``."""
    r = torch.arange(height, device=pos_h.device)[None, :] - pos_h[:, None]
    c = torch.arange(width, device=pos_w.device)[None, :] - pos_w[:, None]
    inside = ((r >= 0) & (r < rows))[:, :, None] & ((c >= 0) & (c < cols))[:, None, :]
    return inside.view(-1, 1, height, width)


def _random_positions(
    n: int, height: int, width: int, rows: int, cols: int, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    pos_h = torch.randint(0, height - rows + 1, (n,), generator=generator)
    pos_w = torch.randint(0, width - cols + 1, (n,), generator=generator)
    return pos_h.to(device), pos_w.to(device)


def _sqrt(t: torch.Tensor) -> torch.Tensor:
    """Square root of a non-negative tensor as ``t * rsqrt(t)``: torch's ``sqrt`` on the CPU can go through MKL's
    vector maths, whose own thread pool makes even a tiny call take milliseconds on a busy machine."""
    t = t.clamp_min(1e-30)
    return t * t.rsqrt()


def _random_signs(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return (torch.randint(0, 2, shape, generator=generator) * 2 - 1).float().to(device)


@EVASION_ATTACKS.register("square")
@dataclass(frozen=True, kw_only=True)
class Square(EvasionAttack):
    """The Square attack: score-based random search, L-inf or L2.

    Args:
        max_queries: queries per sample and restart, the initial one included.
        p_init: fraction of the input covered by a window at the start (0.05 in the paper for ImageNet L-inf,
            0.8 for MNIST); halved along the paper's schedule.
        restarts: independent runs; a restart runs only on the samples that earlier ones did not break, and each
            sample keeps the lowest-margin point of all its runs.
        probe: in an audit's chain, run as a probe: first on a seeded draw of the samples standing, sized so that
            a draw without a break bounds what the attack would break on the rest, and on the rest only where the
            draw gave a break (:func:`modelsec.audits.robustness.probe_size`). The audit turns it off when a
            pre-attack check fires. Called on its own, the attack runs on every sample it is given.
    """

    name = "square"
    requires = Capability.SCORES
    test_params: ClassVar[dict[str, Any]] = {"max_queries": 300}

    max_queries: int = 5000
    p_init: float = 0.8
    restarts: int = 1
    probe: bool = False

    def __post_init__(self) -> None:
        self.check_counts("max_queries", "restarts")
        if not (0.0 < self.p_init <= 1.0):
            raise self.invalid(f"p_init must lie in (0, 1], got {self.p_init}")

    def run(self, batch: AttackBatch) -> torch.Tensor:
        classifier, x, y = batch.classifier, batch.x, batch.y
        shape = image_shape(classifier.input_shape)
        xi = x.reshape(x.shape[0], *shape)
        with progress.stage() as later, resumable("square.restarts") as frame:
            if frame.restored is None:
                best = xi.clone()
                best_margin = torch.full((x.shape[0],), torch.inf, device=x.device)
                remaining = torch.arange(x.shape[0], device=x.device)
            else:
                saved = frame.restored_on(x.device)
                best, best_margin, remaining = saved["best"], saved["best_margin"], saved["remaining"]
            frame.capture(
                lambda: {"best": best, "best_margin": best_margin, "remaining": remaining},
                where=lambda r: f"restart {r + 1}/{self.restarts}",
            )
            for r in frame.steps(0, self.restarts):
                if remaining.numel() == 0:
                    break
                later.after = partial(_later, (self.restarts - r - 1) * self.max_queries)  # the time left
                xs, ys = xi.index_select(0, remaining), y.index_select(0, remaining)
                xa, margin = self._attack(dataclasses.replace(batch, x=xs, y=ys))
                old = best_margin.index_select(0, remaining)
                better = margin < old
                best.index_copy_(0, remaining, torch.where(per_sample(better, xa), xa, best.index_select(0, remaining)))
                best_margin.index_copy_(0, remaining, torch.where(better, margin, old))
                remaining = remaining.masked_select(margin >= 0)
        return best.reshape(x.shape)

    def _margin(self, classifier: Classifier, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Margin ``z_y - max_{j != y} z_j`` (negative = misclassified; set to -inf when the argmax is wrong so a
        tie broken against ``y`` counts as broken too) and whether the prediction is wrong. One query each."""
        with torch.no_grad():
            logits = classifier.logits(x.reshape(x.shape[0], *classifier.input_shape))
        cost.need(forward=x.shape[0])  # only ever asked about samples not broken yet
        margin = -attack_loss(logits, y, "margin").float()
        fooled = logits.argmax(dim=1) != y
        return torch.where(fooled, -torch.inf, margin), fooled

    def _attack(self, batch: AttackBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """One run on a batch of images ``x`` of shape ``(n, C, H, W)``: the best points and their margins."""
        classifier, x, y, generator = batch.classifier, batch.x, batch.y, batch.generator
        linf = batch.threat.norm == "linf"
        eps, bounds = batch.threat.eps, classifier.bounds
        h, w = x.shape[2], x.shape[3]
        if linf:  # the two vertex values of every pixel
            plus, minus = clip_to_bounds(x + eps, bounds), clip_to_bounds(x - eps, bounds)
        with resumable("square.queries") as frame:
            if frame.restored is None:
                xa = clip_to_bounds(
                    x + (self._linf_init(x, eps, generator) if linf else self._l2_init(x, eps, generator)), bounds
                )
                margin, fooled = self._margin(classifier, xa, y)
                active = torch.arange(x.shape[0], device=x.device).masked_select(~fooled)
            else:
                saved = frame.restored_on(x.device)
                xa, margin, active = saved["xa"], saved["margin"], saved["active"]
            frame.capture(
                lambda: {"xa": xa, "margin": margin, "active": active},
                where=lambda it: f"query {it + 1}/{self.max_queries}",
            )
            for it in frame.steps(1, self.max_queries):
                progress.standing(active.numel(), self.max_queries - it)  # the time left: one pass per query
                if active.numel() == 0:
                    break
                rows, cols = window_size(square_fraction(self.p_init, it, self.max_queries), h, w)
                cur = xa.index_select(0, active)
                if linf:
                    cand = self._linf_step(
                        plus.index_select(0, active), minus.index_select(0, active), cur, rows, cols, generator
                    )
                else:
                    cand = self._l2_step(x.index_select(0, active), cur, eps, bounds, rows, cols, generator)
                new_margin, new_fooled = self._margin(classifier, cand, y.index_select(0, active))
                old = margin.index_select(0, active)
                better = new_margin < old  # a fooled candidate has margin -inf: always better
                xa.index_copy_(0, active, torch.where(per_sample(better, cand), cand, cur))
                margin.index_copy_(0, active, torch.where(better, new_margin, old))
                active = active.masked_select(~new_fooled)
        return xa, margin

    # -- L-inf -------------------------------------------------------------------------------------

    @staticmethod
    def _linf_init(x: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
        n, c, _, w = x.shape
        return eps * _random_signs((n, c, 1, w), generator, x.device).expand_as(x)

    @staticmethod
    def _linf_step(
        plus: torch.Tensor, minus: torch.Tensor, cur: torch.Tensor, rows: int, cols: int, generator: torch.Generator
    ) -> torch.Tensor:
        """Set one random window of every channel to one of its vertex values, ``plus`` (``x + eps``, clipped) or
        ``minus`` (``x - eps``, clipped), by a random sign per channel. Where the draw would leave the input
        unchanged (the window already at those values), the signs are drawn again at the same window, as in the
        authors' implementation: with one channel that is the other sign, which changes every pixel of the window
        (the two vertex values differ wherever eps > 0); with more, up to ``_REDRAWS`` times."""
        n, c, h, w = cur.shape
        dev = cur.device
        mask = _window_mask(*_random_positions(n, h, w, rows, cols, generator, dev), rows, cols, h, w)
        up = _random_signs((n, c, 1, 1), generator, dev) > 0
        cand = torch.where(mask, torch.where(up, plus, minus), cur)
        same = (cand == cur).flatten(1).all(dim=1)
        for _ in range(1 if c == 1 else _REDRAWS):
            if not bool(same.any()):
                break
            again = ~up if c == 1 else _random_signs((n, c, 1, 1), generator, dev) > 0
            up = torch.where(same.view(n, 1, 1, 1), again, up)
            cand = torch.where(mask, torch.where(up, plus, minus), cur)
            same = (cand == cur).flatten(1).all(dim=1)
        return cand

    # -- L2 ----------------------------------------------------------------------------------------

    @staticmethod
    def _l2_init(x: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
        """A grid of bumps (tiles of a fifth of the side, a fifth of the features for a single row), each with
        a random sign per channel, scaled to L2 norm eps."""
        n, c, h, w = x.shape
        rows = max(h // 5, 1) if h > 1 else 1
        cols = max(w // 5, 1)
        bump = pseudo_gaussian(rows, cols).to(x.device)
        delta = torch.zeros_like(x)
        top0, left0 = (h - rows * (h // rows)) // 2, (w - cols * (w // cols)) // 2
        for top in range(top0, h - rows + 1, rows):
            for left in range(left0, w - cols + 1, cols):
                signs = _random_signs((n, c, 1, 1), generator, x.device)
                delta[:, :, top : top + rows, left : left + cols] = bump * signs
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        return delta * (eps / norms).view(n, 1, 1, 1)

    @staticmethod
    def _l2_step(
        x: torch.Tensor,
        cur: torch.Tensor,
        eps: float,
        bounds: tuple[float, float],
        rows: int,
        cols: int,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Algorithm 3 of the paper: empty a second window ``W2`` and put its energy (per channel), plus a share of
        the unused budget, into the first window ``W1`` as ``+-eta`` halves added to W1's normalised content."""
        n, c, h, w = x.shape
        dev = x.device
        delta = cur - x
        bump = split_bump(rows, cols)
        bumps = bump.expand(n, rows, cols)
        if rows == cols and rows > 1:  # the split runs along the rows or the columns, at random
            flip = (torch.rand(n, generator=generator) < 0.5).view(n, 1, 1)
            bumps = torch.where(flip, bump.t(), bump)
        bump1, mask1 = _place(bumps.to(dev), *_random_positions(n, h, w, rows, cols, generator, dev), h, w)
        _, mask2 = _place(bumps.to(dev), *_random_positions(n, h, w, rows, cols, generator, dev), h, w)
        signs = _random_signs((n, c, 1, 1), generator, dev)
        union = mask1 | mask2
        energy_union = (delta * union).pow(2).flatten(2).sum(dim=2)  # (n, C)
        unused = (eps**2 - delta.flatten(1).pow(2).sum(dim=1)).clamp_min(0.0)  # (n,)
        target = _sqrt(unused[:, None] / c + energy_union)  # per-channel norm of the new window
        old = delta * mask1
        old = old / old.flatten(2).norm(dim=2).clamp_min(1e-10)[:, :, None, None]
        new = bump1 * signs + old
        new = new * (target / new.flatten(2).norm(dim=2).clamp_min(1e-12))[:, :, None, None]
        delta = torch.where(mask1, new, torch.where(union, 0.0, delta))
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        return clip_to_bounds(x + delta * (eps / norms).view(n, 1, 1, 1), bounds)


def _later(passes: int, standing: int) -> float:
    """Progress estimate: the later restarts' ``passes`` per sample on the ``standing`` samples."""
    return float(passes * standing)
